// Engine: sessions, turns and the continuous-batching scheduler, transport-agnostic. A thin
// facade over the engine's parts (docs/architecture.md): the session index (session_index.h),
// the slot pool (slot_pool.h), the state tiers (state_tiers.h) and the scheduler
// (scheduler.h), which owns the one engine thread that runs the model.
//
// Session state. A session's committed state is its recurrent state after exactly the tokens
// it has reported: each committed turn's input ids followed by its generated ids, including
// the final one (a stop token too: it is fed to the model before the turn commits). A turn
// works on a copy in a separate slot; commit makes that slot the committed one and bumps the
// version; cancel or failure frees it, so the session stays exactly at its previous version.
//
// Threading: every public method is thread-safe. StartTurn/GetSession/ListSessions answer on
// the caller's thread; the session commands complete on the engine thread (or an I/O thread
// where noted) and report through `done`, which must be quick and must not call back into the
// engine. No method blocks on I/O except GetSession with a Redis tier (a lookup bounded by
// redis_timeout_ms) and FlushToDisk/WaitIdle, which wait by design.
#ifndef XLSTMD_CORE_ENGINE_ENGINE_H_
#define XLSTMD_CORE_ENGINE_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/engine/clock.h"
#include "core/engine/tenant_quota.h"
#include "core/engine/engine_observer.h"
#include "core/engine/session_meta.h"
#include "core/engine/state_tiers.h"
#include "core/engine/turn_stream.h"
#include "core/model/xlstm_model.h"
#include "core/sampling/sampling_config.h"
#include "core/tokenizer/chat_template.h"
#include "core/tokenizer/tokenizer.h"

namespace xlstmd::core {

struct EngineOptions {
  int32_t resident_slots = 64;         // state slots in backend memory
  int32_t max_batch = 64;              // turns running at once (each needs one slot)
  int32_t prefill_token_budget = 512;  // prompt tokens prefilled per iteration (>= 1 piece)
  int32_t prefill_piece = 128;         // prompts are prefilled in pieces of this many tokens
  int32_t prefill_chunk_size = 64;     // chunkwise mLSTM chunk inside a piece
  int32_t queue_depth = 256;           // turns waiting for a slot
  // Per tenant: turns running at once and turns waiting (0 = no quota). Admission is fair
  // across tenants either way (Scheduler::TakeWork).
  int32_t tenant_max_running = 0;
  int32_t tenant_max_queued = 0;
  int32_t tenant_max_sessions = 0;  // sessions one tenant may hold; 0 = no quota
  TenantQuotas tenant_quotas;       // per-tenant overrides (the API-key file)
  int32_t max_prompt_tokens = 8192;    // input ids per turn, template and BOS included
  int32_t max_sessions = 10000;
  int64_t idle_ttl_ms = 0;             // sessions idle longer are deleted; 0 = never
  int32_t stream_buffer_events = 64;   // per-turn events buffered for a slow reader
  // A turn running longer (queue time included) is rolled back with DEADLINE_EXCEEDED, so a
  // client that stops reading without cancelling cannot hold a slot forever. 0 = no limit.
  int64_t max_turn_ms = 600000;
  // A decoding turn whose client has not read for this long (its stream buffer full) is
  // rolled back with RESOURCE_EXHAUSTED and releases its slot, so unread streams cannot hold
  // every slot. 0 = never.
  int64_t stalled_stream_ms = 30000;
  int32_t max_request_id_bytes = 128;
  SamplingLimits sampling;

  // ---- state tiers (docs/state-tiers.md) ----
  // Disk tier directory ("" = none): snapshots of committed states, indexed at start and
  // loaded lazily, so sessions survive a restart.
  std::string state_dir;
  using Durability = core::Durability;  // state_tiers.h
  Durability durability = Durability::kNone;
  // Idle committed states held in host RAM after eviction from a slot. Over the budget they
  // spill to the disk tier; without one, the session count is capped so they always fit.
  int64_t host_state_bytes = int64_t{4} << 30;
  int64_t disk_state_bytes = 0;  // 0 = unlimited; new sessions are refused beyond it
  // Page-locked host memory for state copies on a device backend (host_state.h): the host
  // tier's states, commit captures and exports up to this many bytes, pageable beyond it.
  // 0 = never pin. Ignored on the CPU, where pinning gains nothing.
  int64_t pinned_state_bytes = int64_t{4} << 30;
  int32_t io_threads = 2;
  // Earlier committed versions kept per session for RewindSession (host RAM, counted in the
  // host budget and dropped first under pressure; not persisted). 0 = rewind disabled.
  int32_t keep_turn_checkpoints = 0;
  // Shared Redis tier ("" = none; redis://[[user]:password@]host[:port][/db] or
  // unix:///path, docs/redis-tier.md). Every commit (turns, creates, forks, imports,
  // rewinds) is written there before it is acknowledged, with a compare-and-set on the
  // session version, so daemons serving the same model continue each other's sessions and
  // two turns racing on one session cannot both commit (the loser is ABORTED). Without a
  // disk tier it is also where idle states spill.
  std::string redis_url;
  int64_t redis_timeout_ms = 2000;  // connect and per-I/O timeout
  int32_t redis_connections = 4;    // pool size shared by the I/O threads

  // Metrics hooks (engine_observer.h); nullptr = none. Not owned; must outlive the engine.
  EngineObserver* observer = nullptr;
  // Where the engine reads time (clock.h); nullptr = the real clocks. Not owned; must outlive
  // the engine. Tests pass a FakeClock and advance it instead of sleeping.
  Clock* clock = nullptr;
};


struct TurnRequest {
  std::string session_id;
  std::string owner;  // tenant; a session of another owner is NOT_FOUND
  // Exactly one input: `message` (wrapped by the chat template; the session-start ids, BOS
  // and default system prompt, go before the first message of a session created without a
  // system prompt) or `tokens` (appended verbatim).
  std::optional<std::string> message;
  std::vector<int32_t> tokens;
  SamplingConfig sampling;  // wire defaults already mapped (top_p/penalty 0 -> 1)
  std::optional<uint64_t> expected_version;
  std::string request_id;  // "" = no idempotency key
  // With a Redis tier the session is looked up there first, on the I/O pool: a lookup that
  // ends after this deadline ends the turn with DEADLINE_EXCEEDED.
  absl::Time deadline = absl::InfiniteFuture();
};

struct EngineStats {
  int32_t queued_turns = 0;
  int32_t running_turns = 0;
  int32_t sessions = 0;
  int32_t resident_sessions = 0;
  int32_t host_sessions = 0;
  int64_t host_state_bytes = 0;
  int64_t disk_sessions = 0;
  uint64_t disk_state_bytes = 0;
  int64_t snapshot_writes = 0;
  int64_t snapshot_write_failures = 0;
  int64_t restores_from_disk = 0;
  int64_t quarantined_snapshots = 0;
  int64_t redis_writes = 0;          // snapshots committed to the shared Redis tier
  int64_t redis_write_conflicts = 0; // refused by the version check (turns rolled back)
  int64_t redis_failures = 0;        // Redis unreachable or refusing a call
  int64_t restores_from_redis = 0;   // states read back from Redis (spill or another daemon)
  // Host buffers of states (host_state.h): page-locked bytes held (0 on the CPU), and buffers
  // taken from pageable memory because --pinned-state-bytes was reached or pinning failed.
  int64_t pinned_state_bytes = 0;
  int64_t pinned_state_fallbacks = 0;
  int64_t steps = 0;
  int64_t ms_since_engine_loop = 0;  // see Scheduler::SinceLastLoop
  bool device_failed = false;        // the backend failed; no turn runs again
  int64_t generated_tokens = 0;
  // Redis tier (docs/redis-tier.md): the sessions this daemon knows to be stored there (what
  // other daemons stored is not counted); /metrics reports tier="redis" only when enabled.
  bool redis_enabled = false;
  int64_t redis_sessions = 0;
  uint64_t redis_state_bytes = 0;
};

class Engine {
 public:
  // Takes the loaded model (its slot arena is (re)allocated here) and tokenizer. Starts the
  // engine thread.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<XlstmModel> model,
                                                        std::unique_ptr<Tokenizer> tokenizer,
                                                        ChatTemplate chat_template,
                                                        const EngineOptions& options);
  ~Engine();  // cancels everything and joins the engine thread

  // Starts one turn. Never blocks on I/O. Fails fast, on the caller's thread, with: NOT_FOUND (unknown session or
  // another owner's), ABORTED (a turn is already running on the session; expected_version
  // differs), ALREADY_EXISTS (request_id already committed on the session with this body:
  // message names the version), INVALID_ARGUMENT (no input, empty tokens, a blank message,
  // invalid UTF-8, id outside the vocabulary, bad sampling params, request_id too long, not a
  // UUID or committed with another body, prompt longer than max_prompt_tokens, max_tokens
  // above the limit; base::ErrorField names the field), RESOURCE_EXHAUSTED (queue full: a
  // base::CapacityError), UNAVAILABLE (draining).
  // On success the session is marked busy and the returned stream will deliver the turn's
  // events; `wakeup` is installed on it before any event can be pushed. With a Redis tier the
  // session checks come after the Redis lookup: their errors then close the stream instead
  // (no event is pushed first).
  absl::StatusOr<std::shared_ptr<TurnStream>> StartTurn(TurnRequest request,
                                                        std::function<void()> wakeup);

  // Creates a session at version 0 (prefilling the session-start ids when `system_prompt`
  // is non-empty). RESOURCE_EXHAUSTED at max_sessions, INVALID_ARGUMENT for bad UTF-8 or a
  // prompt over max_prompt_tokens, UNAVAILABLE while draining.
  void CreateSession(std::string owner, std::string system_prompt,
                     std::function<void(absl::StatusOr<SessionInfo>)> done);
  // A new session with a copy of the committed state, version and token count of `id`.
  void ForkSession(std::string owner, std::string id,
                   std::function<void(absl::StatusOr<SessionInfo>)> done);
  // A new session from the kept earlier version `version` of `id` (keep_turn_checkpoints),
  // leaving `id` as it is: its state, version, token count and template flags are that
  // version's. At the current version it is ForkSession. FAILED_PRECONDITION when
  // `version` is not kept (the message lists the kept ones).
  void ForkSessionAt(std::string owner, std::string id, uint64_t version,
                     std::function<void(absl::StatusOr<SessionInfo>)> done);
  // ABORTED while a turn runs on it; NOT_FOUND when unknown or another owner's.
  void DeleteSession(std::string owner, std::string id, std::function<void(absl::Status)> done);

  // The committed state of a session as a snapshot (docs/snapshot-format.md), for a client
  // that keeps its own state. ABORTED while a turn runs (the committed state is what a
  // client wants, and a running turn is about to replace it).
  void ExportSession(std::string owner, std::string id,
                     std::function<void(absl::StatusOr<std::string>)> done);
  // A new session (new id, owned by `owner`) from an exported snapshot: version, token count
  // and template flags are kept. FAILED_PRECONDITION for another model or layout,
  // INVALID_ARGUMENT for a corrupt or truncated snapshot, RESOURCE_EXHAUSTED over limits.
  void ImportSession(std::string owner, std::string snapshot,
                     std::function<void(absl::StatusOr<SessionInfo>)> done);
  // Restores an earlier committed version kept as a checkpoint (keep_turn_checkpoints): the
  // session's state, version, token count and template flags become that version's, newer
  // checkpoints and request ids are forgotten. Regenerating or editing the last message
  // costs only the new turn. FAILED_PRECONDITION when `version` is not kept (the message
  // lists the kept ones), ABORTED while a turn runs, NOT_FOUND for unknown sessions.
  void RewindSession(std::string owner, std::string id, uint64_t version,
                     std::function<void(absl::StatusOr<SessionInfo>)> done);

  // The largest snapshot this model can produce (an import limit for transports).
  uint64_t max_snapshot_bytes() const;

  // Blocks (bounded) on the Redis lookup when a Redis tier is configured: transports use
  // LookupSession, which answers `done` on the engine thread (or an I/O thread) instead.
  absl::StatusOr<SessionInfo> GetSession(const std::string& owner, const std::string& id) const;
  void LookupSession(std::string owner, std::string id,
                     std::function<void(absl::StatusOr<SessionInfo>)> done) const;
  // Sessions of `owner` ordered by id, starting after `after_id`, at most `limit`.
  std::vector<SessionInfo> ListSessions(const std::string& owner, const std::string& after_id,
                                        int32_t limit) const;

  // Drain: after BeginDrain new turns and sessions are UNAVAILABLE; running and queued turns
  // go on. WaitIdle blocks until no turn runs or is queued, or the timeout passes (false).
  // CancelAll rolls back every turn with `reason`.
  void BeginDrain();
  bool draining() const;
  bool WaitIdle(int64_t timeout_ms);
  void CancelAll(absl::Status reason);
  // Writes every committed state not yet on disk to the disk tier (drain: a restart loses
  // nothing). Returns when done or after `timeout_ms` (false). OK-true without a disk tier.
  bool FlushToDisk(int64_t timeout_ms);
  // Disk-tier writes started and not finished: after a FlushToDisk that timed out, the
  // sessions it did not get written.
  int64_t DiskWritesInFlight() const;

  const XlstmModel& model() const;
  const Tokenizer& tokenizer() const;
  const ChatTemplate& chat_template() const;
  const EngineOptions& options() const;
  EngineStats stats() const;

  class Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_ENGINE_H_
