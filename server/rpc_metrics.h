// A gRPC server interceptor that reports every finished call (method and status code) to
// ServerMetrics, so no handler has to remember to: a call counts whichever of its many
// Finish paths it took, including ones gRPC itself ends.
#ifndef XLSTMD_SERVER_RPC_METRICS_H_
#define XLSTMD_SERVER_RPC_METRICS_H_

#include <memory>

#include "grpcpp/support/server_interceptor.h"
#include "server/metrics.h"

namespace xlstmd::server {

// `metrics` must outlive the gRPC server the factory is installed in.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewRpcMetricsInterceptorFactory(ServerMetrics* metrics);

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_RPC_METRICS_H_
