// ChatReactor: streams one turn's core::TurnStream to a Chat caller (ServerWriteReactor).
//
// Exactly one write is in flight at a time; that is what makes a slow reader pause only its
// own turn (the engine stops decoding a turn whose stream buffer is full). Events arrive
// through the stream's wakeup, on the engine thread; a write completes on a gRPC thread.
// Whoever finds the reactor idle becomes the pumper (`busy_`): it pops events and starts the
// next write outside the reactor's mutex, so neither gRPC nor the engine is ever called
// with it held. Anyone who finds a pumper at work sets `again_`, and the pumper re-checks
// before going idle, so no wakeup is lost.
//
// End of the call: when the stream is Done the reactor finishes with its final status
// (OK after `finished`, else the engine's reason). A client cancel or deadline cancels the
// turn (the engine rolls it back) and finishes the call at once, without waiting for the
// engine. OnDone detaches the wakeup (after which the engine thread never calls in again,
// see TurnStream::DetachWakeup), cancels a turn still running, and deletes the reactor.
#ifndef XLSTMD_SERVER_CHAT_REACTOR_H_
#define XLSTMD_SERVER_CHAT_REACTOR_H_

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/engine/turn_stream.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "xlstmd/v1/chat.pb.h"

namespace xlstmd::server {

class ChatReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // Heap-allocated by the Chat handler; deletes itself in OnDone.
  explicit ChatReactor(grpc::CallbackServerContext* ctx) : ctx_(ctx) {}

  // Ends the call with `status` before any turn started (bad request, auth, engine refusal).
  void Reject(const absl::Status& status);
  // Starts streaming the turn. At most once, from the Chat handler.
  void Attach(std::shared_ptr<core::TurnStream> stream);
  // The TurnStream wakeup (engine thread; also safe from any other thread).
  void Wake() { Pump(); }

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  ~ChatReactor() override = default;
  // Becomes the pumper and drains, or asks the current pumper to look again.
  void Pump();
  // The pumper's loop; the caller holds `busy_`.
  void Drain();
  // Marks the call finished and sends `status` (the caller holds `busy_`).
  void FinishOnce(grpc::Status status);

  grpc::CallbackServerContext* const ctx_;

  absl::Mutex mu_;
  std::shared_ptr<core::TurnStream> stream_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;   // a pumper runs or a write is in flight
  bool again_ ABSL_GUARDED_BY(mu_) = false;  // new work arrived while busy
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status cancel_status_ ABSL_GUARDED_BY(mu_);

  // Owned by the pumper: the event being serialized and the bytes of the write in flight
  // (gRPC reads them until OnWriteDone, or OnDone after StartWriteAndFinish).
  v1::ChatEvent event_;
  grpc::ByteBuffer out_;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_CHAT_REACTOR_H_
