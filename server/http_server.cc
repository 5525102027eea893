#include "server/http_server.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/metrics.h"
#include "server/http_listener.h"

namespace xlstmd::server {
namespace {

// Probes and scrapes are few (a kubelet's two probes, a Prometheus or two) and small.
HttpListenerOptions OpsListenerOptions() {
  HttpListenerOptions o;
  o.name = "HTTP";
  // A thread per connection: a client trickling its headers holds only its own, so a few
  // such clients cannot delay /healthz; the cap bounds what a flood can take.
  o.max_connections = 32;
  // The whole request within 2 s, and short keep-alive: a kubelet or Prometheus sends its
  // request at once, and an idle connection should not hold a thread for long.
  o.request_timeout = absl::Seconds(2);
  o.idle_timeout = absl::Seconds(5);
  o.max_requests_per_connection = 100;
  o.write_timeout = absl::Seconds(5);
  o.limits.max_header_bytes = 8 << 10;
  o.limits.max_headers = 32;
  // Nothing here takes a body.
  o.limits.max_body_bytes = 16 << 10;
  return o;
}

bool IsGetOrHead(const std::string& method) { return method == "GET" || method == "HEAD"; }

}  // namespace

class HttpServer::Impl {
 public:
  explicit Impl(Handlers handlers) : handlers_(std::move(handlers)) {}
  ~Impl() { Stop(); }

  absl::Status Start(const std::string& listen, const HttpTls& tls) {
    HttpListenerOptions options = OpsListenerOptions();
    if (!tls.cert_path.empty()) {
      absl::StatusOr<std::shared_ptr<HttpTlsContext>> ctx =
          HttpTlsContext::Create(tls.cert_path, tls.key_path, tls.client_ca_path);
      if (!ctx.ok()) return ctx.status();
      options.tls = *std::move(ctx);
    }
    absl::StatusOr<std::unique_ptr<HttpListener>> l = HttpListener::Start(
        listen, std::move(options), [this](const HttpRequest& req, HttpResponse& res) {
          const Reply reply = Route(req);
          // Counted before it is sent: a scrape that follows a response sees it.
          if (handlers_.on_response) handlers_.on_response(req.path, reply.status);
          res.Send(reply.status, reply.content_type, reply.body, reply.headers);
        });
    if (!l.ok()) return l.status();
    listener_ = *std::move(l);
    return absl::OkStatus();
  }

  void Stop() {
    if (listener_ != nullptr) listener_->Stop(absl::ZeroDuration());
  }

  const std::string& address() const { return listener_->address(); }
  int port() const { return listener_->port(); }

 private:
  struct Reply {
    int status = 200;
    absl::string_view content_type = "text/plain; charset=utf-8";
    std::string body;
    HttpHeaders headers;
  };

  Reply Route(const HttpRequest& req) const {
    const std::string& path = req.path;
    if (path != "/metrics" && path != "/healthz" && path != "/readyz") {
      return {404, "text/plain; charset=utf-8", "not found: try /metrics, /healthz or /readyz\n",
              {}};
    }
    if (!IsGetOrHead(req.method)) {
      return {405, "text/plain; charset=utf-8", "method not allowed\n", {{"Allow", "GET, HEAD"}}};
    }
    // Probes and scrapes must always see the current state.
    const HttpHeaders no_store = {{"Cache-Control", "no-store"}};
    if (path == "/metrics") {
      return {200, base::kPrometheusTextContentType,
              handlers_.metrics ? handlers_.metrics() : std::string(), no_store};
    }
    if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n", no_store};
    const std::string reason = handlers_.not_ready_reason ? handlers_.not_ready_reason() : "";
    return {reason.empty() ? 200 : 503, "text/plain; charset=utf-8",
            reason.empty() ? "ready\n" : absl::StrCat("not ready: ", reason, "\n"), no_store};
  }

  const Handlers handlers_;
  std::unique_ptr<HttpListener> listener_;
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen,
                                                              Handlers handlers,
                                                              const HttpTls& tls) {
  auto impl = std::make_unique<Impl>(std::move(handlers));
  if (absl::Status s = impl->Start(listen, tls); !s.ok()) return s;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() = default;

const std::string& HttpServer::address() const { return impl_->address(); }
int HttpServer::port() const { return impl_->port(); }
void HttpServer::Stop() { impl_->Stop(); }

}  // namespace xlstmd::server
