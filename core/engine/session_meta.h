// SessionMeta: one session's metadata (the committed version, token count, template flags and
// the request ids remembered for idempotency) and the only code that changes it: created from
// a snapshot, written to one, advanced by a commit, moved back by a rewind. Plain values: the
// session index guards them with its mutex.
#ifndef XLSTMD_CORE_ENGINE_SESSION_META_H_
#define XLSTMD_CORE_ENGINE_SESSION_META_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "core/engine/host_state.h"
#include "core/state/snapshot.h"

namespace xlstmd::core {

// A copy of a session's metadata, as the engine API returns it.
struct SessionInfo {
  std::string session_id;
  std::string owner;
  uint64_t version = 0;
  uint64_t token_count = 0;
  int64_t created_unix_ms = 0;
  int64_t updated_unix_ms = 0;
  bool turn_running = false;
};

// Request ids remembered per session for idempotency (oldest forgotten first); a snapshot
// carries them so idempotency survives a restart.
constexpr size_t kRequestIdsPerSession = kSnapshotMaxRequestIds;

// SnapshotMeta::flags bits.
constexpr uint32_t kFlagSessionStartDone = 1u << 0;
constexpr uint32_t kFlagReplyOpen = 1u << 1;

// What committing one turn adds to a session.
struct CommitDelta {
  uint64_t tokens = 0;              // input ids + generated ids (a final stop id included)
  bool adds_session_start = false;  // the turn carried BOS / the default system prompt
  bool is_message = false;          // a chat message turn: the reply is left open
  std::string request_id;           // "" = none
  uint64_t request_fingerprint = 0;  // of the request body; 0 = unknown
};

// A committed version kept for RewindSession: the metadata that goes with it and its state
// (host floats; null until the turn that leaves it has copied it out of the slot).
struct RewindPoint {
  uint64_t version = 0;
  uint64_t token_count = 0;
  bool session_start_done = false;
  bool reply_open = false;
  HostState state;
};

struct SessionMeta {
  SessionInfo info;
  bool session_start_done = false;  // BOS/default system prompt already appended
  bool reply_open = false;          // last committed turn was a message turn
  std::deque<std::string> request_order;  // oldest first, at most kRequestIdsPerSession
  absl::flat_hash_map<std::string, uint64_t> request_versions;
  // The body fingerprint each remembered id committed with (absent: unknown, e.g. read from
  // a snapshot written before fingerprints were kept).
  absl::flat_hash_map<std::string, uint64_t> request_fingerprints;
  // Generation of the Redis write this daemon last saw for the session ("" = Redis is not
  // known to hold it). A different generation in Redis means another daemon changed it.
  std::string redis_generation;

  static SessionMeta FromSnapshot(const SnapshotMeta& snapshot);
  SnapshotMeta ToSnapshot() const;

  // Version + 1, the tokens, the flags and the request id of one committed turn.
  void ApplyCommit(const CommitDelta& delta, int64_t now_unix_ms);
  // Back to `point` (an earlier version): requests committed after it are forgotten, so they
  // may run again.
  void RewindTo(const RewindPoint& point, int64_t now_unix_ms);
  // The metadata part of a rewind point for the current version.
  RewindPoint ToRewindPoint() const;

  // The version `request_id` committed as, if it is remembered.
  std::optional<uint64_t> CommittedVersionOf(const std::string& request_id) const;
  // The body fingerprint `request_id` committed with, if it is remembered and was recorded.
  std::optional<uint64_t> FingerprintOf(const std::string& request_id) const;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_SESSION_META_H_
