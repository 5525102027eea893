// Keeping the gRPC port accepting through descriptor exhaustion.
//
// gRPC 1.51 (Debian 12) stops accepting on a listening socket for good after one accept4()
// error such as EMFILE: the socket stays bound, new connections pile up in its backlog and
// are never answered, while the rest of the process looks healthy. (gRPC 1.57 retries; this
// one does not.) The server watches for that (ListenerWatch) and, when it happens, frees the
// port and starts a new gRPC listener on it; until then /readyz fails.
#ifndef XLSTMD_SERVER_LISTENER_WATCH_H_
#define XLSTMD_SERVER_LISTENER_WATCH_H_

#include <cstdint>
#include <vector>

namespace xlstmd::server {

// Descriptors this process has open, and its soft limit (-1 when unknown). `exhausted` when
// counting failed for want of a descriptor.
struct DescriptorUse {
  int64_t open = -1;
  int64_t limit = -1;
  bool exhausted = false;
};
DescriptorUse CountDescriptors();

// The listening TCP sockets of this process bound to `port` (any address). Works without a
// free descriptor (it then probes descriptor numbers instead of reading /proc/self/fd).
std::vector<int> FindListeningSockets(int port);

// Connections waiting to be accepted on listening socket `fd` (TCP_INFO's accept-queue
// length), or -1 when `fd` is not a listening TCP socket.
int AcceptQueueLength(int fd);

// Watches the listening sockets of one port. Call Check once per period (a second or so).
// Not thread-safe: one watcher thread.
class ListenerWatch {
 public:
  // `accept_failures_logged` is the current count of gRPC's accept-failure log lines: only
  // later ones count. Holds one descriptor (/dev/null) in reserve for Release.
  ListenerWatch(int port, int64_t accept_failures_logged, int stuck_checks = 10);
  ~ListenerWatch();
  ListenerWatch(const ListenerWatch&) = delete;
  ListenerWatch& operator=(const ListenerWatch&) = delete;

  // Looks for the port's listening sockets again. `after_rebuild` (a new listener started
  // after Release): accept failures logged before the next check are not counted, since the
  // released listener may still log one for its socket number (now /dev/null), and that
  // must not condemn its successor.
  void Rescan(bool after_rebuild = false);
  // Whether the listener has stopped accepting: gRPC logged an accept failure since the last
  // check, or connections waited in the accept queue at `stuck_checks` checks in a row (gRPC
  // drains it within milliseconds while it accepts; but a burst of connections to a daemon
  // slowed by sanitizers kept it non-empty for 3 s, hence 10 by default).
  bool Dead(int64_t accept_failures_logged);
  // Closes the listening sockets by putting the reserved /dev/null at their descriptor
  // numbers, so the port is free for a new listener while the numbers stay valid for gRPC,
  // which still owns them and closes them at shutdown. Returns how many were replaced.
  int Release();

 private:
  const int port_;
  const int stuck_checks_;
  int reserve_fd_ = -1;
  std::vector<int> fds_;
  int stuck_ = 0;
  int64_t failures_seen_ = 0;
  bool settling_ = false;  // the first check after a rebuild only records the failure count
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_LISTENER_WATCH_H_
