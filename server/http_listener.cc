#include "server/http_listener.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/options.h"

namespace xlstmd::server {
namespace {

using IoResult = HttpSocket::IoResult;

std::string PeerName(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    return absl::StrCat(host, ":", ntohs(a->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    return absl::StrCat("[", host, "]:", ntohs(a->sin6_port));
  }
  return "unix";
}

bool IsHead(const HttpRequest& r) { return r.method == "HEAD"; }

}  // namespace

// Open connections, so that Stop can end the ones still running after the grace period.
class HttpListener::Registry {
 public:
  void Add(HttpSocket* s) {
    absl::MutexLock lock(&mu_);
    open_.insert(s);
  }
  void Remove(HttpSocket* s) {
    absl::MutexLock lock(&mu_);
    open_.erase(s);
  }
  void ShutdownAll() {
    absl::MutexLock lock(&mu_);
    for (HttpSocket* s : open_) s->Shutdown();
  }

 private:
  absl::Mutex mu_;
  std::set<HttpSocket*> open_ ABSL_GUARDED_BY(mu_);
};

// ---- HttpResponse ----

std::string HttpResponse::Head(int status, absl::string_view content_type,
                               const HttpHeaders& extra, const std::string& framing) {
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ", HttpReasonPhrase(status), "\r\n");
  if (!content_type.empty()) absl::StrAppend(&head, "Content-Type: ", content_type, "\r\n");
  absl::StrAppend(&head, framing);
  for (const auto& [name, value] : extra) {
    // Handlers build header values from fixed strings and numbers; a CR or LF would split the
    // response, so such a header is dropped rather than sent.
    if (name.find_first_of("\r\n:") != std::string::npos ||
        value.find_first_of("\r\n") != std::string::npos) {
      continue;
    }
    absl::StrAppend(&head, name, ": ", value, "\r\n");
  }
  const bool keep = request_->keep_alive() && !close_after_ && !stopping();
  if (!keep) close_after_ = true;
  absl::StrAppend(&head, keep ? "" : "Connection: close\r\n", "\r\n");
  return head;
}

bool HttpResponse::Put(absl::string_view data) {
  if (failed_) return false;
  if (socket_->WriteAll(data, absl::Now() + write_timeout_) != IoResult::kOk) failed_ = true;
  return !failed_;
}

void HttpResponse::Send(int status, absl::string_view content_type, absl::string_view body,
                        const HttpHeaders& extra) {
  if (status_ != 0) return;
  status_ = status;
  std::string out = Head(status, content_type, extra,
                         absl::StrCat("Content-Length: ", body.size(), "\r\n"));
  if (!IsHead(*request_)) absl::StrAppend(&out, body);
  Put(out);
}

bool HttpResponse::StartStream(int status, absl::string_view content_type,
                               const HttpHeaders& extra) {
  if (status_ != 0) return false;
  status_ = status;
  streaming_ = true;
  // HTTP/1.0 has no chunked coding: the end of the stream is the end of the connection.
  chunked_ = request_->minor_version >= 1;
  if (!chunked_) close_after_ = true;
  return Put(Head(status, content_type, extra,
                  chunked_ ? "Transfer-Encoding: chunked\r\n" : std::string()));
}

bool HttpResponse::Write(absl::string_view data) {
  if (!streaming_ || data.empty()) return streaming_ && !failed_;
  if (!chunked_) return Put(data);
  char size[24];
  const int n = snprintf(size, sizeof(size), "%zx\r\n", data.size());
  std::string chunk;
  chunk.reserve(static_cast<size_t>(n) + data.size() + 2);
  chunk.append(size, static_cast<size_t>(n));
  chunk.append(data.data(), data.size());
  chunk.append("\r\n");
  return Put(chunk);
}

bool HttpResponse::Finish() {
  if (streaming_ && chunked_) Put("0\r\n\r\n");
  return !failed_ && !close_after_;
}

// ---- HttpListener ----

HttpListener::HttpListener(HttpListenerOptions options, Handler handler)
    : options_(std::move(options)),
      handler_(std::move(handler)),
      registry_(std::make_unique<Registry>()) {}

HttpListener::~HttpListener() {
  Stop(absl::ZeroDuration());
  if (listen_fd_ >= 0) close(listen_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
}

absl::StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(const std::string& listen,
                                                                  HttpListenerOptions options,
                                                                  Handler handler) {
  absl::StatusOr<HostPort> hp = ParseHostPort(listen);
  if (!hp.ok()) return hp.status();
  std::unique_ptr<HttpListener> l(new HttpListener(std::move(options), std::move(handler)));
  std::string host = hp->host;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (absl::Status s = l->Bind(host, hp->port); !s.ok()) return s;
  l->address_ = absl::StrCat(hp->host, ":", l->port_);
  l->acceptor_ = std::make_unique<std::thread>([p = l.get()] { p->AcceptLoop(); });
  return l;
}

absl::Status HttpListener::Bind(const std::string& host, int port) {
  const absl::Status unavailable = absl::UnavailableError(absl::StrCat(
      "cannot listen for ", options_.name, " on ", host, ":", port,
      " (address in use or not local?)"));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res) != 0) {
    return unavailable;
  }
  for (addrinfo* ai = res; ai != nullptr && listen_fd_ < 0; ai = ai->ai_next) {
    const int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                          ai->ai_protocol);
    if (fd < 0) continue;
    // SO_REUSEADDR for a restart while old connections linger in TIME_WAIT; never
    // SO_REUSEPORT, which would let a second daemon silently share the port.
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      listen_fd_ = fd;
    } else {
      close(fd);
    }
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0) return unavailable;
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = bound.ss_family == AF_INET6
              ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
              : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) return absl::InternalError("eventfd failed");
  return absl::OkStatus();
}

void HttpListener::AcceptLoop() {
  while (!stopping_.load(std::memory_order_acquire)) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
    if ((fds[1].revents & POLLIN) != 0) break;
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len,
                           SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      // Out of descriptors: the pending connection stays queued; wait rather than spin.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        poll(&fds[1], 1, 50);
      }
      continue;
    }
    if (active_.load(std::memory_order_relaxed) >= options_.max_connections) {
      // Answered now from this thread, never queued (a best-effort write: the socket is
      // non-blocking and the response fits any send buffer).
      const std::string body = absl::StrCat(options_.name, ": too many connections (",
                                            options_.max_connections, "); retry shortly\n");
      const std::string resp = absl::StrCat(
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
          "Retry-After: 1\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n",
          body);
      if (options_.tls == nullptr) send(fd, resp.data(), resp.size(), MSG_NOSIGNAL);
      close(fd);
      continue;
    }
    active_.fetch_add(1, std::memory_order_relaxed);
    try {
      std::thread([this, fd, peer = PeerName(addr)] { Serve(fd, peer); }).detach();
    } catch (const std::exception&) {
      // No thread to be had: drop this connection, keep serving the others.
      close(fd);
      active_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
}

void HttpListener::Serve(int fd, std::string peer) {
  // OpenSSL writes with write(2), which raises SIGPIPE when the client has gone, and the
  // daemon does not ignore SIGPIPE process-wide. Blocked on this thread (its own), a SIGPIPE
  // stays pending here and is discarded when the thread ends; the write just fails (EPIPE).
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  {
    HttpSocket socket(fd, stop_fd_);
    registry_->Add(&socket);
    // Accepted just before a stop: closed unserved (Stop keeps shutting registered
    // connections down until none is left, so one that registers late ends too).
    if (!stopping_.load(std::memory_order_acquire)) ServeConnection(socket, peer);
    registry_->Remove(&socket);
  }
  active_.fetch_sub(1, std::memory_order_acq_rel);
}

void HttpListener::SendError(HttpSocket& socket, int status, const std::string& message) {
  const std::string body = message + "\n";
  const std::string resp = absl::StrCat(
      "HTTP/1.1 ", status, " ", HttpReasonPhrase(status),
      "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ", body.size(),
      "\r\nConnection: close\r\n\r\n", body);
  socket.WriteAll(resp, absl::Now() + options_.write_timeout);
}

void HttpListener::ServeConnection(HttpSocket& socket, const std::string& peer) {
  const HttpLimits& limits = options_.limits;
  if (options_.tls != nullptr &&
      socket.StartTls(*options_.tls, absl::Now() + options_.request_timeout) != IoResult::kOk) {
    return;
  }
  std::string buf;
  for (int served = 0; served < options_.max_requests_per_connection; ++served) {
    // Idle until the request's first byte; a stop ends the wait.
    const absl::Time idle_deadline = absl::Now() + options_.idle_timeout;
    while (buf.empty()) {
      if (socket.ReadSome(&buf, limits.max_header_bytes + 4, idle_deadline, true) !=
          IoResult::kOk) {
        return;
      }
    }
    const absl::Time deadline = absl::Now() + options_.request_timeout;
    size_t head_end;
    while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (buf.size() > limits.max_header_bytes + 4) {
        SendError(socket, 431, absl::StrCat("request head over ", limits.max_header_bytes,
                                            " bytes"));
        return;
      }
      const IoResult r = socket.ReadSome(&buf, limits.max_header_bytes + 8 - buf.size(),
                                         deadline, false);
      if (r == IoResult::kTimeout) {
        SendError(socket, 408, "request not received in time");
      }
      if (r != IoResult::kOk) return;
    }
    HttpRequest request;
    request.peer = peer;
    const HeadParse head = ParseRequestHead(absl::string_view(buf).substr(0, head_end + 2),
                                            limits, &request);
    if (head.status != 0) {
      SendError(socket, head.status, head.error);
      return;
    }
    buf.erase(0, head_end + 4);
    if (head.expect_continue && head.content_length > 0 && buf.empty() &&
        socket.WriteAll("HTTP/1.1 100 Continue\r\n\r\n",
                        absl::Now() + options_.write_timeout) != IoResult::kOk) {
      return;
    }
    while (buf.size() < head.content_length) {
      const IoResult r = socket.ReadSome(&buf, head.content_length - buf.size(), deadline,
                                         false);
      if (r == IoResult::kTimeout) SendError(socket, 408, "request body not received in time");
      if (r != IoResult::kOk) return;
    }
    request.body = buf.substr(0, head.content_length);
    buf.erase(0, head.content_length);

    HttpResponse response(&socket, &request, options_.write_timeout, &stopping_);
    try {
      handler_(request, response);
    } catch (const std::exception&) {
      // Only allocation can throw in the handlers; answer if nothing was sent yet.
      response.CloseAfter();
    }
    if (!response.started()) {
      response.CloseAfter();
      response.Send(500, "text/plain; charset=utf-8", "internal error\n");
    }
    if (!response.Finish()) return;
  }
}

void HttpListener::Stop(absl::Duration grace) {
  if (stopped_) return;
  stopped_ = true;
  stopping_.store(true, std::memory_order_release);
  if (stop_fd_ >= 0) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = write(stop_fd_, &one, sizeof(one));
  }
  if (acceptor_ != nullptr && acceptor_->joinable()) acceptor_->join();
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    listen_fd_ = -1;
  }
  const absl::Time deadline = absl::Now() + grace;
  while (active_.load(std::memory_order_acquire) > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  // Past the grace period: shut the remaining connections down; their threads see their
  // reads and writes fail and end.
  while (active_.load(std::memory_order_acquire) > 0) {
    registry_->ShutdownAll();
    absl::SleepFor(absl::Milliseconds(5));
  }
}

}  // namespace xlstmd::server
