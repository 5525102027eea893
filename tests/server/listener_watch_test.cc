// listener_watch.h on real sockets: finding a port's listening sockets, reading its accept
// queue, declaring it dead when connections wait unaccepted, and releasing the port.
#include "server/listener_watch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace xlstmd::server {
namespace {

// A listening socket on 127.0.0.1:<free port> that nobody accepts on (like the abandoned one).
struct Listener {
  int fd = -1;
  int port = 0;
  Listener() {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(fd, 16), 0);
    socklen_t len = sizeof(a);
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~Listener() { close(fd); }
  int Connect() const {
    const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    EXPECT_EQ(connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return c;
  }
};

TEST(ListenerWatchTest, FindsTheListenerAndItsQueue) {
  Listener l;
  EXPECT_EQ(FindListeningSockets(l.port), std::vector<int>{l.fd});
  EXPECT_EQ(AcceptQueueLength(l.fd), 0);
  const int c = l.Connect();
  EXPECT_EQ(AcceptQueueLength(l.fd), 1);
  close(c);
  EXPECT_EQ(AcceptQueueLength(STDIN_FILENO), -1);
  const DescriptorUse use = CountDescriptors();
  EXPECT_GT(use.open, 2);
  EXPECT_FALSE(use.exhausted);
}

// After a rebuild the released listener may log one more accept failure (for its socket
// number, now /dev/null): the first check after Rescan(after_rebuild) records the count
// without condemning the new listener; later failures count again.
TEST(ListenerWatchTest, AFailureLoggedAcrossARebuildIsNotTheNewListeners) {
  Listener l;
  ListenerWatch watch(l.port, /*accept_failures_logged=*/0);
  EXPECT_TRUE(watch.Dead(1));
  watch.Rescan(/*after_rebuild=*/true);
  EXPECT_FALSE(watch.Dead(2));
  EXPECT_FALSE(watch.Dead(2));
  EXPECT_TRUE(watch.Dead(3));
  watch.Rescan();  // a plain rescan does not forgive
  EXPECT_TRUE(watch.Dead(4));
}

TEST(ListenerWatchTest, ConnectionsLeftWaitingMeanDeadAndReleaseFreesThePort) {
  Listener l;
  ListenerWatch watch(l.port, /*accept_failures_logged=*/0, /*stuck_checks=*/3);
  EXPECT_FALSE(watch.Dead(0));  // idle: nothing waits
  const int c = l.Connect();
  EXPECT_FALSE(watch.Dead(0));
  EXPECT_FALSE(watch.Dead(0));
  EXPECT_TRUE(watch.Dead(0));  // the third check in a row with a connection waiting
  EXPECT_EQ(watch.Release(), 1);
  EXPECT_TRUE(FindListeningSockets(l.port).empty());
  // The number is still open (now /dev/null), so the owner's later close() is harmless, and
  // the port can be bound again (as gRPC does: SO_REUSEADDR, not SO_REUSEPORT).
  EXPECT_GE(fcntl(l.fd, F_GETFD), 0);
  const int again = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int yes = 1;
  setsockopt(again, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(l.port));
  EXPECT_EQ(bind(again, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << "the port is still held";
  close(again);
  close(c);
}

TEST(ListenerWatchTest, AnAcceptFailureLoggedSinceTheLastCheckMeansDead) {
  Listener l;
  ListenerWatch watch(l.port, /*accept_failures_logged=*/5);
  EXPECT_FALSE(watch.Dead(5));  // failures from before the watch began do not count
  EXPECT_TRUE(watch.Dead(6));
  EXPECT_FALSE(watch.Dead(6));
}

}  // namespace
}  // namespace xlstmd::server
