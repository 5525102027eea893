#include "server/server.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/server.h"
#include "kernels/backend.h"
#include "server/grpc_transport.h"
#include "server/http_server.h"
#include "server/web_server.h"
#include "server/listener_watch.h"
#include "server/logging.h"
#include "server/metrics.h"
#include "server/services.h"
#include "server/tls.h"
#include "spdlog/spdlog.h"

namespace xlstmd::server {
namespace {

constexpr const char* kHealthNames[] = {"", "xlstmd.v1.ChatService", "xlstmd.v1.ModelService"};
// After CancelAll, how long to wait for the engine to roll the cancelled turns back.
constexpr int64_t kRollbackWaitMs = 5000;
// /readyz fails when the engine thread has not come round its loop for this long (it does
// at least once a second when idle; one long prefill piece of a 7B model on a CPU can take
// several seconds).
constexpr int64_t kEngineStallMs = 60000;
std::vector<std::string> HealthNames() {
  return {std::begin(kHealthNames), std::end(kHealthNames)};
}

// How often the gRPC listener is checked (listener_watch.h).
constexpr absl::Duration kListenerCheckPeriod = absl::Seconds(1);

// The API-key file's max_snapshot_bytes= overrides, by tenant.
std::map<std::string, uint64_t> SnapshotQuotaOverrides(const core::TenantQuotas& quotas) {
  std::map<std::string, uint64_t> out;
  for (const auto& [tenant, q] : quotas) {
    if (q.max_snapshot_bytes >= 0) out[tenant] = static_cast<uint64_t>(q.max_snapshot_bytes);
  }
  return out;
}

std::chrono::system_clock::time_point After(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(d);
}

}  // namespace

class Server::Impl {
 public:
  Impl(Authenticator auth, const ServerOptions& options)
      : state(std::move(auth), Observability{&metrics, true, options.log_prompts},
              static_cast<uint64_t>(options.snapshot_bytes_in_flight),
              static_cast<uint64_t>(options.max_streams),
              static_cast<uint64_t>(options.tenant_snapshot_bytes),
              SnapshotQuotaOverrides(options.tenant_quotas)),
        options(options) {}

  void SetHealth(bool serving) {
    absl::MutexLock lock(&transport_mu);
    serving_ = serving;
    for (auto& t : transports) t->health.SetServing(serving);
  }

  // "" when ready to take traffic (/readyz).
  std::string NotReadyReason() const {
    if (state.draining()) return "draining";
    if (listener_down.load(std::memory_order_acquire)) {
      return "the gRPC listener stopped accepting connections (descriptors exhausted?); "
             "rebuilding it";
    }
    const core::Engine* engine = state.engine();
    if (engine == nullptr) return "model loading";
    const core::EngineStats stats = engine->stats();
    if (stats.device_failed) return "the compute device failed (see the log)";
    const int64_t silent_ms = stats.ms_since_engine_loop;
    if (silent_ms > kEngineStallMs) {
      return absl::StrCat("engine stalled: its thread has not come round for ", silent_ms,
                          " ms");
    }
    if (std::string fds = DescriptorProblem(); !fds.empty()) return fds;
    return StateDirProblem();
  }

  // Whether the process is about out of descriptors (at most one count a second): then it
  // can accept no connection and open no snapshot file, whatever else is healthy.
  std::string DescriptorProblem() const {
    absl::MutexLock lock(&probe_mu);
    const absl::Time now = absl::Now();
    if (now - last_fd_probe < absl::Seconds(1)) return fd_probe_result;
    last_fd_probe = now;
    const DescriptorUse use = CountDescriptors();
    fd_probe_result.clear();
    if (use.exhausted) {
      fd_probe_result = "no open-file descriptor left (too many connections?)";
    } else if (use.open >= 0 && use.limit > 0) {
      const int64_t reserve = std::max<int64_t>(16, use.limit / 64);
      if (use.open >= use.limit - reserve) {
        fd_probe_result = absl::StrCat(use.open, " of ", use.limit,
                                       " open-file descriptors in use (too many connections?)");
      }
    }
    return fd_probe_result;
  }

  // Whether a file can be created in --state-dir right now (at most one probe a second):
  // durable commits need it, and a missing directory, a full or read-only disk, or no
  // descriptors left all show here.
  std::string StateDirProblem() const {
    if (state_dir.empty()) return "";
    absl::MutexLock lock(&probe_mu);
    const absl::Time now = absl::Now();
    if (now - last_probe < absl::Seconds(1)) return probe_result;
    last_probe = now;
    const std::string path = (std::filesystem::path(state_dir) / ".readyz-probe").string();
    const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
      probe_result = absl::StrCat("state dir ", state_dir, " cannot be written: ",
                                  std::strerror(errno));
    } else {
      ::close(fd);
      ::unlink(path.c_str());
      probe_result.clear();
    }
    return probe_result;
  }

  // Stops the listener watch, then every transport. Calls still open are idle ones (health
  // Watch, ended here) or turns finishing their last write; after `deadline` gRPC cancels them.
  void ShutdownTransports(absl::Duration deadline) {
    if (!stop_watch.HasBeenNotified()) stop_watch.Notify();
    if (watch_thread.joinable()) watch_thread.join();
    std::vector<grpc::Server*> servers;
    {
      absl::MutexLock lock(&transport_mu);
      for (auto& t : transports) {
        t->health.Shutdown();
        servers.push_back(t->server.get());
      }
    }
    const auto at = After(deadline);
    for (grpc::Server* server : servers) server->Shutdown(at);
    for (grpc::Server* server : servers) server->Wait();
  }

  // The listener watch (listener_watch.h): once a second, until shutdown. When gRPC has
  // abandoned the listener, /readyz fails, the dead socket is released and a new transport
  // is started on the same port, retried every second until it listens.
  void WatchListener() {
    bool rebuilding = false;
    int64_t attempts = 0;
    while (!stop_watch.WaitForNotificationWithTimeout(kListenerCheckPeriod)) {
      if (!rebuilding && watch->Dead(GrpcAcceptFailuresLogged())) {
        rebuilding = true;
        attempts = 0;
        listener_down.store(true, std::memory_order_release);
        const int released = watch->Release();
        spdlog::error("the gRPC listener on {} stopped accepting connections (gRPC gives up on "
                      "a listener after an accept error, e.g. no descriptors left); released "
                      "{} socket(s), starting a new listener",
                      listen_address, released);
      }
      if (!rebuilding) continue;
      int bound = 0;
      absl::StatusOr<std::unique_ptr<GrpcTransport>> t;
      {
        absl::MutexLock lock(&transport_mu);
        t = StartGrpcTransport(absl::StrCat(listen_host, ":", port), options, tls, HealthNames(),
                               &state, &metrics, serving_, &bound);
        if (t.ok()) transports.push_back(*std::move(t));
      }
      if (!t.ok()) {
        if (attempts++ % 30 == 0) {
          spdlog::warn("cannot start a new gRPC listener yet: {}",
                       std::string(t.status().message()));
        }
        continue;
      }
      watch->Rescan(/*after_rebuild=*/true);
      rebuilding = false;
      listener_down.store(false, std::memory_order_release);
      spdlog::info("a new gRPC listener accepts on {}", listen_address);
    }
  }

  // First: everything below reports into it, the engine (in `model`) included.
  ServerMetrics metrics;
  ServingState state;
  const ServerOptions options;
  TlsFiles tls;
  mutable absl::Mutex transport_mu;
  // The first is the one Start built; more only after gRPC abandoned a listener.
  std::vector<std::unique_ptr<GrpcTransport>> transports ABSL_GUARDED_BY(transport_mu);
  bool serving_ ABSL_GUARDED_BY(transport_mu) = false;
  std::atomic<bool> listener_down{false};
  std::unique_ptr<ListenerWatch> watch;  // made in Start, used by watch_thread only
  absl::Notification stop_watch;
  std::thread watch_thread;
  std::string listen_host;  // --listen's host, for a rebuilt listener
  std::string listen_address;
  int port = 0;
  std::optional<LoadedModel> model;
  bool drained = false;
  bool shut_down = false;
  // Last: it reads the engine, so it stops before anything above goes.
  std::unique_ptr<HttpServer> http;
  std::string http_address;
  std::unique_ptr<WebServer> web;
  std::string web_address;
  std::string state_dir;  // --state-dir, probed by StateDirProblem
  mutable absl::Mutex probe_mu;
  mutable absl::Time last_probe ABSL_GUARDED_BY(probe_mu) = absl::InfinitePast();
  mutable std::string probe_result ABSL_GUARDED_BY(probe_mu);
  mutable absl::Time last_fd_probe ABSL_GUARDED_BY(probe_mu) = absl::InfinitePast();
  mutable std::string fd_probe_result ABSL_GUARDED_BY(probe_mu);
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

uint64_t Server::snapshot_bytes_in_flight() const {
  return impl_->state.snapshot_budget()->in_flight();
}

std::string Server::NotReadyReason() const { return impl_->NotReadyReason(); }

Server::~Server() {
  Shutdown();
  if (impl_->web != nullptr) impl_->web->Stop(absl::ZeroDuration());
  if (impl_->http != nullptr) impl_->http->Stop();
  // The engine goes (with impl_->model) only after the transport stopped: no call can reach
  // it any more.
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options,
                                                      Authenticator auth) {
  absl::StatusOr<HostPort> hp = ParseHostPort(options.listen);
  if (!hp.ok()) return hp.status();

  auto impl = std::make_unique<Impl>(std::move(auth), options);
  impl->state_dir = options.state_dir;
  // Both are process-wide switches read by the builder; setting them again is harmless.
  // gRPC's own health service is off: HealthService serves grpc.health.v1 within our limits.
  grpc::EnableDefaultHealthCheckService(false);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  absl::StatusOr<TlsFiles> tls = LoadTlsFiles(options);
  if (!tls.ok()) return tls.status();
  for (const std::string& w : tls->warnings) spdlog::warn("{}", w);

  impl->tls = *tls;
  impl->listen_host = hp->host;
  int selected_port = 0;
  {
    absl::StatusOr<std::unique_ptr<GrpcTransport>> t =
        StartGrpcTransport(options.listen, options, impl->tls, HealthNames(), &impl->state,
                           &impl->metrics, /*serving=*/false, &selected_port);
    if (!t.ok()) return t.status();
    absl::MutexLock lock(&impl->transport_mu);
    impl->transports.push_back(*std::move(t));
  }
  if (!options.http_listen.empty()) {
    Impl* raw = impl.get();
    HttpServer::Handlers handlers;
    handlers.metrics = [raw] {
      return raw->metrics.Render(raw->state.engine(), raw->state.snapshot_budget()->in_flight());
    };
    handlers.not_ready_reason = [raw] { return raw->NotReadyReason(); };
    handlers.on_response = [raw](const std::string& path, int status) {
      raw->metrics.OnHttpRequest(path, status);
    };
    absl::StatusOr<std::unique_ptr<HttpServer>> http =
        HttpServer::Start(options.http_listen, std::move(handlers),
                          {tls->cert_path, tls->key_path, tls->client_ca_path});
    if (!http.ok()) {
      impl->ShutdownTransports(absl::ZeroDuration());
      return absl::Status(http.status().code(),
                          absl::StrCat("--http-listen: ", http.status().message()));
    }
    impl->http = *std::move(http);
    impl->http_address = impl->http->address();
  }
  if (!options.web_listen.empty()) {
    absl::StatusOr<std::unique_ptr<WebServer>> web = WebServer::Start(options, *tls, &impl->state);
    if (!web.ok()) {
      impl->ShutdownTransports(absl::ZeroDuration());
      return web.status();
    }
    impl->web = *std::move(web);
    impl->web_address = impl->web->address();
  }
  // Nothing is served until the model is loaded (health NOT_SERVING until Serve).
  impl->port = selected_port;
  impl->listen_address = absl::StrCat(hp->host, ":", selected_port);
  // Found now, while descriptors are surely free: later the watch may need them when none are.
  impl->watch = std::make_unique<ListenerWatch>(selected_port, GrpcAcceptFailuresLogged());
  Impl* raw = impl.get();
  impl->watch_thread = std::thread([raw] { raw->WatchListener(); });
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

const std::string& Server::listen_address() const { return impl_->listen_address; }
int Server::port() const { return impl_->port; }
const std::string& Server::http_address() const { return impl_->http_address; }
const std::string& Server::web_address() const { return impl_->web_address; }
core::EngineObserver* Server::engine_observer() { return impl_->metrics.engine_observer(); }
std::string Server::RenderMetrics() {
  return impl_->metrics.Render(impl_->state.engine(), impl_->state.snapshot_budget()->in_flight());
}

const LoadedModel* Server::model() const {
  return impl_->model.has_value() ? &*impl_->model : nullptr;
}

void Server::Serve(LoadedModel model) {
  impl_->model = std::move(model);
  const core::XlstmModel& m = impl_->model->engine->model();
  ModelInfoLabels info;
  info.model = impl_->model->model_name;
  info.family = m.config().model_type;
  info.embedding_dim = absl::StrCat(m.config().embedding_dim);
  info.num_blocks = absl::StrCat(m.config().num_blocks);
  info.num_heads = absl::StrCat(m.config().num_heads);
  info.vocab_size = absl::StrCat(m.config().vocab_size);
  info.weight_dtype = kernels::DTypeName(m.matrix_dtype());
  info.lm_head_dtype = kernels::DTypeName(m.lm_head_dtype());
  info.backend = m.backend().Name();
  impl_->metrics.SetModelInfo(info, static_cast<int64_t>(m.state_bytes_per_session()));
  impl_->state.SetEngine(impl_->model->engine.get(), impl_->model->model_name,
                         impl_->model->random_weights);
  impl_->SetHealth(true);
}

Server::DrainReport Server::Drain(absl::Duration grace, const std::function<bool()>& skip_wait,
                                  absl::Duration flush_timeout, absl::Duration drain_delay) {
  DrainReport report;
  if (impl_->drained || impl_->shut_down) return report;
  impl_->drained = true;
  impl_->state.set_draining();  // /readyz 503 from here on
  impl_->SetHealth(false);
  core::Engine* engine = impl_->state.engine();
  if (engine != nullptr && drain_delay > absl::ZeroDuration()) {
    const absl::Time until = absl::Now() + drain_delay;
    while (!skip_wait() && absl::Now() < until) {
      absl::SleepFor(std::min(until - absl::Now(), absl::Milliseconds(50)));
    }
  }
  impl_->state.set_refusing();  // the web listener; gRPC through the engine below
  if (engine != nullptr) {
    engine->BeginDrain();
    const absl::Time deadline = absl::Now() + grace;
    report.turns_finished = false;
    // Short waits, so a second signal (skip_wait) cuts the grace period short promptly.
    while (!skip_wait()) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) break;
      const int64_t slice_ms =
          std::max<int64_t>(1, absl::ToInt64Milliseconds(std::min(left, absl::Milliseconds(100))));
      if (engine->WaitIdle(slice_ms)) {
        report.turns_finished = true;
        break;
      }
    }
    engine->CancelAll(absl::UnavailableError("server shutting down"));
    // Rollbacks happen on the engine thread; wait for them (one scheduler step each), so
    // that no session is still marked busy when the flush below picks what to write.
    engine->WaitIdle(kRollbackWaitMs);
  }
  // The web streams have had their turns ended (each wrote its final event); a short grace
  // lets those writes finish, then the connections close.
  if (impl_->web != nullptr) impl_->web->Stop(absl::Seconds(2));
  // The transport goes first: after it no call can change a session, so the flush writes
  // the final state of every one.
  Shutdown();
  if (engine != nullptr) {
    report.flush_ran = true;
    const core::EngineStats before = engine->stats();
    const absl::Time start = absl::Now();
    report.flushed =
        engine->FlushToDisk(std::max<int64_t>(0, absl::ToInt64Milliseconds(flush_timeout)));
    report.flush_time = absl::Now() - start;
    const core::EngineStats after = engine->stats();
    report.snapshots_written = after.snapshot_writes - before.snapshot_writes;
    report.snapshot_write_failures = after.snapshot_write_failures - before.snapshot_write_failures;
    if (!report.flushed) report.writes_in_flight = engine->DiskWritesInFlight();
  }
  return report;
}

void Server::Shutdown(absl::Duration deadline) {
  if (impl_->shut_down) return;
  impl_->shut_down = true;
  impl_->ShutdownTransports(deadline);
}

}  // namespace xlstmd::server
