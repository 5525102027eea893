// ChatReactor: streams one turn's core::TurnStream to a Chat caller (ServerWriteReactor).
//
// Exactly one write is in flight at a time; that is what makes a slow reader pause only its
// own turn (the engine stops decoding a turn whose stream buffer is full). Whoever finds the
// reactor idle becomes the pumper (`busy_`): it pops events, converts and serializes them
// and starts the next write outside the reactor's mutex, so neither gRPC nor the engine is
// ever called with it held. Anyone who finds a pumper at work sets `again_`, and the pumper
// re-checks before going idle, so no wakeup is lost.
//
// Threads: the pumper is always a gRPC thread, never the engine's. The stream's wakeup runs
// on the engine thread and only posts: when the reactor is idle it posts a pump to gRPC's
// executor (RunOnGrpcThread, grpc_post.h); when a pumper or a write is at
// work it just sets `again_` (OnWriteDone drains on a gRPC thread). At most one post is
// queued at a time (`post_queued_`); wakeups meanwhile are covered by it.
//
// End of the call: when the stream is Done the reactor finishes with its final status
// (OK after `finished`, else the engine's reason). A client cancel or deadline cancels the
// turn (the engine rolls it back) and finishes the call at once, without waiting for the
// engine. OnDone detaches the wakeup (after which the engine thread never calls in again,
// see TurnStream::DetachWakeup, so no new post can start), cancels a turn still running
// and writes the log line. The reactor is deleted by whichever finishes last: OnDone, or
// the callback of a post still outstanding then (`posts_alive_`); such a callback finds no
// stream and touches nothing but the reactor's own fields.
//
// Observability: each event popped feeds ServerMetrics (tokens, latencies, finish reason) as
// it goes to the client, and OnDone writes the call's one log line (logging.h): hashed
// session id, request id, tokens in and out, times, finish reason and status code; the prompt
// and reply text only with --log-prompts.
#ifndef XLSTMD_SERVER_CHAT_REACTOR_H_
#define XLSTMD_SERVER_CHAT_REACTOR_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/engine/turn_stream.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/metrics.h"
#include "server/services.h"
#include "xlstmd/v1/chat.pb.h"

namespace xlstmd::server {

class ChatReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // Heap-allocated by the Chat handler; deletes itself in OnDone. `obs` outlives the call.
  ChatReactor(grpc::CallbackServerContext* ctx, const Observability* obs)
      : ctx_(ctx), obs_(obs), start_(std::chrono::steady_clock::now()) {}

  // What the log line says about the request (before Attach or Reject; the handler thread).
  void Describe(const std::string& tenant, const v1::ChatRequest& request);
  // Ends the call with `status` before any turn started (bad request, auth, engine refusal).
  void Reject(const absl::Status& status);
  // Starts streaming the turn. At most once, from the Chat handler.
  void Attach(std::shared_ptr<core::TurnStream> stream);
  // The TurnStream wakeup (engine thread; also safe from any other thread). Never pops,
  // converts or writes itself: it posts a pump to a gRPC thread, or leaves the work to the
  // pumper already at it.
  void Wake();

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  // One of --max-streams, given back when the reactor goes.
  BudgetHold stream_hold;

 private:
  ~ChatReactor() override = default;
  // Becomes the pumper and drains, or asks the current pumper to look again.
  void Pump();
  // The callback of a post (Wake): pumps on the gRPC executor thread it runs on, then
  // deletes the reactor if OnDone has run and this was the last post outstanding.
  void RunPost();
  // The pumper's loop; the caller holds `busy_`.
  void Drain();
  // Marks the call finished and sends `status` (the caller holds `busy_`).
  void FinishOnce(grpc::Status status);
  // Metrics and the log record for one popped event (the pumper).
  void Observe(const core::TurnEvent& event);
  // Sends `status` as the call's end and remembers it for the log line.
  void FinishWithStatus(grpc::Status status);
  // The call's log line (OnDone).
  void LogCall();

  grpc::CallbackServerContext* const ctx_;
  const Observability* const obs_;
  const std::chrono::steady_clock::time_point start_;

  absl::Mutex mu_;
  std::shared_ptr<core::TurnStream> stream_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;   // a pumper runs or a write is in flight
  bool again_ ABSL_GUARDED_BY(mu_) = false;  // new work arrived while busy
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status cancel_status_ ABSL_GUARDED_BY(mu_);
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
  bool post_queued_ ABSL_GUARDED_BY(mu_) = false;  // a post is set and has not begun to pump
  int posts_alive_ ABSL_GUARDED_BY(mu_) = 0;  // posts whose callback has not finished
  bool done_ ABSL_GUARDED_BY(mu_) = false;    // OnDone has run

  // Owned by the pumper: the event being serialized and the bytes of the write in flight
  // (gRPC reads them until OnWriteDone, or OnDone after StartWriteAndFinish).
  v1::ChatEvent event_;
  grpc::ByteBuffer out_;

  // The log record: written by Describe (before any pumping) and by the pumper, read by
  // OnDone (after the last pump: gRPC orders Finish before OnDone).
  struct CallRecord {
    std::string tenant;
    std::string session_id;
    std::string request_id;
    std::string prompt;  // --log-prompts only
    std::string reply;   // --log-prompts only, capped
    bool reply_truncated = false;
    bool started = false;
    size_t tokens_in = 0;
    size_t tokens_out = 0;
    std::optional<std::chrono::steady_clock::time_point> first_token_at;
    std::optional<core::TurnEvent> finished;  // usage, finish reason, version
  };
  CallRecord record_;
  ServerMetrics::TurnTracker tracker_;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_CHAT_REACTOR_H_
