#include "server/listener_watch.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace xlstmd::server {
namespace {

int BoundPort(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return -1;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return -1;
}

bool IsListening(int fd) {
  int listening = 0;
  socklen_t len = sizeof(listening);
  return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening != 0;
}

bool IsListenerOn(int fd, int port) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && IsListening(fd) && BoundPort(fd) == port;
}

int64_t SoftLimit() {
  struct rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return -1;
  return static_cast<int64_t>(lim.rlim_cur);
}

}  // namespace

DescriptorUse CountDescriptors() {
  DescriptorUse use;
  use.limit = SoftLimit();
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) {
    use.exhausted = errno == EMFILE || errno == ENFILE;
    return use;
  }
  int64_t n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  use.open = n - 1;  // not the directory's own descriptor
  return use;
}

std::vector<int> FindListeningSockets(int port) {
  std::vector<int> out;
  if (DIR* dir = opendir("/proc/self/fd")) {
    const int own = dirfd(dir);
    while (dirent* e = readdir(dir)) {
      char* end = nullptr;
      const long fd = std::strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0' || fd == own) continue;
      if (IsListenerOn(static_cast<int>(fd), port)) out.push_back(static_cast<int>(fd));
    }
    closedir(dir);
    return out;
  }
  // No descriptor to read the directory with: probe the numbers (fstat on a closed number
  // fails at once; listeners are opened early, so low numbers are checked first).
  const int64_t limit = std::min<int64_t>(SoftLimit() < 0 ? 65536 : SoftLimit(), 1 << 20);
  for (int fd = 0; fd < limit; ++fd) {
    if (IsListenerOn(fd, port)) out.push_back(fd);
  }
  return out;
}

int AcceptQueueLength(int fd) {
  if (!IsListening(fd)) return -1;
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
  // For a listening socket the kernel reports the accept queue's length in tcpi_unacked.
  return static_cast<int>(info.tcpi_unacked);
}

ListenerWatch::ListenerWatch(int port, int64_t accept_failures_logged, int stuck_checks)
    : port_(port),
      stuck_checks_(stuck_checks),
      reserve_fd_(open("/dev/null", O_RDWR | O_CLOEXEC)),
      failures_seen_(accept_failures_logged) {
  Rescan();
}

ListenerWatch::~ListenerWatch() {
  if (reserve_fd_ >= 0) close(reserve_fd_);
}

void ListenerWatch::Rescan(bool after_rebuild) {
  fds_ = FindListeningSockets(port_);
  stuck_ = 0;
  if (after_rebuild) settling_ = true;
}

bool ListenerWatch::Dead(int64_t accept_failures_logged) {
  const bool new_failure = accept_failures_logged > failures_seen_ && !settling_;
  settling_ = false;
  failures_seen_ = accept_failures_logged;
  if (fds_.empty()) Rescan();
  if (new_failure) return true;
  bool waiting = false;
  for (int fd : fds_) waiting |= AcceptQueueLength(fd) > 0;
  stuck_ = waiting ? stuck_ + 1 : 0;
  return stuck_ >= stuck_checks_;
}

int ListenerWatch::Release() {
  int released = 0;
  for (int fd : fds_) {
    // dup3 closes the socket and reuses its number atomically: no other thread can be handed
    // that number in between, and gRPC's later close() closes /dev/null instead.
    if (reserve_fd_ >= 0 && IsListenerOn(fd, port_) && dup3(reserve_fd_, fd, O_CLOEXEC) == fd) {
      ++released;
    }
  }
  fds_.clear();
  stuck_ = 0;
  return released;
}

}  // namespace xlstmd::server
