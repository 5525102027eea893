// grpc.health.v1.Health served by xlstmd itself (proto/grpc/health/v1/health.proto), in place
// of gRPC's built-in service: its Watch streams count against --max-streams and are capped on
// their own (--max-health-watchers; RESOURCE_EXHAUSTED beyond), so thousands of idle watchers
// cannot grow the process without bound. Semantics are the standard ones: Check answers the
// status of a known service name ("" = the whole server) or NOT_FOUND; Watch sends the
// current status at once and again on every change, SERVICE_UNKNOWN for an unknown name.
// Thread-safe.
#ifndef XLSTMD_SERVER_HEALTH_SERVICE_H_
#define XLSTMD_SERVER_HEALTH_SERVICE_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/byte_budget.h"

namespace xlstmd::server {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  // `names`: the service names answered ("" included); all start NOT_SERVING. `streams` is the
  // server-wide budget of streaming calls (not owned, may be null).
  HealthService(std::vector<std::string> names, int64_t max_watchers, ByteBudget* streams);
  ~HealthService() override;

  // Sets every name's status and pushes it to every watcher.
  void SetServing(bool serving);
  // Ends every Watch (server shutdown: the transport waits for open calls).
  void Shutdown();
  int64_t watchers() const;

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* ctx,
      const grpc::health::v1::HealthCheckRequest* request) override;

  class Watcher;

 private:
  friend class Watcher;
  using Status = grpc::health::v1::HealthCheckResponse::ServingStatus;
  Status StatusOf(const std::string& name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(Watcher* w);

  const std::vector<std::string> names_;
  const int64_t max_watchers_;
  ByteBudget* const streams_;
  mutable absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::set<Watcher*> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_HEALTH_SERVICE_H_
