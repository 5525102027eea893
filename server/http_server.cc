#include "server/http_server.h"

#include <sys/socket.h>

#include <chrono>
#include <exception>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/metrics.h"
#include "httplib.h"
#include "server/options.h"

namespace xlstmd::server {
namespace {

// Nothing here takes a body; a small cap means a client cannot make us buffer much.
constexpr size_t kMaxPayloadBytes = 16 << 10;
// Probes and scrapes are few (a kubelet's two probes, a Prometheus or two), but a client that
// trickles its headers holds a worker until a read times out: far more workers than probes
// need keeps a handful of such clients from starving /healthz (http_server_test.cc), at the
// cost of idle threads only.
constexpr size_t kThreads = 16;
// Per read/write call (httplib 0.11 has no whole-request deadline, so a client trickling bytes
// can still hold a worker: keep --http-listen on loopback or the pod network, as for any
// Prometheus endpoint; docs/observability.md).
constexpr time_t kIoTimeoutSeconds = 2;

bool IsGetOrHead(const std::string& method) { return method == "GET" || method == "HEAD"; }

}  // namespace

class HttpServer::Impl {
 public:
  explicit Impl(Handlers handlers) : handlers_(std::move(handlers)) {}

  // A plain or a TLS server (cpp-httplib's SSLServer reads the PEM files itself).
  absl::Status Create(const HttpTls& tls) {
    if (tls.cert_path.empty()) {
      server_ = std::make_unique<httplib::Server>();
      return absl::OkStatus();
    }
    auto ssl = std::make_unique<httplib::SSLServer>(
        tls.cert_path.c_str(), tls.key_path.c_str(),
        tls.client_ca_path.empty() ? nullptr : tls.client_ca_path.c_str());
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot serve HTTPS with ", tls.cert_path,
                                                     " and ", tls.key_path));
    }
    server_ = std::move(ssl);
    return absl::OkStatus();
  }

  ~Impl() { Stop(); }

  absl::Status Bind(const HostPort& hp) {
    server_->new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
    // httplib's default turns SO_REUSEPORT on, which would let a second daemon bind the same
    // port and silently take half the scrapes and probes. Only SO_REUSEADDR (restart while
    // old connections linger in TIME_WAIT).
    server_->set_socket_options([](int sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    server_->set_payload_max_length(kMaxPayloadBytes);
    server_->set_read_timeout(kIoTimeoutSeconds, 0);
    server_->set_write_timeout(kIoTimeoutSeconds, 0);
    // One request per connection: an idle keep-alive client cannot hold one of the workers.
    server_->set_keep_alive_max_count(1);
    // Every request is answered here, before httplib's router (no regexes, no body read).
    server_->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      Route(req, res);
      if (handlers_.on_response) handlers_.on_response(req.path, res.status);
      return httplib::Server::HandlerResponse::Handled;
    });
    // Defensive: a handler that throws (only std::bad_alloc can) answers 500, never
    // terminates the process.
    server_->set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
          res.status = 500;
          res.set_content("internal error\n", "text/plain; charset=utf-8");
        });

    // httplib wants an IPv6 host without its brackets.
    std::string host = hp.host;
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    int port = hp.port;
    if (port == 0) {
      port = server_->bind_to_any_port(host);
      if (port < 0) port = 0;
    } else if (!server_->bind_to_port(host, port)) {
      port = 0;
    }
    if (port == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ", hp.host, ":",
                                                 hp.port, " (address in use or not local?)"));
    }
    port_ = port;
    address_ = absl::StrCat(hp.host, ":", port);
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    // stop() is a no-op until the listen loop runs, so Stop must not race ahead of it.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!server_->is_running() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!server_->is_running()) {
      Stop();
      return absl::UnavailableError(
          absl::StrCat("the HTTP listener on ", address_, " did not start"));
    }
    return absl::OkStatus();
  }

  void Stop() {
    if (stopped_ || server_ == nullptr) return;
    stopped_ = true;
    server_->stop();
    if (thread_.joinable()) thread_.join();
  }

  const std::string& address() const { return address_; }
  int port() const { return port_; }

 private:
  void Route(const httplib::Request& req, httplib::Response& res) {
    const std::string& path = req.path;
    if (path != "/metrics" && path != "/healthz" && path != "/readyz") {
      res.status = 404;
      res.set_content("not found: try /metrics, /healthz or /readyz\n",
                      "text/plain; charset=utf-8");
      return;
    }
    if (!IsGetOrHead(req.method)) {
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      res.set_content("method not allowed\n", "text/plain; charset=utf-8");
      return;
    }
    // Probes and scrapes must always see the current state.
    res.set_header("Cache-Control", "no-store");
    if (path == "/metrics") {
      res.status = 200;
      res.set_content(handlers_.metrics ? handlers_.metrics() : std::string(),
                      base::kPrometheusTextContentType);
    } else if (path == "/healthz") {
      res.status = 200;
      res.set_content("ok\n", "text/plain; charset=utf-8");
    } else {
      const std::string reason = handlers_.not_ready_reason ? handlers_.not_ready_reason() : "";
      res.status = reason.empty() ? 200 : 503;
      res.set_content(reason.empty() ? "ready\n" : absl::StrCat("not ready: ", reason, "\n"),
                      "text/plain; charset=utf-8");
    }
  }

  const Handlers handlers_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string address_;
  int port_ = 0;
  bool stopped_ = false;
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen,
                                                              Handlers handlers,
                                                              const HttpTls& tls) {
  absl::StatusOr<HostPort> hp = ParseHostPort(listen);
  if (!hp.ok()) return hp.status();
  auto impl = std::make_unique<Impl>(std::move(handlers));
  if (absl::Status s = impl->Create(tls); !s.ok()) return s;
  if (absl::Status s = impl->Bind(*hp); !s.ok()) return s;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() = default;

const std::string& HttpServer::address() const { return impl_->address(); }
int HttpServer::port() const { return impl_->port(); }
void HttpServer::Stop() { impl_->Stop(); }

}  // namespace xlstmd::server
