// Server: the gRPC side of xlstmd. It listens before the model is loaded (health
// NOT_SERVING, calls UNAVAILABLE "model loading"), serves once a LoadedModel is handed over,
// and drains on shutdown (RELIABILITY.md: readiness off, no new turns, running turns get a
// grace period, then are cancelled with rollback, then the transport stops).
//
// Serves xlstmd.v1.ChatService and ModelService, grpc.health.v1 (service names "" and
// "xlstmd.v1.ChatService"), and server reflection (grpc.reflection.v1alpha). With
// --http-listen it also serves /metrics, /healthz and /readyz over HTTP (http_server.h),
// from Start on (readiness says "model loading" until Serve) until the Server is destroyed
// (scrapes keep working through a drain and its flush). It owns the daemon's ServerMetrics.
//
// Threading: Start, Serve, Drain and Shutdown come from one controlling thread (main's);
// the accessors are safe from any thread. gRPC headers stay out of this header so that main
// and the tests do not pay for them.
#ifndef XLSTMD_SERVER_SERVER_H_
#define XLSTMD_SERVER_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/api_keys.h"
#include "server/model_loader.h"
#include "server/options.h"

namespace xlstmd::core {
class EngineObserver;
}  // namespace xlstmd::core

namespace xlstmd::server {

class Server {
 public:
  // Binds options.listen (and options.http_listen, when set) and starts the services (not
  // yet serving). UNAVAILABLE when an address cannot be bound (the message names the flag).
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options,
                                                       Authenticator auth);
  ~Server();  // Shutdown(), if not done yet; stops the HTTP listener
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound address, HOST:PORT with port 0 resolved to the port picked.
  const std::string& listen_address() const;
  int port() const;
  // "" when ready for traffic, else why not (what /readyz answers): loading, draining, an
  // engine thread stalled for a minute, or a --state-dir where no file can be created.
  std::string NotReadyReason() const;
  // Snapshot bytes ImportSession / ExportSession calls hold now (--snapshot-bytes-in-flight).
  uint64_t snapshot_bytes_in_flight() const;
  // The bound HTTP address (port 0 resolved), or "" without --http-listen.
  const std::string& http_address() const;
  // The bound web address (port 0 resolved), or "" without --web-listen.
  const std::string& web_address() const;

  // The engine hooks feeding /metrics: pass as EngineOptions::observer (LoadModel). Valid as
  // long as the Server, which outlives the model it serves.
  core::EngineObserver* engine_observer();
  // The /metrics body right now (also without an HTTP listener; tests use it).
  std::string RenderMetrics();

  // Takes the model, routes calls to its engine, and flips health to SERVING.
  void Serve(LoadedModel model);
  // nullptr before Serve.
  const LoadedModel* model() const;

  // What a Drain did, for the shutdown log.
  struct DrainReport {
    bool turns_finished = true;     // false: some were still running after the grace period
    bool flush_ran = false;         // an engine was serving, so its states were flushed
    bool flushed = true;            // false: the flush to the disk tier timed out
    int64_t snapshots_written = 0;  // by the flush (0 without a disk tier)
    int64_t snapshot_write_failures = 0;
    int64_t writes_in_flight = 0;   // still unwritten when the flush timed out
    absl::Duration flush_time;

    // Every committed state is on the disk tier (or there is none to flush).
    bool flush_complete() const {
      return !flush_ran || (flushed && snapshot_write_failures == 0 && writes_in_flight == 0);
    }
    // Sessions the flush did not get written: their last durable version is what a restart
    // resumes.
    int64_t sessions_not_written() const { return snapshot_write_failures + writes_in_flight; }
  };

  // Graceful stop: health NOT_SERVING and /readyz 503; for `drain_delay` (cut short by
  // `skip_wait`) everything is still served, so load balancers that learn of the drain from
  // those probes stop routing here before anything is refused; then new turns and sessions
  // UNAVAILABLE, running and
  // queued turns get up to `grace` to finish (cut short once `skip_wait` returns true;
  // polled), then are cancelled with UNAVAILABLE "server shutting down" (rolled back); then
  // Shutdown; then every committed state not yet on the disk tier is written to it (up to
  // `flush_timeout`), so a restart on the same state dir loses nothing. Idempotent (a second
  // call reports nothing done).
  DrainReport Drain(absl::Duration grace, const std::function<bool()>& skip_wait,
                    absl::Duration flush_timeout = absl::Seconds(60),
                    absl::Duration drain_delay = absl::ZeroDuration());
  // Stops the transport: in-flight calls get `deadline` to finish, then are cancelled.
  void Shutdown(absl::Duration deadline = absl::Seconds(1));

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_SERVER_H_
