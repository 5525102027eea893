// WebServer: the web port (--web-listen): the OpenAI-compatible API (chat completions and
// the stateful Responses API), the session API over Server-Sent Events, and the built-in chat
// page at /. docs/web.md has the endpoints, the SSE format and the error table.
//
// Every turn goes through the same engine path as gRPC (Engine::StartTurn, TurnStream): the
// same API keys and tenants, limits, cancel-and-rollback and metrics. It runs on its own
// HttpListener (http_listener.h), separate from the operations port, so probes and scrapes
// never wait behind chat streams.
//
// Threading: Start and Stop from one controlling thread; requests are served on the
// listener's connection threads.
#ifndef XLSTMD_SERVER_WEB_SERVER_H_
#define XLSTMD_SERVER_WEB_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/options.h"
#include "server/services.h"
#include "server/tls.h"

namespace xlstmd::server {

class WebServer {
 public:
  // Binds options.web_listen. `state` must outlive the server. UNAVAILABLE when the address
  // cannot be bound.
  static absl::StatusOr<std::unique_ptr<WebServer>> Start(const ServerOptions& options,
                                                          const TlsFiles& tls,
                                                          const ServingState* state);
  ~WebServer();
  WebServer(const WebServer&) = delete;
  WebServer& operator=(const WebServer&) = delete;

  const std::string& address() const;
  int port() const;
  // Streamed replies open now.
  int64_t open_streams() const;

  // Stops accepting; open streams get `grace` (the engine's drain has already ended their
  // turns by then), then connections are shut down. Idempotent.
  void Stop(absl::Duration grace);

  class Impl;

 private:
  explicit WebServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_WEB_SERVER_H_
