#include "server/grpc_transport.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/rpc_metrics.h"

namespace xlstmd::server {

GrpcTransport::GrpcTransport(ServingState* state, const ServerOptions& options,
                             const std::vector<std::string>& health_names)
    : chat(state),
      model_service(state),
      health(health_names, options.max_health_watchers, state->streams()) {}

absl::StatusOr<std::unique_ptr<GrpcTransport>> StartGrpcTransport(
    const std::string& address, const ServerOptions& options, const TlsFiles& tls,
    const std::vector<std::string>& health_names, ServingState* state, ServerMetrics* metrics,
    bool serving, int* port) {
  auto t = std::make_unique<GrpcTransport>(state, options, health_names);
  t->health.SetServing(serving);
  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(address, GrpcServerCredentials(tls), &selected_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  // gRPC turns SO_REUSEPORT on by default, which would let a second daemon bind the same
  // port and silently share its traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Ping idle connections so dead peers (browsers, proxies) are noticed, and accept client
  // keepalive pings down to every 30 s without calling them abusive.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 30 * 1000);
  // Transport limits: streams per connection, the memory gRPC may take, and how long idle
  // or old connections live (docs/server.md).
  if (options.max_streams_per_connection > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                               static_cast<int>(std::min<int64_t>(
                                   options.max_streams_per_connection, INT32_MAX)));
  }
  if (options.grpc_memory_mb > 0) {
    grpc::ResourceQuota quota("xlstmd");
    quota.Resize(static_cast<size_t>(options.grpc_memory_mb) << 20);
    builder.SetResourceQuota(quota);
  }
  if (options.max_connection_idle_s > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                               static_cast<int>(std::min<int64_t>(
                                   options.max_connection_idle_s * 1000, INT32_MAX)));
  }
  if (options.max_connection_age_s > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(std::min<int64_t>(
                                   options.max_connection_age_s * 1000, INT32_MAX)));
    // A call still running when its connection ages out gets this long before it is cut:
    // as long as the longest turn (--max-turn-time), so aging never kills a turn the server
    // itself would have let run; at least 30 s, and 30 s when turns have no limit (an
    // unbounded grace would let a health Watch hold an aged connection for ever).
    const int64_t grace_s = options.max_turn_s > 0 ? std::max<int64_t>(options.max_turn_s, 30) : 30;
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(std::min<int64_t>(grace_s * 1000, INT32_MAX)));
  }
  builder.RegisterService(&t->chat);
  builder.RegisterService(&t->model_service);
  builder.RegisterService(&t->health);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(NewRpcMetricsInterceptorFactory(metrics));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  t->server = builder.BuildAndStart();
  if (t->server == nullptr || selected_port == 0) {
    if (t->server != nullptr) t->server->Shutdown();
    return absl::UnavailableError(absl::StrCat("--listen: cannot listen on ", address,
                                               " (address in use or not local?)"));
  }
  *port = selected_port;
  return t;
}

}  // namespace xlstmd::server
