#include "server/chat_reactor.h"

#include <chrono>
#include <optional>
#include <utility>

#include "grpcpp/impl/codegen/proto_utils.h"
#include "server/convert.h"
#include "server/grpc_post.h"
#include "server/logging.h"
#include "server/turn_log.h"

namespace xlstmd::server {
namespace {

// Prompt and reply text in a log line stop here: a log pipeline is no place for megabytes.
constexpr size_t kMaxLoggedTextBytes = 16 << 10;

double MsSince(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

void ChatReactor::Describe(const std::string& tenant, const v1::ChatRequest& request) {
  record_.tenant = tenant;
  record_.session_id = request.session_id();
  // The engine refuses long request ids, but the log line is written all the same: cap it
  // so a huge one cannot flood the log.
  record_.request_id = request.request_id().substr(0, 256);
  if (obs_->log_prompts && request.has_message()) {
    record_.prompt = request.message().substr(0, kMaxLoggedTextBytes);
  }
}

void ChatReactor::Reject(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    busy_ = true;
    finished_ = true;
  }
  FinishWithStatus(ToGrpcStatus(status));
}

void ChatReactor::FinishWithStatus(grpc::Status status) {
  {
    absl::MutexLock lock(&mu_);
    final_status_ = status;
  }
  Finish(std::move(status));
}

void ChatReactor::Observe(const core::TurnEvent& event) {
  if (obs_->metrics != nullptr) obs_->metrics->OnTurnEvent(event, &tracker_);
  switch (event.kind) {
    case core::TurnEvent::Kind::kStarted:
      record_.started = true;
      record_.tokens_in = event.input_ids.size();
      break;
    case core::TurnEvent::Kind::kDelta:
      if (!record_.first_token_at.has_value() && !event.token_ids.empty()) {
        record_.first_token_at = event.pushed_at;
      }
      record_.tokens_out += event.token_ids.size();
      if (obs_->log_prompts && !record_.reply_truncated) {
        if (record_.reply.size() + event.text.size() > kMaxLoggedTextBytes) {
          record_.reply_truncated = true;
        } else {
          record_.reply += event.text;
        }
      }
      break;
    case core::TurnEvent::Kind::kFinished:
      record_.finished = event;
      break;
  }
}

void ChatReactor::LogCall() {
  if (!obs_->log_turns) return;
  grpc::Status status;
  {
    absl::MutexLock lock(&mu_);
    status = final_status_;
  }
  const auto now = std::chrono::steady_clock::now();
  const CallRecord& r = record_;
  LogLine line("turn");
  line.Add("session", r.session_id.empty() ? std::string() : HashSessionId(r.session_id))
      .Add("tenant", r.tenant)
      .Add("request_id", r.request_id)
      .Add("code", ServerMetrics::GrpcCodeName(static_cast<int>(status.error_code())));
  if (r.finished.has_value()) {
    AddCommittedTurn(line, *r.finished);
  } else {
    // Not committed: what the call saw, timed from its arrival here.
    line.Add("finish", "none")
        .Add("tokens_in", static_cast<uint64_t>(r.tokens_in))
        .Add("tokens_out", static_cast<uint64_t>(r.tokens_out));
    if (r.first_token_at.has_value()) line.AddMs("ttft_ms", MsSince(start_, *r.first_token_at));
    line.AddMs("duration_ms", MsSince(start_, now));
  }
  // Engine messages name the session; the log shows only its hash.
  AddTurnError(line, FromGrpcStatus(status), r.session_id);
  if (obs_->log_prompts) {
    line.Add("prompt", r.prompt).Add("reply", r.reply);
    if (r.reply_truncated) line.Add("reply_truncated", true);
  }
  LogTurnLine(line, static_cast<absl::StatusCode>(status.error_code()));
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

void ChatReactor::Wake() {
  {
    absl::MutexLock lock(&mu_);
    // Before Attach there is no stream (Attach pumps itself); after the end nothing more
    // is written.
    if (stream_ == nullptr || finished_) return;
    if (busy_ || post_queued_) {
      // The pumper at work, the write in flight (OnWriteDone drains) or the post already
      // queued will see the new event.
      again_ = true;
      return;
    }
    post_queued_ = true;
    ++posts_alive_;
  }
  // The engine thread (which holds the stream's wakeup lock here) does no transport work:
  // the pump runs on a gRPC executor thread (grpc_post.h).
  RunOnGrpcThread([this] { RunPost(); });
}

void ChatReactor::RunPost() {
  {
    absl::MutexLock lock(&mu_);
    // From here on a wakeup queues a new post or finds this pumper busy: none is lost.
    post_queued_ = false;
  }
  Pump();  // after OnDone it finds no stream and returns
  bool last = false;
  {
    absl::MutexLock lock(&mu_);
    --posts_alive_;
    last = done_ && posts_alive_ == 0;
  }
  if (last) delete this;
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
  FinishWithStatus(std::move(status));
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
      Observe(event);
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
        const grpc::Status status = ToGrpcStatus(stream->final_status());
        {
          absl::MutexLock lock(&mu_);
          finished_ = true;
          final_status_ = status;
        }
        StartWriteAndFinish(&out_, grpc::WriteOptions(), status);
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
  if (finish_now) FinishWithStatus(ToGrpcStatus(reason));
}

void ChatReactor::OnDone() {
  std::shared_ptr<core::TurnStream> stream;
  {
    absl::MutexLock lock(&mu_);
    stream = std::move(stream_);
  }
  if (stream != nullptr) {
    // Not under mu_: a wakeup running right now holds the stream's wakeup lock and may be
    // waiting for mu_. Once this returns, every wakeup that ran has finished counting its
    // post in posts_alive_.
    stream->DetachWakeup();
    if (!stream->Done()) stream->Cancel(absl::CancelledError("call ended"));
  }
  LogCall();
  // After DetachWakeup no new post can start; one still outstanding deletes the reactor
  // when its callback is through (RunPost).
  bool last = false;
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
    last = posts_alive_ == 0;
  }
  if (last) delete this;
}

}  // namespace xlstmd::server
