// Scheduler: the engine thread. Each iteration it runs posted work (session commands, I/O
// completions), admits queued turns FIFO while slots are free (the tiers load each turn's
// committed state into its slot), prefills one fixed-size prompt piece per prefilling turn
// within a token budget (so a long prompt delays others' decoding by at most one piece), runs
// one batched decode step for every decoding turn whose stream has room, samples, pushes
// events, and commits or rolls back finished turns. It also rolls back turns past the server's
// time limit and expires idle sessions.
//
// Determinism: prompt pieces are cut at fixed offsets from the turn's start, each turn has its
// own Sampler (seeded per request), and the model's ops are batch-invariant, so a turn's tokens
// do not depend on what else runs.
//
// Thread rules: Enqueue, Post, BeginDrain, draining, WaitIdle, CancelAll and the counters are
// thread-safe; everything else runs on the scheduler's own thread. Posted functions run on that
// thread and must not block. The thread only schedules and runs the model: it never blocks on
// I/O (the tiers' I/O pool does that) and never serialises or writes to a transport (a stream
// wakeup only tells the transport to pop on its own threads).
#ifndef XLSTMD_CORE_ENGINE_SCHEDULER_H_
#define XLSTMD_CORE_ENGINE_SCHEDULER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/engine/clock.h"
#include "core/engine/engine_observer.h"
#include "core/engine/session_index.h"
#include "core/engine/state_tiers.h"
#include "core/engine/turn.h"
#include "core/base/sample_pool.h"
#include "core/engine/tenant_quota.h"
#include "core/model/xlstm_model.h"
#include "core/sampling/sampling_config.h"
#include "core/tokenizer/chat_template.h"
#include "core/tokenizer/tokenizer.h"

namespace xlstmd::core {

// The model as the scheduler runs it (XlstmModel in the daemon, a fake in unit tests).
class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual int32_t vocab_size() const = 0;
  // Logits views stay valid until the next call (XlstmModel::Prefill / Step).
  virtual absl::StatusOr<LogitsView> Prefill(absl::Span<const PrefillSequence> seqs,
                                             const PrefillOptions& options) = 0;
  virtual absl::StatusOr<LogitsView> Step(absl::Span<const int32_t> tokens,
                                          absl::Span<const int32_t> slots) = 0;
  // No forward pass is coming for now (the scheduler is about to sleep): release what waits
  // for one, such as the sources of restores in flight (XlstmModel::FinishUploads).
  virtual void Idle() {}
};

// Wakes the scheduler thread. Shared with stream callbacks so that a transport that outlives
// the engine (a late Cancel during shutdown) signals a live object, never a freed one.
class Signal {
 public:
  void Notify();
  // Waits until notified or `timeout` passes (real time); consumes the notification.
  void Wait(absl::Duration timeout);

 private:
  absl::Mutex mu_;
  absl::CondVar cv_;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
};

class Scheduler {
 public:
  struct Options {
    int32_t max_batch = 64;  // turns running at once (each needs one slot)
    int32_t slots = 64;
    int32_t prefill_token_budget = 512;
    int32_t prefill_piece = 128;
    int32_t prefill_chunk_size = 64;
    int32_t queue_depth = 256;
    // Per tenant (Turn::owner): turns running at once and turns waiting; 0 = no quota.
    int32_t tenant_max_running = 0;
    int32_t tenant_max_queued = 0;
    TenantQuotas tenant_quotas;  // per-tenant overrides of the two above
    int64_t max_turn_ms = 600000;  // 0 = no limit
    // A decoding turn whose stream stays full this long (its client stopped reading) is
    // rolled back with RESOURCE_EXHAUSTED and gives its slot up. 0 = never.
    int64_t stalled_stream_ms = 30000;
    int64_t idle_ttl_ms = 0;       // 0 = sessions never expire
    // Threads sampling a step's rows (the scheduler's included); -1 = one per core, <= 16.
    int32_t sampling_threads = -1;
    SamplingLimits sampling;
    EngineObserver* observer = nullptr;
  };

  // Nothing is owned; everything must outlive the scheduler. The tiers (state_tiers.h TierOps)
  // come in Start: they post their completions here, so they are built after the scheduler.
  Scheduler(const Options& options, ModelRunner* model, SessionIndex* index,
            const Tokenizer* tokenizer, const ChatTemplate* chat_template, Clock* clock);
  ~Scheduler();  // Stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void Start(TierOps* tiers);
  // Rolls back every turn (persisting ones still commit if their write lands first) and joins
  // the thread. Idempotent.
  void Stop();

  // ---- any thread ----
  // Queues a turn (taking it only on success). UNAVAILABLE while draining or stopping,
  // RESOURCE_EXHAUSTED when full. `reserved`: the turn holds a reservation (below), which the
  // call consumes whatever it answers, and only stopping refuses it as UNAVAILABLE.
  absl::Status Enqueue(std::unique_ptr<Turn>& turn, bool reserved = false);
  // UNAVAILABLE while draining (unless `reserved`) or stopping, RESOURCE_EXHAUSTED when the
  // queue is full.
  absl::Status CheckAdmits(bool reserved = false) const;
  // A turn accepted before its session checks are done (a Redis lookup first) reserves its
  // admission: a drain that begins meanwhile still lets it in, and WaitIdle counts it.
  // UNAVAILABLE while draining or stopping. Consumed by Enqueue(reserved) or CancelReservation.
  absl::Status Reserve();
  void CancelReservation();
  // Runs `fn` on the scheduler thread at its next iteration, in posting order.
  void Post(std::function<void()> fn);
  void BeginDrain();
  bool draining() const;
  bool WaitIdle(absl::Duration timeout);
  void CancelAll(absl::Status reason);
  int32_t queued() const;
  int32_t running() const;
  int64_t steps() const { return steps_.load(std::memory_order_relaxed); }
  // Time since the engine thread last went round its loop (it does at least once a second
  // when idle): a large value means a model call or a posted task is stuck.
  std::chrono::milliseconds SinceLastLoop() const;
  // Set once a forward call failed on the device itself (ModelFailed): no turn runs again.
  bool DeviceFailed() const { return device_failed_.load(std::memory_order_relaxed); }
  int64_t generated_tokens() const { return generated_tokens_.load(std::memory_order_relaxed); }
  const std::shared_ptr<Signal>& signal() const { return signal_; }

 private:
  // scheduler.cc: the loop, admission, prefill, decode.
  absl::Status AdmitsLocked(bool reserved) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Loop();
  bool TakeWork(std::vector<std::function<void()>>* posted,
                std::vector<std::unique_ptr<Turn>>* admitted,
                std::vector<std::unique_ptr<Turn>>* dropped,
                std::optional<absl::Status>* cancel_all);
  void Shutdown(std::vector<std::unique_ptr<Turn>>& admitted, const absl::Status& reason);
  void UpdateRunning();
  bool Admit(std::unique_ptr<Turn>& t);
  void OnLoaded(uint64_t seq, absl::Status status);
  Turn* FindActive(uint64_t seq);
  void BeginRunning(Turn& t);
  void DropStopped();
  bool PrefillPieces();
  bool DecodeStep();
  // Samples and streams turns[k] from logits row rows[k]; checked[k] (a final feed, a
  // created session) is only checked, on row checked_rows[k]. Returns every turn whose row
  // holds a NaN: nothing was sampled or streamed for it, and the caller rolls it back.
  std::vector<Turn*> SampleAndEmit(const std::vector<Turn*>& turns,
                                   const std::vector<int64_t>& rows,
                                   const std::vector<Turn*>& checked,
                                   const std::vector<int64_t>& checked_rows,
                                   const LogitsView& logits);
  // Rolls back the turns of a step whose logits held a NaN (a broken model or kernel): the
  // state it produced is never committed.
  void FailNaN(const std::vector<Turn*>& poisoned);
  void Emit(Turn& t, int32_t id, SampleInfo info);
  void SweepIdle();

  // scheduler_commit.cc: ends of turns.
  void RollBack(Turn& t, absl::Status reason);
  void FailTurns(const std::vector<Turn*>& turns, const absl::Status& reason);
  void ModelFailed(const std::vector<Turn*>& turns, const absl::Status& status);
  void RemoveActive(Turn* t);
  void Finalize(Turn& t);
  void OnShared(uint64_t seq, absl::StatusOr<RedisManifest> written);
  void OnPersisted(uint64_t seq, absl::StatusOr<uint64_t> digest);
  void Commit(Turn& t);
  void CommitCreate(Turn& t);

  const Options options_;
  ModelRunner* const model_;
  SessionIndex* const index_;
  const Tokenizer* const tokenizer_;
  const ChatTemplate* const template_;
  Clock* const clock_;
  TierOps* tiers_ = nullptr;
  std::shared_ptr<Signal> signal_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Turn>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> posted_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> cancel_all_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status device_error_ ABSL_GUARDED_BY(mu_);
  // Round-robin admission across tenants (TakeWork): when each tenant was last admitted.
  absl::flat_hash_map<std::string, uint64_t> last_admitted_ ABSL_GUARDED_BY(mu_);
  uint64_t admissions_ ABSL_GUARDED_BY(mu_) = 0;
  // Sampling (scheduler thread only).
  struct Pick {
    int32_t id = 0;
    SampleInfo info;
    bool nan = false;
  };
  std::vector<Pick> picks_;
  SamplePool sample_pool_;
  std::atomic<bool> device_failed_{false};
  int32_t running_ ABSL_GUARDED_BY(mu_) = 0;
  int32_t reserved_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> last_loop_ns_{0};  // clock_ time, nanoseconds since its epoch
  std::atomic<int64_t> generated_tokens_{0};

  // Scheduler thread only.
  std::vector<std::unique_ptr<Turn>> active_;
  uint64_t turn_seq_ = 0;
  SteadyClock::time_point last_sweep_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_SCHEDULER_H_
