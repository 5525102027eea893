// TurnStream: the bounded channel between the engine thread (producer) and the transport that
// streams one turn to its client (consumer). It is how a slow reader pauses only its own turn:
// the engine leaves a turn out of the decode batch while its stream is full, and resumes it
// when the consumer has popped.
//
// Event order on a stream: one kStarted, any number of kDelta, then either one kFinished
// (the turn committed; Close(OK) follows) or no kFinished and Close(error) (the turn was
// rolled back: cancelled, deadline, drain, failure).
//
// Threading: producer calls (Push, Close, HasRoom, cancel_requested) come from the engine
// thread; consumer calls (TryPop, Cancel, DetachWakeup) from any thread. The wakeup callback
// runs on the producer's thread after each Push/Close, under the wakeup mutex, so after
// DetachWakeup returns it never runs again (transport objects may then be destroyed). The
// producer is the scheduler thread, so the wakeup must only post work to the transport's own
// threads (server/chat_reactor.cc posts a pump onto gRPC's): no popping, protobuf conversion
// or writes inside it. It must not call DetachWakeup.
#ifndef XLSTMD_CORE_ENGINE_TURN_STREAM_H_
#define XLSTMD_CORE_ENGINE_TURN_STREAM_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/sampling/sampler.h"
#include "core/sampling/stop_checker.h"

namespace xlstmd::core {

struct TurnUsage {
  uint32_t prompt_tokens = 0;      // input ids the turn appended (template and BOS included)
  uint32_t completion_tokens = 0;  // generated ids (a final stop id included)
  double queue_ms = 0;             // StartTurn -> admitted into a slot
  double prefill_ms = 0;           // admitted -> last prompt piece done
  double first_token_ms = 0;       // StartTurn -> first token pushed
  double total_ms = 0;             // StartTurn -> committed
  // The session's token count before the turn: history a stateless server would have
  // processed again (xlstmd_prefill_tokens_avoided_total).
  uint64_t history_tokens = 0;
};

struct TurnEvent {
  enum class Kind { kStarted, kDelta, kFinished };
  Kind kind = Kind::kDelta;
  // kStarted
  std::vector<int32_t> input_ids;
  uint64_t base_version = 0;
  // kDelta: text is complete UTF-8 (may be empty); token_ids every generated id in order.
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprob> logprobs;      // one per token id when requested
  std::vector<TokenLogprob> top_logprobs;  // top-n per token, flattened
  // kFinished
  FinishReason finish_reason = FinishReason::kNone;
  TurnUsage usage;
  uint64_t session_version = 0;  // the new committed version
  // On disk (fsynced) before this event, under sync durability; then state_digest is the
  // snapshot's footer checksum (DigestDone in state_tiers.h), else 0.
  bool durable = false;
  uint64_t state_digest = 0;
  // Set by TurnStream::Push: when the engine produced the event (inter-token latency is
  // measured between deltas' stamps, not when a transport gets round to popping them).
  std::chrono::steady_clock::time_point pushed_at;
};

class TurnStream {
 public:
  // `capacity` >= 1 events buffered before the producer must wait (HasRoom false).
  TurnStream(int32_t capacity, std::function<void()> wakeup);
  TurnStream(const TurnStream&) = delete;
  TurnStream& operator=(const TurnStream&) = delete;

  // ---- consumer ----
  // Pops the next event; false when none is buffered right now.
  bool TryPop(TurnEvent* event);
  // True once the producer closed the stream and every event has been popped; the outcome is
  // then final_status() (OK iff a kFinished was delivered).
  bool Done() const;
  absl::Status final_status() const;
  // Asks the engine to stop the turn (client cancel, deadline). The engine rolls the session
  // back and closes the stream with `reason` within one scheduler step. Idempotent.
  void Cancel(absl::Status reason);
  // After this returns the wakeup is never invoked again.
  void DetachWakeup();

  // ---- producer (engine thread) ----
  bool HasRoom() const;
  void Push(TurnEvent event);  // ignored after Close
  void Close(absl::Status status);
  bool closed() const;
  bool cancel_requested() const { return cancel_requested_.load(std::memory_order_acquire); }
  absl::Status cancel_reason() const;
  // Called (from a consumer thread) when a pop turned a full buffer into one with room, so
  // the engine can resume a paused turn. Set once by the engine before the stream is shared.
  void set_room_callback(std::function<void()> fn) { on_room_ = std::move(fn); }
  void set_cancel_callback(std::function<void()> fn) { on_cancel_ = std::move(fn); }

 private:
  void Wake();

  const int32_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<TurnEvent> events_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  absl::Status cancel_reason_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> cancel_requested_{false};

  absl::Mutex wake_mu_;
  std::function<void()> wakeup_ ABSL_GUARDED_BY(wake_mu_);

  std::function<void()> on_room_;
  std::function<void()> on_cancel_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_TURN_STREAM_H_
