#include "server/health_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/retry.h"
#include "server/convert.h"

namespace xlstmd::server {

namespace hv1 = grpc::health::v1;

// One Watch call. Writes are one at a time (gRPC's rule): a change that arrives while a
// write is in flight is remembered and sent when it completes, so the watcher always ends on
// the latest status without queueing every intermediate one. Finishing also waits for the
// write in flight, so the last status sent reaches the client before the end of the call.
class HealthService::Watcher final : public grpc::ServerWriteReactor<hv1::HealthCheckResponse> {
 public:
  Watcher(HealthService* service, std::string name) : service_(service), name_(std::move(name)) {}

  // Called with the service's mutex held.
  void Push(Status status) {
    absl::MutexLock lock(&mu_);
    if (finished_ || finish_pending_) return;
    if (writing_) {
      pending_ = status;
      has_pending_ = true;
      return;
    }
    WriteLocked(status);
  }

  void End(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    if (writing_) {
      if (!finish_pending_) finish_status_ = status;
      finish_pending_ = true;
      return;
    }
    FinishLocked(status);
  }

  BudgetHold stream_hold;

 private:
  void WriteLocked(Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    response_.set_status(status);
    writing_ = true;
    StartWrite(&response_);
  }
  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the watch stream broke"));
      return;
    }
    if (has_pending_ && !finished_) {
      has_pending_ = false;
      WriteLocked(pending_);
    } else if (finish_pending_) {
      FinishLocked(finish_status_);
    }
  }
  void OnCancel() override {
    // A cancelled call sends nothing more: no need to wait for a write.
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status::CANCELLED);
  }
  void OnDone() override {
    service_->Forget(this);
    delete this;
  }

  HealthService* const service_;
  const std::string name_;
  absl::Mutex mu_;
  hv1::HealthCheckResponse response_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  Status pending_ ABSL_GUARDED_BY(mu_) = hv1::HealthCheckResponse::UNKNOWN;
  bool finish_pending_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);

 public:
  const std::string& name() const { return name_; }
};

HealthService::HealthService(std::vector<std::string> names, int64_t max_watchers,
                             ByteBudget* streams)
    : names_(std::move(names)), max_watchers_(max_watchers), streams_(streams) {}

HealthService::~HealthService() { Shutdown(); }

HealthService::Status HealthService::StatusOf(const std::string& name) const {
  if (std::find(names_.begin(), names_.end(), name) == names_.end()) {
    return hv1::HealthCheckResponse::SERVICE_UNKNOWN;
  }
  return serving_ ? hv1::HealthCheckResponse::SERVING : hv1::HealthCheckResponse::NOT_SERVING;
}

void HealthService::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (serving_ == serving) return;
  serving_ = serving;
  for (Watcher* w : watchers_) w->Push(StatusOf(w->name()));
}

void HealthService::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  const bool was_serving = serving_;
  serving_ = false;
  for (Watcher* w : watchers_) {
    if (was_serving) w->Push(StatusOf(w->name()));
    w->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
  }
}

int64_t HealthService::watchers() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(watchers_.size());
}

void HealthService::Forget(Watcher* w) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(w);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* ctx,
                                               const hv1::HealthCheckRequest* request,
                                               hv1::HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  Status status;
  {
    absl::MutexLock lock(&mu_);
    status = StatusOf(request->service());
  }
  if (status == hv1::HealthCheckResponse::SERVICE_UNKNOWN) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 absl::StrCat("unknown service '", request->service(), "'")));
    return reactor;
  }
  response->set_status(status);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<hv1::HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* ctx, const hv1::HealthCheckRequest* request) {
  auto* w = new Watcher(this, request->service());
  absl::MutexLock lock(&mu_);
  if (shut_down_) {
    w->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
    return w;
  }
  if (static_cast<int64_t>(watchers_.size()) >= max_watchers_) {
    w->End(ToGrpcStatus(base::CapacityError(
        absl::StrCat("too many health Watch streams (--max-health-watchers ", max_watchers_,
                     "); use Check, or retry later"),
        base::kShedStreams)));
    return w;
  }
  if (streams_ != nullptr && !w->stream_hold.Take(streams_, 1)) {
    w->End(ToGrpcStatus(base::CapacityError(
        absl::StrCat("too many open streams (--max-streams ", streams_->limit(),
                     "); retry later"),
        base::kShedStreams)));
    return w;
  }
  watchers_.insert(w);
  w->Push(StatusOf(w->name()));
  return w;
}

}  // namespace xlstmd::server
