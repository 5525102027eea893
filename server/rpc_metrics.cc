#include "server/rpc_metrics.h"

#include <cstdint>
#include <map>
#include <string>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace xlstmd::server {
namespace {

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(ServerMetrics* metrics, const char* method)
      : metrics_(metrics), method_(method == nullptr ? "" : method) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      metrics_->OnRpcDone(method_, static_cast<int>(status.error_code()));
      if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
          !status.error_details().empty()) {
        Shed(status, methods->GetSendTrailingMetadata());
      }
    }
    methods->Proceed();
  }

 private:
  // A capacity refusal (ToGrpcStatus put an ErrorInfo and a RetryInfo in its details): count
  // it, and repeat the delay as gRFC A6's pushback, which gRPC's own retry policy obeys.
  void Shed(const grpc::Status& status, std::multimap<std::string, std::string>* trailers) {
    google::rpc::Status details;
    if (!details.ParseFromString(status.error_details())) return;
    for (const google::protobuf::Any& any : details.details()) {
      google::rpc::ErrorInfo info;
      google::rpc::RetryInfo retry;
      if (any.UnpackTo(&info) && !info.reason().empty()) {
        metrics_->OnShed(info.reason());
      } else if (any.UnpackTo(&retry) && trailers != nullptr) {
        const int64_t ms =
            retry.retry_delay().seconds() * 1000 + retry.retry_delay().nanos() / 1000000;
        trailers->emplace("grpc-retry-pushback-ms", std::to_string(ms));
      }
    }
  }

  ServerMetrics* const metrics_;
  const std::string method_;
};

class RpcMetricsFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsFactory(ServerMetrics* metrics) : metrics_(metrics) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcMetricsInterceptor(metrics_, info->method());
  }

 private:
  ServerMetrics* const metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewRpcMetricsInterceptorFactory(ServerMetrics* metrics) {
  return std::make_unique<RpcMetricsFactory>(metrics);
}

}  // namespace xlstmd::server
