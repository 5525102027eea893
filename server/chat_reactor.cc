#include "server/chat_reactor.h"

#include <chrono>
#include <optional>
#include <utility>

#include "grpcpp/impl/codegen/proto_utils.h"
#include "server/convert.h"

namespace xlstmd::server {

void ChatReactor::Reject(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    busy_ = true;
    finished_ = true;
  }
  Finish(ToGrpcStatus(status));
}

void ChatReactor::Attach(std::shared_ptr<core::TurnStream> stream) {
  bool call_over = false;
  {
    absl::MutexLock lock(&mu_);
    stream_ = stream;
    call_over = cancelled_ || finished_;
  }
  // A cancel that raced ahead of Attach finished the call without a turn to stop.
  if (call_over) {
    stream->Cancel(absl::CancelledError("client cancelled the call"));
    return;
  }
  Pump();
}

void ChatReactor::Pump() {
  {
    absl::MutexLock lock(&mu_);
    if (stream_ == nullptr || finished_) return;
    if (busy_) {
      again_ = true;
      return;
    }
    busy_ = true;
  }
  Drain();
}

void ChatReactor::FinishOnce(grpc::Status status) {
  {
    absl::MutexLock lock(&mu_);
    finished_ = true;
  }
  Finish(std::move(status));
}

void ChatReactor::Drain() {
  for (;;) {
    core::TurnStream* stream = nullptr;
    std::optional<grpc::Status> cancelled;
    {
      absl::MutexLock lock(&mu_);
      stream = stream_.get();
      again_ = false;
      if (cancelled_) cancelled = cancel_status_;
    }
    if (cancelled.has_value()) {
      FinishOnce(*std::move(cancelled));
      return;
    }
    core::TurnEvent event;
    if (stream->TryPop(&event)) {
      ToProto(event, &event_);
      out_.Clear();
      bool own_buffer = false;
      const grpc::Status ser =
          grpc::SerializationTraits<v1::ChatEvent>::Serialize(event_, &out_, &own_buffer);
      if (!ser.ok()) {
        stream->Cancel(absl::InternalError("could not serialize a ChatEvent"));
        FinishOnce(grpc::Status(grpc::StatusCode::INTERNAL, "could not serialize a ChatEvent"));
        return;
      }
      // The last event of a turn goes out together with the status: one less round trip.
      if (stream->Done()) {
        {
          absl::MutexLock lock(&mu_);
          finished_ = true;
        }
        StartWriteAndFinish(&out_, grpc::WriteOptions(), ToGrpcStatus(stream->final_status()));
        return;
      }
      StartWrite(&out_);  // busy_ stays set until OnWriteDone
      return;
    }
    if (stream->Done()) {
      FinishOnce(ToGrpcStatus(stream->final_status()));
      return;
    }
    absl::MutexLock lock(&mu_);
    if (!again_ && !cancelled_) {
      busy_ = false;
      return;
    }
  }
}

void ChatReactor::OnWriteDone(bool ok) {
  if (!ok) {
    // The transport is gone (client left, or the call was cancelled); nothing more can be
    // written, so stop the turn and end the call.
    std::shared_ptr<core::TurnStream> stream;
    {
      absl::MutexLock lock(&mu_);
      stream = stream_;
    }
    if (stream != nullptr) stream->Cancel(absl::CancelledError("client stopped reading"));
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "write failed: the client went away"));
    return;
  }
  Drain();  // busy_ is still ours: it was taken for the write that just completed
}

void ChatReactor::OnCancel() {
  const bool deadline_passed = ctx_->deadline() <= std::chrono::system_clock::now();
  const absl::Status reason = deadline_passed ? absl::DeadlineExceededError("deadline exceeded")
                                              : absl::CancelledError("client cancelled the call");
  std::shared_ptr<core::TurnStream> stream;
  bool finish_now = false;
  {
    absl::MutexLock lock(&mu_);
    stream = stream_;
    cancelled_ = true;
    cancel_status_ = ToGrpcStatus(reason);
    if (!finished_) {
      if (busy_) {
        again_ = true;  // the pumper (or OnWriteDone) sees cancelled_ and finishes
      } else {
        busy_ = true;
        finished_ = true;
        finish_now = true;
      }
    }
  }
  if (stream != nullptr) stream->Cancel(reason);
  if (finish_now) Finish(ToGrpcStatus(reason));
}

void ChatReactor::OnDone() {
  std::shared_ptr<core::TurnStream> stream;
  {
    absl::MutexLock lock(&mu_);
    stream = std::move(stream_);
  }
  if (stream != nullptr) {
    // Not under mu_: a wakeup running right now holds the stream's wakeup lock and may be
    // waiting for mu_.
    stream->DetachWakeup();
    if (!stream->Done()) stream->Cancel(absl::CancelledError("call ended"));
  }
  delete this;
}

}  // namespace xlstmd::server
