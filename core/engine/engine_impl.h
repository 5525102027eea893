// Engine::Impl, shared by the engine's translation units: engine.cc (the caller-thread
// API and session commands), engine_scheduler.cc (the engine thread: admission, prefill,
// decode, commit) and engine_tiers.cc (slots, host budget, snapshots on disk). Internal:
// only core/engine/*.cc include it.
#ifndef XLSTMD_CORE_ENGINE_ENGINE_IMPL_H_
#define XLSTMD_CORE_ENGINE_ENGINE_IMPL_H_

#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <fstream>
#include <limits>
#include <map>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "core/base/check.h"
#include "core/base/log_id.h"
#include "core/base/status_macros.h"
#include "core/engine/engine.h"
#include "core/engine/io_pool.h"
#include "core/sampling/stop_checker.h"
#include "core/state/redis_store.h"
#include "core/state/snapshot.h"
#include "core/state/snapshot_store.h"
#include "core/tokenizer/incremental_detokenizer.h"
#include "core/base/utf8.h"
#include "spdlog/spdlog.h"

namespace xlstmd::core {

using SteadyClock = std::chrono::steady_clock;

inline int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline double MsBetween(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Wakes the engine thread. Shared with stream callbacks so that a transport that outlives
// the engine (a late Cancel during shutdown) signals a live object, never a freed one.
class Signal {
 public:
  void Notify() {
    absl::MutexLock lock(&mu_);
    dirty_ = true;
    cv_.SignalAll();
  }
  // Waits until notified or `timeout` passes; consumes the notification.
  void Wait(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    if (!dirty_) cv_.WaitWithTimeout(&mu_, timeout);
    dirty_ = false;
  }

 private:
  absl::Mutex mu_;
  absl::CondVar cv_;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
};

// Request ids remembered per session for idempotency (oldest forgotten first); a snapshot
// carries them so idempotency survives a restart.
constexpr size_t kRequestIdsPerSession = kSnapshotMaxRequestIds;

// SnapshotMeta::flags bits.
constexpr uint32_t kFlagSessionStartDone = 1u << 0;
constexpr uint32_t kFlagReplyOpen = 1u << 1;

// Metadata of one session, guarded by Impl::mu_.
struct SessionMeta {
  SessionInfo info;
  bool session_start_done = false;  // BOS/default system prompt already appended
  bool reply_open = false;          // last committed turn was a message turn
  std::deque<std::string> request_order;
  // Generation of the Redis write this daemon last saw for the session ("" = Redis is not
  // known to hold it). A different generation in Redis means another daemon changed it.
  std::string redis_generation;
  absl::flat_hash_map<std::string, uint64_t> request_versions;
};

// Where a session's committed state is; engine thread only. A session absent from the map
// has the zero state. Tiers, fastest first: a resident slot; a host copy; the snapshot on
// disk when it was written from this very state (disk_gen == gen). A state leaves a faster
// tier only once a slower one holds it, so a committed turn is never lost to an eviction.
// A committed version kept for RewindSession.
struct Checkpoint {
  uint64_t version = 0;
  uint64_t token_count = 0;
  bool session_start_done = false;
  bool reply_open = false;
  std::shared_ptr<const std::vector<float>> state;
};

struct SessionState {
  std::deque<Checkpoint> checkpoints;              // oldest first, at most keep_turn_checkpoints
  uint64_t version = 0;                            // the committed version this state is
  int32_t slot = -1;                               // resident slot, or -1
  std::shared_ptr<const std::vector<float>> host;  // immutable: I/O jobs share it
  uint64_t last_used = 0;                          // engine tick, for LRU eviction
  int64_t disk_version = -1;                       // version of the snapshot file, -1 = none
  // Every change of the committed state (commit, rewind, import) bumps `gen`; a write
  // records the gen it wrote. Versions cannot serve: after a rewind a version number
  // comes back with different contents.
  uint64_t gen = 1;
  uint64_t disk_gen = 0;   // gen of the state in the file, 0 = none
  uint64_t redis_gen = 0;  // gen of the state Redis holds, 0 = none
  // False while the committed state is the zero state and held nowhere (a new session):
  // a turn then starts from a reset slot.
  bool nonzero = false;
  bool write_in_flight = false;  // one write per session at a time keeps the file monotonic
  bool write_again = false;      // committed (or asked to flush) while writing
};

struct Turn {
  // kRestoring: waiting for the I/O pool to read the committed state from disk into `slot`.
  // kPersisting (durability sync): the final state is being written; commit follows.
  enum class Phase { kQueued, kRestoring, kPrefill, kDecode, kPersisting };
  uint64_t seq = 0;  // names the turn to I/O completions, which may outlive it
  // Identity and input (set by the submitting thread, then owned by the engine thread).
  std::string session_id;
  std::string owner;
  std::vector<int32_t> input;
  bool is_message = false;
  bool adds_session_start = false;
  std::string request_id;
  uint64_t base_version = 0;
  SamplingConfig sampling;
  int32_t max_tokens = 0;
  uint64_t seed = 0;
  std::shared_ptr<TurnStream> stream;
  // A CreateSession with a system prompt: prefill only, then create the session.
  bool create_only = false;
  std::function<void(absl::StatusOr<SessionInfo>)> create_done;
  // Engine-thread state.
  Phase phase = Phase::kQueued;
  int32_t slot = -1;
  size_t prefilled = 0;
  std::optional<Sampler> sampler;
  std::optional<StopChecker> stop;
  std::optional<IncrementalDetokenizer> detok;
  std::vector<int32_t> generated;
  std::optional<Checkpoint> checkpoint;  // the state the turn started from (rewind enabled)
  int32_t pending_token = -1;            // sampled, not yet fed to the model
  bool final_pending = false;            // pending_token ends the turn: feed it, then commit
  bool shared = false;                   // the final state is committed in Redis
  FinishReason finish = FinishReason::kNone;
  SteadyClock::time_point enqueued, admitted, prefill_done, first_token;
};

class Engine::Impl {
 public:
  Impl(std::unique_ptr<XlstmModel> model, std::unique_ptr<Tokenizer> tokenizer,
       ChatTemplate chat_template, const EngineOptions& options)
      : model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        template_(std::move(chat_template)),
        options_(options),
        signal_(std::make_shared<Signal>()) {}

  ~Impl() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    signal_->Notify();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Start();

  // Startup: registers every valid snapshot's session from its header; the states load
  // lazily on their first turn. Foreign or corrupt files are quarantined, never loaded.
  absl::Status IndexStateDir();

  // The header of a session's snapshot file, reading only as much as the header needs;
  // DATA_LOSS when the file's size (`file_bytes`) is not the one the header states.
  absl::StatusOr<SnapshotMeta> ReadSnapshotHead(const std::string& id, uint64_t file_bytes);

  // Reads and checks a session's snapshot file (it must hold `version`) into `state` (I/O
  // threads). A corrupt or foreign file is quarantined. Errors are DATA_LOSS with a message
  // fit for the client (no server paths; the log has the details).
  absl::Status ReadStoredState(const std::string& id, uint64_t version, absl::Span<float> state,
                               bool from_redis = false);

  // ---------------- caller-thread API ----------------

  absl::StatusOr<std::shared_ptr<TurnStream>> StartTurn(TurnRequest req,
                                                        std::function<void()> wakeup);

  void CreateSession(std::string owner, std::string system_prompt,
                     std::function<void(absl::StatusOr<SessionInfo>)> done);

  // Registers a session without a prefill (returns its info), or queues the prefill of its
  // session-start ids (returns an empty info; `done` is then called on completion).
  absl::StatusOr<SessionInfo> EnqueueCreate(const std::string& owner, std::vector<int32_t> ids,
                                            std::function<void(absl::StatusOr<SessionInfo>)>& done);

  void ForkSession(std::string owner, std::string id,
                   std::function<void(absl::StatusOr<SessionInfo>)> done);

  void ForkFromDisk(const std::string& src, SessionInfo info,
                    std::function<void(absl::StatusOr<SessionInfo>)> done);

  void RewindSession(std::string owner, std::string id, uint64_t version,
                     std::function<void(absl::StatusOr<SessionInfo>)> done);

  void ExportSession(std::string owner, std::string id,
                     std::function<void(absl::StatusOr<std::string>)> done);

  void ImportSession(std::string owner, std::string snapshot,
                     std::function<void(absl::StatusOr<SessionInfo>)> done);

  bool FlushToDisk(int64_t timeout_ms);

  uint64_t max_snapshot_bytes() const { return snapshot_bytes_; }

  void DeleteSession(std::string owner, std::string id, std::function<void(absl::Status)> done);
  // Engine thread: removes the session from this server (metadata, state, file), then
  // answers `done` (once the file is gone).
  void EraseSession(const std::string& id, std::function<void(absl::Status)> done);

  absl::StatusOr<SessionInfo> GetSession(const std::string& owner, const std::string& id);

  std::vector<SessionInfo> ListSessions(const std::string& owner, const std::string& after_id,
                                        int32_t limit) const;

  void BeginDrain();
  bool draining() const;
  bool WaitIdle(int64_t timeout_ms);
  void CancelAll(absl::Status reason);

  EngineStats stats() const;

  const XlstmModel& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ChatTemplate& chat_template() const { return template_; }
  const EngineOptions& options() const { return options_; }

 private:
  static absl::Status Unavailable();
  static absl::Status SessionNotFound(const std::string& id);
  absl::Status PromptTooLong(size_t n) const;
  absl::Status CheckIdsInVocab(const std::vector<int32_t>& ids) const;
  size_t FloatsPerSlot() const { return model_->state_layout().bytes_per_slot() / sizeof(float); }

  absl::Status CanAddSessionLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  SessionMeta* FindLocked(const std::string& owner, const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SessionMeta& InsertSessionLocked(const std::string& owner) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void Command(std::function<void()> fn);

  // ---------------- engine thread ----------------

  void Loop();

  void UpdateRunning();

  // Runs `fn` on the engine thread at its next iteration (from an I/O thread).
  void PostCompletion(std::function<void()> fn);

  static bool Durable(const SessionState& st);

  void SetHost(SessionState& st, std::shared_ptr<const std::vector<float>> host);

  // Host copies over the budget leave RAM: a durable one is dropped (its snapshot is on
  // disk); another is written to disk first and dropped when that completes.
  void EnforceHostBudget();

  // A free slot, evicting the least recently used resident committed state if needed: to
  // nothing when its snapshot is on disk, else to host RAM within the budget. -1 when no
  // slot can be freed until a spill write completes (the caller retries later).
  int32_t TakeSlot();

  void FreeSlot(int32_t slot);

  void DropState(const std::string& id);

  void AdjustResident(int32_t delta);

  // The session's snapshot metadata as committed (or, for a sync commit, as it will be).
  SnapshotMeta MetaLocked(const SessionMeta& m) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  // The committed state of `st` as host floats (a copy of the slot, the shared host copy, or
  // zeros), or null when it is only on disk.
  std::shared_ptr<const std::vector<float>> StateCopy(const SessionState& st);

  // Writes the session's committed state to the disk tier in the background, one write per
  // session at a time (a newer commit during a write is written after it).
  void StartWrite(const std::string& id);

  // Encodes and writes on an I/O thread; `done(version, status)` runs on the engine thread.
  void SubmitWrite(SnapshotMeta meta, std::shared_ptr<const std::vector<float>> state,
                   std::function<void(uint64_t, absl::Status)> done);

  void OnWriteDone(const std::string& id, uint64_t version, uint64_t gen, absl::Status status);

  // Runs `done` on the engine thread once the session's current committed state is in the
  // disk tier: at once when it is, else after a write started here; with the write's error
  // when it fails, NOT_FOUND when the session is deleted first.
  void WhenDurable(const std::string& id, std::function<void(absl::Status)> done);
  // Answers the waiters of `id` that a write (its result `write_status`) satisfied.
  void NotifyDurable(const std::string& id, const absl::Status& write_status);
  // Answers a session operation (create, fork, import, rewind) per the durability mode: under
  // sync only once the state is on disk; if that fails, a `new_session` is removed again and
  // the caller gets UNAVAILABLE.
  void AckWhenDurable(const std::string& id, SessionInfo info, bool new_session,
                      std::function<void(absl::StatusOr<SessionInfo>)> done);

  // ---- shared Redis tier (engine_redis.cc) ----
  absl::Status ConnectRedis();
  // Caller thread, before any operation on `id` by `owner`: brings the local view of the
  // session up to date with Redis (adopting a session this daemon does not know, or one
  // another daemon advanced; forgetting one deleted there). OK when there is nothing to do
  // or the operation should proceed on what is local; DATA_LOSS or UNAVAILABLE otherwise.
  absl::Status RefreshFromRedis(const std::string& owner, const std::string& id);
  // Engine thread: makes an adopted snapshot (metadata and state) the session's committed
  // one, registering the session if this daemon did not know it.
  absl::Status InstallAdopted(const std::string& owner, const std::string& id,
                              const SnapshotMeta& meta, std::string generation,
                              std::shared_ptr<const std::vector<float>> state);
  // Engine thread: Redis no longer holds `id` (last seen at `generation`).
  void ForgetMissingFromRedis(const std::string& id, const std::string& generation);
  // Runs `fn` on the engine thread and waits for its result (caller threads only).
  absl::Status RunOnEngine(std::function<absl::Status()> fn);
  // Logs a Redis failure and returns the client's UNAVAILABLE (without Redis' address).
  static absl::Status RedisUnavailable(const std::string& id, const absl::Status& cause);
  // A state Redis holds may leave host RAM when there is no disk tier to spill to.
  bool InRedis(const SessionState& st) const {
    return redis_ != nullptr && dir_ == nullptr && st.redis_gen == st.gen;
  }
  // Writes the session's committed state to Redis (`expected` is the version check), then
  // acknowledges through AckWhenDurable. A new session that cannot be stored is removed.
  void AckWhenStored(const std::string& id, SessionInfo info, bool new_session,
                     ExpectedVersion expected,
                     std::function<void(absl::StatusOr<SessionInfo>)> done);
  // Records that Redis holds `generation` of the session, and (before an erase) that the
  // session is gone, keeping the stats' count of Redis-held sessions exact without a scan.
  void SetRedisGenerationLocked(SessionMeta& m, std::string generation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (m.redis_generation.empty() && !generation.empty()) ++redis_sessions_;
    m.redis_generation = std::move(generation);
  }
  void ForgetSessionLocked(const SessionMeta& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!m.redis_generation.empty()) --redis_sessions_;
  }
  // The expected-version check for a session's next Redis write (mu_ held).
  ExpectedVersion RedisExpectedLocked(const SessionMeta& m) const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return m.redis_generation.empty() ? ExpectedVersion::Absent()
                                      : ExpectedVersion::Is(m.info.version);
  }
  // Turn commit: writes the final state to Redis with the version check; the turn commits
  // (or goes on to its disk write) when Redis has it, and rolls back when it does not.
  void StartSharedCommit(Turn& t);
  // A finished turn's snapshot metadata as it will be once committed (and, for Redis, the
  // version check of its write); moves the turn to kPersisting. nullopt after rolling it back
  // when its session is gone.
  std::optional<SnapshotMeta> BeginPersisting(Turn& t, ExpectedVersion* expected);
  void OnSharedCommit(uint64_t seq, absl::StatusOr<RedisManifest> written);
  // Removes the session from Redis (blocking: I/O threads).
  absl::Status DeleteShared(const std::string& id);
  // Encodes and stores a snapshot in Redis with the version check (blocking: I/O threads).
  absl::StatusOr<RedisManifest> PutSnapshot(const SnapshotMeta& meta,
                                            const ExpectedVersion& expected,
                                            const std::vector<float>& state);

  // Takes a slot and loads the committed state into it; false when no slot is available yet.
  bool Admit(std::unique_ptr<Turn>& t);

  // Reads the snapshot on an I/O thread; the turn continues when it is in the slot.
  void StartRestore(Turn& t, bool from_redis);

  void OnRestored(uint64_t seq, std::shared_ptr<std::vector<float>> state, absl::Status status,
                  double ms, bool from_redis);

  Turn* FindActive(uint64_t seq);

  // The turn's state is in its slot: set up sampling and streaming and start prefilling.
  void BeginRunning(Turn& turn);

  void DropCancelled();

  // Leaves the session exactly at its committed version.
  void RollBack(Turn& t, absl::Status reason);

  // One prompt piece for each prefilling turn, in admission order, within the token budget
  // (at least one piece). Piece boundaries depend only on the turn, never on the load.
  bool PrefillPieces();

  bool DecodeStep();

  void SampleAndEmit(Turn& t, absl::Span<const float> logits);

  void FailTurns(const std::vector<Turn*>& turns, const absl::Status& reason);

  static absl::Status ModelError(const absl::Status& s);

  void RemoveActive(Turn* t);

  // The turn's final token has been fed. With sync durability its state is written first
  // and the commit follows the write; otherwise it commits now.
  void Finalize(Turn& t);

  void OnPersisted(uint64_t seq, uint64_t version, absl::Status status);

  void RunPendingWrite(const std::string& id);

  // What a commit of `t` does to the session's snapshot metadata.
  void ApplyCommitToMeta(const Turn& t, SnapshotMeta* meta) const;

  // The turn's slot becomes the session's committed state.
  void Commit(Turn& t);

  void InstallCommitted(const std::string& id, int32_t slot, uint64_t version);

  void CommitCreate(Turn& t);

  void SweepIdle(SteadyClock::time_point now);

  std::unique_ptr<XlstmModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  const ChatTemplate template_;
  const EngineOptions options_;
  std::shared_ptr<Signal> signal_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  // Ordered so ListSessions pages by id.
  std::map<std::string, SessionMeta> sessions_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, SteadyClock::time_point> last_active_ ABSL_GUARDED_BY(mu_);
  std::deque<std::unique_ptr<Turn>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> commands_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> cancel_all_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int32_t pending_creates_ ABSL_GUARDED_BY(mu_) = 0;
  int32_t running_turns_ ABSL_GUARDED_BY(mu_) = 0;
  int32_t resident_sessions_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generated_tokens_ ABSL_GUARDED_BY(mu_) = 0;

  int64_t writes_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t snapshot_writes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t snapshot_write_failures_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t restores_from_disk_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t restores_from_redis_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t redis_sessions_ ABSL_GUARDED_BY(mu_) = 0;
  double restore_ms_total_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::function<void()>> completions_ ABSL_GUARDED_BY(mu_);

  // Set in Start(), then immutable.
  StateFingerprint fingerprint_;
  int64_t state_bytes_ = 0;
  uint64_t snapshot_bytes_ = 0;
  int32_t session_cap_ = 0;
  std::unique_ptr<SnapshotDir> dir_;
  std::unique_ptr<RedisStore> redis_;
  std::unique_ptr<IoPool> io_;

  std::atomic<int64_t> host_bytes_{0};  // written by the engine thread only
  std::atomic<int32_t> host_sessions_{0};

  // Engine thread only.
  std::unordered_map<std::string, std::function<void()>> pending_sync_writes_;
  struct DurableWaiter {
    uint64_t gen = 0;  // satisfied once the file holds this generation or a later one
    std::function<void(absl::Status)> done;
  };
  std::unordered_map<std::string, std::vector<DurableWaiter>> durable_waiters_;
  uint64_t turn_seq_ = 0;
  int64_t spills_to_disk_ = 0;
  std::vector<std::unique_ptr<Turn>> active_;
  std::unordered_map<std::string, SessionState> states_;
  std::vector<int32_t> free_slots_;
  std::vector<float> logits_;
  uint64_t tick_ = 0;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_ENGINE_IMPL_H_
