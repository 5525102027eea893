// HttpListener: the daemon's own HTTP/1.1 server, under both HTTP listeners (the operations
// port of http_server.h and the web port of web_api.h). Written here rather than taken from
// cpp-httplib because a listener that faces the internet needs what that library cannot say:
// a deadline for the whole request (a client trickling bytes cannot hold a thread), caps on
// header bytes and count, a connection cap answered at once instead of an unbounded queue,
// streamed responses that notice a departed client, and a stop that ends idle keep-alive
// connections at once but lets streams finish within a grace period.
//
// One thread per open connection, up to max_connections; one more is answered 503 with
// Retry-After and closed by the accepting thread, never queued. Requests are read whole
// (head and body, within request_timeout from their first byte) before the handler runs.
// Responses are either whole (Send: Content-Length) or streamed (StartStream + Write: chunked
// on HTTP/1.1, close-delimited on HTTP/1.0). Keep-alive between requests up to idle_timeout.
//
// Threading: the handler runs on the connection's thread and must be thread-safe. Start and
// Stop come from one controlling thread; the destructor stops.
#ifndef XLSTMD_SERVER_HTTP_LISTENER_H_
#define XLSTMD_SERVER_HTTP_LISTENER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/http_request.h"
#include "server/http_socket.h"

namespace xlstmd::server {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// How a handler answers one request. Exactly one of Send or StartStream; a handler that does
// neither gets a 500 sent for it.
class HttpResponse {
 public:
  // The whole response. A HEAD request gets the head only.
  void Send(int status, absl::string_view content_type, absl::string_view body,
            const HttpHeaders& extra = {});
  // The head of a streamed response; then Write each piece (one chunk each, sent at once).
  // False when the client is gone or too slow (write_timeout): stop streaming.
  bool StartStream(int status, absl::string_view content_type, const HttpHeaders& extra = {});
  bool Write(absl::string_view data);
  // Without blocking: the client has closed or reset its connection.
  bool PeerGone() { return failed_ || socket_->PeerGone(); }
  // The listener is stopping (drain): finish up.
  bool stopping() const { return stopping_->load(std::memory_order_acquire); }
  bool started() const { return status_ != 0; }
  bool failed() const { return failed_; }
  int status() const { return status_; }
  // Close the connection after this response even if the client would keep it.
  void CloseAfter() { close_after_ = true; }

 private:
  friend class HttpListener;
  HttpResponse(HttpSocket* socket, const HttpRequest* request, absl::Duration write_timeout,
               const std::atomic<bool>* stopping)
      : socket_(socket), request_(request), write_timeout_(write_timeout), stopping_(stopping) {}
  std::string Head(int status, absl::string_view content_type, const HttpHeaders& extra,
                   const std::string& framing);
  bool Put(absl::string_view data);
  bool Finish();  // ends a stream; false when the connection cannot be reused

  HttpSocket* socket_;
  const HttpRequest* request_;
  const absl::Duration write_timeout_;
  const std::atomic<bool>* stopping_;
  int status_ = 0;
  bool streaming_ = false;
  bool chunked_ = false;
  bool failed_ = false;
  bool close_after_ = false;
};

struct HttpListenerOptions {
  std::string name = "http";  // in error messages
  int max_connections = 64;
  // From a request's first byte to its last (head and body): a slower client gets 408.
  absl::Duration request_timeout = absl::Seconds(10);
  // An open connection waiting for its next request (and for the first one).
  absl::Duration idle_timeout = absl::Seconds(5);
  int max_requests_per_connection = 1000;
  absl::Duration write_timeout = absl::Seconds(10);  // per write
  HttpLimits limits;
  std::shared_ptr<HttpTlsContext> tls;  // null = plain HTTP
};

class HttpListener {
 public:
  using Handler = std::function<void(const HttpRequest&, HttpResponse&)>;

  // Binds `listen` (HOST:PORT, port 0 = a free port; IPv6 in brackets) and starts accepting.
  // UNAVAILABLE when it cannot be bound, INVALID_ARGUMENT when malformed.
  static absl::StatusOr<std::unique_ptr<HttpListener>> Start(const std::string& listen,
                                                             HttpListenerOptions options,
                                                             Handler handler);
  ~HttpListener();
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // Connections open now.
  int connections() const { return active_.load(std::memory_order_relaxed); }

  // Stops accepting and ends idle connections at once; requests in progress get `grace`
  // (handlers see stopping()), then their connections are shut down. Returns when every
  // connection thread has ended. Idempotent.
  void Stop(absl::Duration grace = absl::Seconds(1));

 private:
  HttpListener(HttpListenerOptions options, Handler handler);
  absl::Status Bind(const std::string& host, int port);
  void AcceptLoop();
  void Serve(int fd, std::string peer);
  void ServeConnection(HttpSocket& socket, const std::string& peer);
  void SendError(HttpSocket& socket, int status, const std::string& message);

  const HttpListenerOptions options_;
  const Handler handler_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: readable once Stop begins
  std::string address_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> active_{0};
  bool stopped_ = false;
  class Registry;
  std::unique_ptr<Registry> registry_;  // open connections, for Stop
  std::unique_ptr<std::thread> acceptor_;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_HTTP_LISTENER_H_
