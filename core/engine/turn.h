// Turn: one queued or running turn (or the prefill of a session created with a system
// prompt), from StartTurn to commit or rollback. Built by the Engine facade on a caller's
// thread, then owned by the scheduler thread.
#ifndef XLSTMD_CORE_ENGINE_TURN_H_
#define XLSTMD_CORE_ENGINE_TURN_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/engine/clock.h"
#include "core/engine/host_state.h"
#include "core/engine/session_meta.h"
#include "core/engine/turn_stream.h"
#include "core/sampling/sampler.h"
#include "core/sampling/sampling_config.h"
#include "core/sampling/stop_checker.h"
#include "core/tokenizer/incremental_detokenizer.h"

namespace xlstmd::core {

struct Turn {
  // kRestoring: the tiers are reading the committed state into `slot`.
  // kPersisting: the final state is being stored (Redis, then disk under sync); commit follows.
  enum class Phase { kQueued, kRestoring, kPrefill, kDecode, kPersisting };

  // ---- set by the submitting thread ----
  std::string session_id;
  std::string owner;
  std::vector<int32_t> input;
  bool is_message = false;
  bool adds_session_start = false;
  std::string request_id;
  uint64_t request_fingerprint = 0;  // of the request's body (idempotency: same id, same body)
  uint64_t base_version = 0;
  SamplingConfig sampling;
  int32_t max_tokens = 0;
  uint64_t seed = 0;
  std::shared_ptr<TurnStream> stream;
  // The metadata of the version the turn starts from, kept as a rewind point on commit (its
  // state is copied when the turn is admitted); nullopt when rewind is disabled.
  std::optional<RewindPoint> rewind_point;
  // A CreateSession with a system prompt: prefill only, then create the session.
  bool create_only = false;
  std::function<void(absl::StatusOr<SessionInfo>)> create_done;
  SteadyClock::time_point enqueued;
  // Set while the turn's stream is full (its client is not reading), cleared when it steps.
  std::optional<SteadyClock::time_point> stalled_since;

  // ---- scheduler thread ----
  uint64_t seq = 0;  // names the turn to I/O completions, which may outlive it
  Phase phase = Phase::kQueued;
  int32_t slot = -1;
  size_t prefilled = 0;
  std::optional<Sampler> sampler;
  std::optional<StopChecker> stop;
  std::optional<IncrementalDetokenizer> detok;
  std::vector<int32_t> generated;
  int32_t pending_token = -1;  // sampled, not yet fed to the model
  bool final_pending = false;  // pending_token ends the turn: feed it, then commit
  bool shared = false;         // the final state is committed in Redis
  // The final state as host floats, copied out of the slot once for the Redis and the disk
  // write of a commit (a 7B state is 128 MiB).
  HostState final_state;
  // Set when the sync write of the final state succeeded: the snapshot's digest.
  std::optional<uint64_t> durable_digest;
  FinishReason finish = FinishReason::kNone;
  SteadyClock::time_point admitted, prefill_done, first_token;

  CommitDelta Delta() const {
    CommitDelta d;
    d.tokens = input.size() + generated.size();
    d.adds_session_start = adds_session_start;
    d.is_message = is_message;
    d.request_id = request_id;
    d.request_fingerprint = request_fingerprint;
    return d;
  }
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_TURN_H_
