#include "tests/testing/raw_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

namespace xlstmd::testing {

RawConnection::RawConnection(int port) {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Close();
}

RawConnection::~RawConnection() { Close(); }

// Appends what arrives before `end` to `out`; false when nothing more will (closed, error or
// time up), with `*closed` set when the peer closed.
bool RawConnection::ReadMore(std::string* out, std::chrono::steady_clock::time_point end,
                             bool* closed) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
  if (fd_ < 0 || left.count() <= 0) return false;
  pollfd p{fd_, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
  char buf[8192];
  const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
  if (n <= 0) {
    if (closed != nullptr) *closed = true;
    return false;
  }
  out->append(buf, static_cast<size_t>(n));
  return true;
}

void RawConnection::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool RawConnection::Send(const std::string& bytes) {
  size_t sent = 0;
  while (fd_ >= 0 && sent < bytes.size()) {
    const ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return fd_ >= 0;
}

std::string RawConnection::ReadUntil(const std::string& marker, int timeout_ms) {
  std::string out = std::move(pending_);
  pending_.clear();
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  do {
    const size_t at = marker.empty() ? std::string::npos : out.find(marker);
    if (at != std::string::npos) {
      pending_ = out.substr(at + marker.size());
      out.resize(at + marker.size());
      return out;
    }
  } while (ReadMore(&out, end, nullptr));
  return out;
}

std::string RawConnection::ReadToClose(int timeout_ms, bool* closed) {
  std::string out = std::move(pending_);
  pending_.clear();
  if (closed != nullptr) *closed = false;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (ReadMore(&out, end, closed)) {
  }
  return out;
}

}  // namespace xlstmd::testing
