// HttpSocket: one accepted connection of the daemon's HTTP listeners, plain or TLS
// (OpenSSL), on a non-blocking descriptor. Every read and write is bounded by a deadline and
// can be interrupted by the listener's stop descriptor, so no client, however slow, holds a
// connection thread past the limits the listener sets.
//
// Threading: one connection thread uses a socket; PeerGone and Shutdown may be called from
// another thread too (Shutdown is how a stopping listener ends a stuck connection).
#ifndef XLSTMD_SERVER_HTTP_SOCKET_H_
#define XLSTMD_SERVER_HTTP_SOCKET_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace xlstmd::server {

// The server side of TLS for one listener, built once from PEM files.
class HttpTlsContext {
 public:
  // INVALID_ARGUMENT naming the file when a file cannot be used. With `client_ca_path`,
  // clients must present a certificate it signed (mutual TLS).
  static absl::StatusOr<std::shared_ptr<HttpTlsContext>> Create(const std::string& cert_path,
                                                                const std::string& key_path,
                                                                const std::string& client_ca_path);
  ~HttpTlsContext();
  SSL_CTX* get() const { return ctx_; }

 private:
  explicit HttpTlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

class HttpSocket {
 public:
  enum class IoResult { kOk, kClosed, kTimeout, kStopped, kError };

  // Takes ownership of `fd` (made non-blocking here). `stop_fd` (not owned) becomes readable
  // when the listener stops; reads waiting for a new request give up then.
  HttpSocket(int fd, int stop_fd);
  ~HttpSocket();
  HttpSocket(const HttpSocket&) = delete;
  HttpSocket& operator=(const HttpSocket&) = delete;

  // Runs the TLS handshake (before the first read) by `deadline`.
  IoResult StartTls(const HttpTlsContext& tls, absl::Time deadline);

  // Reads what is available (at least one byte) into `buf`, appending. `stoppable`: the
  // stop descriptor ends the wait (kStopped).
  IoResult ReadSome(std::string* buf, size_t max_bytes, absl::Time deadline, bool stoppable);
  // Writes all of `data` by `deadline`.
  IoResult WriteAll(absl::string_view data, absl::Time deadline);
  // Without blocking: has the client closed its end or reset the connection? Bytes the client
  // sent meanwhile (a pipelined request) do not count as gone.
  bool PeerGone();
  // Ends both directions now (another thread's blocked read or write returns).
  void Shutdown();
  int fd() const { return fd_; }

 private:
  IoResult Wait(short events, absl::Time deadline, bool stoppable);

  const int fd_;
  const int stop_fd_;
  SSL* ssl_ = nullptr;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_HTTP_SOCKET_H_
