// The HTTP ops listener, spoken to over raw sockets (so malformed requests can be sent too).
#include "server/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <chrono>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/raw_http.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::server {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using ::xlstmd::testing::StatusIs;

// Sends `request` as is and returns everything the server sent until it closed (or 5 s);
// with `read_reply` false, closes right after sending (a client that gives up).
std::string RawExchange(int port, const std::string& request, bool read_reply = true) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    size_t sent = 0;
    while (sent < request.size()) {
      const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    char buf[4096];
    for (;;) {
      if (!read_reply) break;
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return out;
}

struct Reply {
  int status = 0;
  std::string head;
  std::string body;
};

Reply Request(int port, const std::string& method, const std::string& target,
              const std::string& extra_headers = "", const std::string& body = "") {
  const std::string raw =
      RawExchange(port, method + " " + target + " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n" +
                            extra_headers + "\r\n" + body);
  Reply r;
  const size_t split = raw.find("\r\n\r\n");
  r.head = raw.substr(0, split);
  if (split != std::string::npos) r.body = raw.substr(split + 4);
  if (raw.rfind("HTTP/1.1 ", 0) == 0 && raw.size() >= 12) r.status = std::stoi(raw.substr(9, 3));
  return r;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpServer::Handlers h;
    h.metrics = [this] {
      ++scrapes_;
      return std::string("# TYPE x_total counter\nx_total 1\n");
    };
    h.not_ready_reason = [this] {
      absl::MutexLock lock(&mu_);
      return not_ready_;
    };
    h.on_response = [this](const std::string& path, int status) {
      absl::MutexLock lock(&mu_);
      responses_.emplace_back(path, status);
    };
    absl::StatusOr<std::unique_ptr<HttpServer>> s = HttpServer::Start("127.0.0.1:0", std::move(h));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    port_ = server_->port();
  }

  // The server goes first: its connection threads report into the members below.
  void TearDown() override {
    if (server_ != nullptr) server_->Stop();
  }

  void SetNotReady(std::string reason) {
    absl::MutexLock lock(&mu_);
    not_ready_ = std::move(reason);
  }

  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
  std::atomic<int> scrapes_{0};
  absl::Mutex mu_;
  std::string not_ready_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, int>> responses_ ABSL_GUARDED_BY(mu_);
};

TEST_F(HttpServerTest, BindsAFreePortAndReportsIt) {
  EXPECT_GT(port_, 0);
  EXPECT_EQ(server_->address(), "127.0.0.1:" + std::to_string(port_));
}

TEST_F(HttpServerTest, MetricsIsPrometheusText) {
  const Reply r = Request(port_, "GET", "/metrics");
  EXPECT_EQ(r.status, 200) << r.head;
  EXPECT_THAT(r.head, HasSubstr("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
  EXPECT_EQ(r.body, "# TYPE x_total counter\nx_total 1\n");
  // A query string does not change the path.
  EXPECT_EQ(Request(port_, "GET", "/metrics?name[]=x").status, 200);
}

TEST_F(HttpServerTest, HeadHasNoBody) {
  const Reply r = Request(port_, "HEAD", "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "");
}

TEST_F(HttpServerTest, HealthAndReadiness) {
  Reply r = Request(port_, "GET", "/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  EXPECT_EQ(Request(port_, "GET", "/readyz").status, 200);
  SetNotReady("draining");
  r = Request(port_, "GET", "/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "not ready: draining\n");
  // Liveness never follows readiness: a draining process is alive.
  EXPECT_EQ(Request(port_, "GET", "/healthz").status, 200);
}

TEST_F(HttpServerTest, UnknownPathIs404AndWrongMethodIs405) {
  EXPECT_EQ(Request(port_, "GET", "/").status, 404);
  EXPECT_EQ(Request(port_, "GET", "/metrics/").status, 404);
  EXPECT_EQ(Request(port_, "GET", "/../etc/passwd").status, 404);
  for (const char* method : {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"}) {
    const Reply r = Request(port_, method, "/readyz", "Content-Length: 0\r\n");
    EXPECT_EQ(r.status, 405) << method;
    EXPECT_THAT(r.head, HasSubstr("Allow: GET, HEAD")) << method;
  }
  EXPECT_EQ(scrapes_.load(), 0);
}

TEST_F(HttpServerTest, MalformedRequestsNeverTakeItDown) {
  const std::vector<std::string> garbage = {
      "",
      "\r\n\r\n",
      "NOT HTTP AT ALL\r\n\r\n",
      "GET\r\n\r\n",
      "GET /metrics HTTP/9.9\r\n\r\n",
      std::string("GET /\0metrics HTTP/1.1\r\n\r\n", 27),
      "GET /" + std::string(100000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nX: " + std::string(100000, 'b') + "\r\n\r\n",
      "POST /metrics HTTP/1.1\r\nContent-Length: 100000000\r\n\r\nabc",
      "POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnope\r\n",
      "GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
      "\xff\xfe\xfd garbage \x01\x02\r\n\r\n",
  };
  for (const std::string& g : garbage) {
    // Whatever it makes of it, from a client that sends and leaves...
    RawExchange(port_, g, /*read_reply=*/false);
    // ...it still serves.
    ASSERT_EQ(Request(port_, "GET", "/healthz").status, 200) << "after: " << g.substr(0, 40);
  }
  // A body on a path that takes none is never read into memory: the answer is 405.
  EXPECT_THAT(RawExchange(port_,
                          "POST /metrics HTTP/1.1\r\nConnection: close\r\n"
                          "Content-Length: 100000000\r\n\r\nab"),
              StartsWith("HTTP/1.1 4"));
}

// Four clients that send one header line every 300 ms (never finishing their requests) hold a
// worker each; /healthz is still answered while they trickle.
TEST_F(HttpServerTest, SlowHeaderClientsDoNotStarveProbes) {
  std::atomic<bool> trickling{true};
  std::atomic<int> gave_up{0};  // slow clients that reached their own end (9 s)
  std::vector<std::thread> slow;
  for (int i = 0; i < 4; ++i) {
    slow.emplace_back([&] {
      const int fd = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(static_cast<uint16_t>(port_));
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
        const std::string start = "GET /healthz HTTP/1.1\r\n";
        send(fd, start.data(), start.size(), MSG_NOSIGNAL);
        int line = 0;
        for (; line < 30 && trickling; ++line) {
          std::this_thread::sleep_for(std::chrono::milliseconds(300));
          const std::string h = "X-Slow-" + std::to_string(line) + ": 1\r\n";
          send(fd, h.data(), h.size(), MSG_NOSIGNAL);
        }
        if (line == 30) gave_up.fetch_add(1);
      }
      close(fd);
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let them take workers
  const Reply r = Request(port_, "GET", "/healthz");
  const int done_before_reply = gave_up.load();
  trickling = false;
  for (std::thread& t : slow) t.join();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(done_before_reply, 0) << "/healthz was answered only after the slow clients left";
}

TEST_F(HttpServerTest, HeaderCapsAreEnforced) {
  std::string many;
  for (int i = 0; i < 40; ++i) many += "X-" + std::to_string(i) + ": 1\r\n";
  EXPECT_EQ(Request(port_, "GET", "/healthz", many).status, 431);
  EXPECT_EQ(Request(port_, "GET", "/healthz", "X: " + std::string(9000, 'a') + "\r\n").status,
            431);
  EXPECT_EQ(Request(port_, "GET", "/healthz").status, 200);
}

// Every connection the listener allows held open by idle clients: one more is answered 503
// at once (never queued), and once they leave the probes are served again.
TEST_F(HttpServerTest, ExhaustedConnectionsAre503AtOnceThenRecover) {
  std::vector<std::unique_ptr<xlstmd::testing::RawConnection>> idle;
  for (int i = 0; i < 32; ++i) {
    idle.push_back(std::make_unique<xlstmd::testing::RawConnection>(port_));
    ASSERT_TRUE(idle.back()->connected());
  }
  // Let the acceptor take them all.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto start = std::chrono::steady_clock::now();
  const Reply over = Request(port_, "GET", "/healthz");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(over.status, 503) << over.head;
  EXPECT_THAT(over.head, HasSubstr("Retry-After: 1"));
  EXPECT_LT(s, 1.0);
  idle.clear();
  int status = 0;
  for (int i = 0; i < 100 && status != 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    status = Request(port_, "GET", "/healthz").status;
  }
  EXPECT_EQ(status, 200);
}

TEST_F(HttpServerTest, EveryResponseIsReported) {
  Request(port_, "GET", "/metrics");
  Request(port_, "GET", "/nope");
  Request(port_, "POST", "/healthz", "Content-Length: 0\r\n");
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(responses_, ::testing::ElementsAre(std::pair<std::string, int>{"/metrics", 200},
                                                 std::pair<std::string, int>{"/nope", 404},
                                                 std::pair<std::string, int>{"/healthz", 405}));
}

TEST_F(HttpServerTest, StopIsIdempotentAndClosesThePort) {
  server_->Stop();
  server_->Stop();
  EXPECT_EQ(RawExchange(port_, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"), "");
}

TEST(HttpServerStartTest, APortInUseIsUnavailable) {
  absl::StatusOr<std::unique_ptr<HttpServer>> a = HttpServer::Start("127.0.0.1:0", {});
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<std::unique_ptr<HttpServer>> b =
      HttpServer::Start("127.0.0.1:" + std::to_string((*a)->port()), {});
  EXPECT_THAT(b, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot listen")));
}

TEST(HttpServerStartTest, MalformedAddressIsInvalidArgument) {
  EXPECT_THAT(HttpServer::Start("9090", {}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(HttpServer::Start("::1:9090", {}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(HttpServerStartTest, MissingHandlersStillAnswer) {
  absl::StatusOr<std::unique_ptr<HttpServer>> s = HttpServer::Start("127.0.0.1:0", {});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Request((*s)->port(), "GET", "/metrics").status, 200);
  EXPECT_EQ(Request((*s)->port(), "GET", "/readyz").status, 200);
}

}  // namespace
}  // namespace xlstmd::server
