// HttpServer: the daemon's HTTP (or HTTPS) operations listener (http_listener.h), separate
// from gRPC so that Prometheus and Kubernetes probes need no gRPC client.
//
//   GET /metrics  200, Prometheus text format 0.0.4 (Content-Type kPrometheusTextContentType)
//   GET /healthz  200 "ok" while the process runs (liveness: never depends on load)
//   GET /readyz   200 "ready" when the model is loaded and the server is not draining, else
//                 503 with the reason (readiness: take the pod out of the load balancer)
//
// HEAD is accepted wherever GET is. Another method on those paths is 405 with an Allow
// header; any other path is 404. Request bodies are capped small (16 KiB, else 413), headers
// at 8 KiB and 32 fields (431), the whole request must arrive within 2 s (408), and each
// connection has its own thread (32 at most, then 503): clients trickling bytes cannot delay
// a probe, nor make the listener allocate much.
//
// Threading: handlers run on the listener's connection threads and must be thread-safe.
// Start and Stop from one controlling thread; the destructor stops.
#ifndef XLSTMD_SERVER_HTTP_SERVER_H_
#define XLSTMD_SERVER_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace xlstmd::server {

class HttpServer {
 public:
  struct Handlers {
    std::function<std::string()> metrics;           // the /metrics body
    std::function<std::string()> not_ready_reason;  // "" = ready
    // Called after every response (path as requested, status sent); may be empty.
    std::function<void(const std::string& path, int status)> on_response;
  };

  // PEM files for HTTPS (checked by server/tls.h first); an empty cert path = plain HTTP.
  // With a client CA, clients must present a certificate it signed.
  struct HttpTls {
    std::string cert_path, key_path, client_ca_path;
  };

  // Binds `listen` (HOST:PORT, port 0 = a free port; IPv6 in brackets) and starts serving.
  // UNAVAILABLE when the address cannot be bound, INVALID_ARGUMENT when malformed.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& listen,
                                                           Handlers handlers,
                                                           const HttpTls& tls = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound address, HOST:PORT with port 0 resolved.
  const std::string& address() const;
  int port() const;

  // Stops accepting, finishes the requests in progress and joins the listener. Idempotent.
  void Stop();

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_HTTP_SERVER_H_
