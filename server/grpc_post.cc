#include "server/grpc_post.h"

#include <utility>

#include "grpcpp/alarm.h"

namespace xlstmd::server {

void RunOnGrpcThread(std::function<void()> fn) {
  // An Alarm that is already due: Set only arms it, and its expiry runs the callback on gRPC's
  // executor. The callback runs once, also when cancelled (`expired` false), and may delete
  // its Alarm (gRPC holds its internals until the callback returns). One Alarm per post, never
  // re-Set: re-arming one while its previous callback may still be returning would race on
  // the stored function.
  auto* alarm = new grpc::Alarm();
  alarm->Set(gpr_inf_past(GPR_CLOCK_MONOTONIC), [alarm, fn = std::move(fn)](bool /*expired*/) {
    delete alarm;
    fn();
  });
}

}  // namespace xlstmd::server
