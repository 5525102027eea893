#include "server/http_socket.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace xlstmd::server {
namespace {

int MsUntil(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  if (left > absl::Seconds(3600)) return 3600 * 1000;
  // Round up, so a wait never ends just before its deadline and spins.
  return static_cast<int>(absl::ToInt64Milliseconds(left + absl::Milliseconds(1) -
                                                    absl::Nanoseconds(1)));
}

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

// What a non-blocking SSL call that returned `r` waits for: POLLIN or POLLOUT, or 0 when it
// failed for good (closed, protocol error).
short TlsWait(SSL* ssl, int r) {
  const int err = SSL_get_error(ssl, r);
  ERR_clear_error();
  if (err == SSL_ERROR_WANT_READ) return POLLIN;
  if (err == SSL_ERROR_WANT_WRITE) return POLLOUT;
  return 0;
}

}  // namespace

absl::StatusOr<std::shared_ptr<HttpTlsContext>> HttpTlsContext::Create(
    const std::string& cert_path, const std::string& key_path, const std::string& client_ca_path) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return absl::InternalError("cannot create a TLS context");
  std::shared_ptr<HttpTlsContext> out(new HttpTlsContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_path.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot serve HTTPS with certificate ", cert_path, ": ", OpenSslError()));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_path.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot serve HTTPS with key ", key_path, ": ", OpenSslError()));
  }
  if (!client_ca_path.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, client_ca_path.c_str(), nullptr) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("cannot use client CA ", client_ca_path,
                                                     ": ", OpenSslError()));
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return out;
}

HttpTlsContext::~HttpTlsContext() { SSL_CTX_free(ctx_); }

HttpSocket::HttpSocket(int fd, int stop_fd) : fd_(fd), stop_fd_(stop_fd) {
  const int flags = fcntl(fd_, F_GETFL, 0);
  if (flags >= 0) fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
}

HttpSocket::~HttpSocket() {
  if (ssl_ != nullptr) {
    SSL_shutdown(ssl_);  // best effort close_notify; never waits (non-blocking)
    SSL_free(ssl_);
  }
  close(fd_);
}

HttpSocket::IoResult HttpSocket::Wait(short events, absl::Time deadline, bool stoppable) {
  for (;;) {
    pollfd fds[2] = {{fd_, events, 0}, {stop_fd_, POLLIN, 0}};
    const int n = poll(fds, stoppable && stop_fd_ >= 0 ? 2 : 1, MsUntil(deadline));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoResult::kError;
    }
    if (n == 0) return IoResult::kTimeout;
    if (stoppable && (fds[1].revents & POLLIN) != 0) return IoResult::kStopped;
    // Readiness, or an error/hangup that the next call reports.
    return IoResult::kOk;
  }
}

HttpSocket::IoResult HttpSocket::StartTls(const HttpTlsContext& tls, absl::Time deadline) {
  ssl_ = SSL_new(tls.get());
  if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) return IoResult::kError;
  for (;;) {
    const int r = SSL_accept(ssl_);
    if (r == 1) return IoResult::kOk;
    const short events = TlsWait(ssl_, r);
    if (events == 0) return IoResult::kError;
    const IoResult w = Wait(events, deadline, /*stoppable=*/true);
    if (w != IoResult::kOk) return w;
  }
}

HttpSocket::IoResult HttpSocket::ReadSome(std::string* buf, size_t max_bytes, absl::Time deadline,
                                          bool stoppable) {
  char chunk[16 << 10];
  const size_t want = max_bytes < sizeof(chunk) ? max_bytes : sizeof(chunk);
  if (want == 0) return IoResult::kError;
  for (;;) {
    if (ssl_ != nullptr) {
      const int r = SSL_read(ssl_, chunk, static_cast<int>(want));
      if (r > 0) {
        buf->append(chunk, static_cast<size_t>(r));
        return IoResult::kOk;
      }
      if (SSL_get_error(ssl_, r) == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return IoResult::kClosed;
      }
      const short events = TlsWait(ssl_, r);
      if (events == 0) return IoResult::kError;
      const IoResult w = Wait(events, deadline, stoppable);
      if (w != IoResult::kOk) return w;
      continue;
    }
    const ssize_t n = recv(fd_, chunk, want, 0);
    if (n > 0) {
      buf->append(chunk, static_cast<size_t>(n));
      return IoResult::kOk;
    }
    if (n == 0) return IoResult::kClosed;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return IoResult::kError;
    const IoResult w = Wait(POLLIN, deadline, stoppable);
    if (w != IoResult::kOk) return w;
  }
}

HttpSocket::IoResult HttpSocket::WriteAll(absl::string_view data, absl::Time deadline) {
  while (!data.empty()) {
    if (ssl_ != nullptr) {
      const int len = data.size() > (1 << 30) ? (1 << 30) : static_cast<int>(data.size());
      const int r = SSL_write(ssl_, data.data(), len);
      if (r > 0) {
        data.remove_prefix(static_cast<size_t>(r));
        continue;
      }
      const short events = TlsWait(ssl_, r);
      if (events == 0) return IoResult::kError;
      const IoResult w = Wait(events, deadline, /*stoppable=*/false);
      if (w != IoResult::kOk) return w;
      continue;
    }
    const ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return IoResult::kError;
    const IoResult w = Wait(POLLOUT, deadline, /*stoppable=*/false);
    if (w != IoResult::kOk) return w;
  }
  return IoResult::kOk;
}

bool HttpSocket::PeerGone() {
  pollfd p{fd_, static_cast<short>(POLLIN | POLLRDHUP), 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if ((p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0) return true;
  if ((p.revents & POLLIN) != 0 && ssl_ == nullptr) {
    char c;
    const ssize_t n = recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  return false;
}

void HttpSocket::Shutdown() { shutdown(fd_, SHUT_RDWR); }

}  // namespace xlstmd::server
