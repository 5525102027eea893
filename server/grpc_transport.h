// One gRPC listener with its services, over the server's shared ServingState. The server
// normally has one; it starts another on the same port when gRPC abandoned the first
// listener (listener_watch.h), and the old one keeps serving the connections it has.
#ifndef XLSTMD_SERVER_GRPC_TRANSPORT_H_
#define XLSTMD_SERVER_GRPC_TRANSPORT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "server/health_service.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/services.h"
#include "server/tls.h"

namespace xlstmd::server {

struct GrpcTransport {
  GrpcTransport(ServingState* state, const ServerOptions& options,
                const std::vector<std::string>& health_names);
  ChatServiceImpl chat;
  ModelServiceImpl model_service;
  HealthService health;
  std::unique_ptr<grpc::Server> server;
};

// Builds and starts a transport listening on `address` (HOST:PORT), health SERVING when
// `serving`; `*port` gets the bound port. UNAVAILABLE naming --listen when it cannot listen.
absl::StatusOr<std::unique_ptr<GrpcTransport>> StartGrpcTransport(
    const std::string& address, const ServerOptions& options, const TlsFiles& tls,
    const std::vector<std::string>& health_names, ServingState* state, ServerMetrics* metrics,
    bool serving, int* port);

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_GRPC_TRANSPORT_H_
