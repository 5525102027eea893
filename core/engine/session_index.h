// SessionIndex: every session this daemon knows — id, tenant, metadata, busy flag, last
// activity — and the only place that changes them. Each method is one atomic step under the
// index's mutex and returns copies, so callers never hold a pointer into the index.
//
// Busy: a session is busy while a turn (queued or running) or a session command that must
// not race with one (a Redis store of a new version, a delete waiting for Redis) owns it.
// Busy sessions are never erased, expired or rewound; ownership is taken with Claim* and given
// back with Release or Commit.
//
// Thread rules: thread-safe; every method may be called from any thread. No method blocks
// beyond the mutex or calls out of the index.
#ifndef XLSTMD_CORE_ENGINE_SESSION_INDEX_H_
#define XLSTMD_CORE_ENGINE_SESSION_INDEX_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/engine/tenant_quota.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/engine/clock.h"
#include "core/engine/session_meta.h"
#include "core/state/redis_store.h"

namespace xlstmd::core {

class SessionIndex {
 public:
  struct Limits {
    int32_t max_sessions = 10000;
    int32_t tenant_max_sessions = 0;  // per owner; 0 = no quota
    TenantQuotas tenant_quotas;       // per-owner overrides (max_sessions)
    // Sessions that fit in slots + the host budget when no tier below RAM exists; 0 = no cap.
    int32_t ram_cap = 0;
    // Disk tier budget (0 = unlimited) and the largest snapshot, for the budget check.
    uint64_t disk_budget_bytes = 0;
    uint64_t snapshot_bytes = 0;
  };

  SessionIndex(const Clock* clock, Limits limits) : clock_(clock), limits_(limits) {}

  // ---- lookups (copies) ----
  // NOT_FOUND for unknown sessions and for another owner's.
  absl::StatusOr<SessionInfo> Get(const std::string& owner, const std::string& id) const;
  std::optional<SessionMeta> Peek(const std::string& id) const;
  // The session's committed metadata as a snapshot header; nullopt when unknown.
  std::optional<SnapshotMeta> Snapshot(const std::string& id) const;
  // Sessions of `owner` ordered by id, starting after `after_id`, at most `limit`.
  std::vector<SessionInfo> List(const std::string& owner, const std::string& after_id,
                                int32_t limit) const;
  std::vector<std::string> IdleIds() const;
  bool Contains(const std::string& id) const;
  int32_t size() const;
  int64_t redis_sessions() const;

  // ---- creation ----
  // RESOURCE_EXHAUSTED when one more session would break a limit (pending creates count).
  absl::Status CanAdd(const std::string& owner) const;
  // A new session with a fresh random id at version 0, or (`from`) with `from`'s version,
  // token count and flags (fork, import). Checks CanAdd.
  absl::StatusOr<SessionInfo> Create(const std::string& owner, const SessionMeta* from = nullptr);
  // A create whose prefill is queued counts against the limits until it completes.
  absl::Status ReserveCreate(const std::string& owner);
  void CancelCreate(const std::string& owner);
  SessionInfo CompleteCreate(const std::string& owner, uint64_t token_count);
  // Registers a session under its own id (a snapshot found at startup).
  void Register(SessionMeta meta);

  // ---- ownership ----
  struct TurnClaim {
    std::string request_id;                  // "" = no idempotency key
    std::optional<uint64_t> expected_version;
    uint64_t request_fingerprint = 0;        // of the request body (0 = unknown)
  };
  // Marks the session busy for a turn. NOT_FOUND, ALREADY_EXISTS (the request id committed
  // with this body), INVALID_ARGUMENT (it committed with another body), ABORTED (busy, or not
  // at the expected version). Returns the metadata the turn starts from.
  absl::StatusOr<SessionMeta> ClaimForTurn(const std::string& owner, const std::string& id,
                                           const TurnClaim& claim);
  // The session's metadata when it is idle: NOT_FOUND, or ABORTED with `busy_message`.
  // `mark_busy` also claims it.
  absl::StatusOr<SessionMeta> CheckIdle(const std::string& owner, const std::string& id,
                                        const std::string& busy_message, bool mark_busy);
  // Claims a session by id whoever owns it (a store in flight); its snapshot header, or
  // nullopt when unknown.
  std::optional<SnapshotMeta> ClaimById(const std::string& id);
  void Release(const std::string& id);

  // ---- changes ----
  struct Committed {
    uint64_t version = 0;
    uint64_t history_tokens = 0;  // the token count before the commit
  };
  // Applies a turn's commit and releases the session; nullopt when it is gone (a bug).
  std::optional<Committed> Commit(const std::string& id, const CommitDelta& delta);
  // The snapshot header `id` will have once `delta` commits, and the Redis version check for
  // writing it; nullopt when unknown.
  std::optional<std::pair<SnapshotMeta, ExpectedVersion>> PreviewCommit(const std::string& id,
                                                                        const CommitDelta& delta);
  // Moves the session back to `point`; nullopt when unknown.
  std::optional<SessionInfo> Rewind(const std::string& id, const RewindPoint& point);
  // Makes a snapshot stored by another daemon the session's metadata (registering the session
  // if unknown; CanAdd applies then). OK without a change when the session is another
  // owner's, busy, or already at `generation`.
  absl::Status Adopt(const std::string& owner, const std::string& id, const SnapshotMeta& meta,
                     const std::string& generation, bool* changed);
  void SetRedisGeneration(const std::string& id, std::string generation);
  // Redis no longer holds `id` at `generation`: without a disk tier the session is erased
  // (true), with one it is kept and only the Redis mark is cleared. No change when the
  // session moved on meanwhile.
  bool ForgetRedisCopy(const std::string& id, const std::string& generation, bool keep);
  bool Erase(const std::string& id);
  // Erases idle sessions inactive for longer than `ttl`; returns their ids.
  std::vector<std::string> ExpireIdle(SteadyClock::duration ttl);

 private:
  struct Entry {
    SessionMeta meta;
    SteadyClock::time_point last_active;
  };
  absl::Status CanAddLocked(const std::string& owner) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void UncountLocked(const std::string& owner) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Entry* FindLocked(const std::string& owner, const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Entry& InsertLocked(const std::string& owner) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetRedisGenerationLocked(SessionMeta& m, std::string generation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseLocked(std::map<std::string, Entry>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock* const clock_;
  const Limits limits_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> sessions_ ABSL_GUARDED_BY(mu_);  // ordered: List pages by id
  int32_t pending_creates_ ABSL_GUARDED_BY(mu_) = 0;
  // Per owner: sessions held plus creates in flight (tenant_max_sessions).
  std::map<std::string, int64_t> owner_sessions_ ABSL_GUARDED_BY(mu_);
  int64_t redis_sessions_ ABSL_GUARDED_BY(mu_) = 0;  // sessions with a redis_generation
};

// Errors shared by the engine's parts, so each is worded once.
absl::Status SessionNotFound(const std::string& id);
absl::Status ServerUnavailable();

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_SESSION_INDEX_H_
