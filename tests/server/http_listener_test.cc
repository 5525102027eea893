// The daemon's own HTTP/1.1 server: the head parser on its own, then a listener spoken to
// over raw sockets (keep-alive, pipelining, bodies, streaming, limits, deadlines, stop).
#include "server/http_listener.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/raw_http.h"

namespace xlstmd::server {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using ::xlstmd::testing::RawConnection;

HeadParse Parse(const std::string& head, HttpRequest* out, HttpLimits limits = {}) {
  return ParseRequestHead(head, limits, out);
}

TEST(HttpParseTest, AValidHead) {
  HttpRequest r;
  const HeadParse p = Parse(
      "POST /v1/chat?x=1&y HTTP/1.1\r\nHost: a\r\nContent-Type:  application/json \r\n"
      "Content-Length: 12\r\nX-Empty:\r\n",
      &r);
  ASSERT_EQ(p.status, 0) << p.error;
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.path, "/v1/chat");
  EXPECT_EQ(r.query, "x=1&y");
  EXPECT_EQ(r.minor_version, 1);
  EXPECT_EQ(p.content_length, 12u);
  ASSERT_NE(r.header("content-type"), nullptr);
  EXPECT_EQ(*r.header("content-type"), "application/json");
  EXPECT_EQ(*r.header("x-empty"), "");
  EXPECT_EQ(r.header("Content-Type"), nullptr) << "lookups use lower-case names";
  EXPECT_TRUE(r.keep_alive());
}

TEST(HttpParseTest, KeepAliveFollowsTheVersionAndConnectionHeader) {
  HttpRequest r;
  ASSERT_EQ(Parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n", &r).status, 0);
  EXPECT_FALSE(r.keep_alive());
  ASSERT_EQ(Parse("GET / HTTP/1.0\r\n", &r).status, 0);
  EXPECT_FALSE(r.keep_alive());
  ASSERT_EQ(Parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n", &r).status, 0);
  EXPECT_TRUE(r.keep_alive());
}

// A NUL inside a header value (a literal with an embedded NUL: its length from sizeof).
constexpr char kNulInValue[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n";

TEST(HttpParseTest, RefusesWhatItDoesNotFullyUnderstand) {
  struct Case {
    std::string head;
    int status;
  };
  const std::vector<Case> cases = {
      {"GET / HTTP/1.1\r\n", 400},                                      // no Host
      {"GET / HTTP/2.0\r\nHost: a\r\n", 505},
      {"GET / FTP/1.1\r\nHost: a\r\n", 400},
      {"GET  / HTTP/1.1\r\nHost: a\r\n", 400},                          // two spaces
      {"GET http://a/ HTTP/1.1\r\nHost: a\r\n", 400},                   // absolute form
      {"G(T / HTTP/1.1\r\nHost: a\r\n", 400},
      {"GET /\x01 HTTP/1.1\r\nHost: a\r\n", 400},
      {"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n", 400},                   // raw UTF-8 in the path
      {"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n", 400},                // obs-fold
      {"GET / HTTP/1.1\r\nHost : a\r\n", 400},                          // blank before ':'
      {"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n", 400},                // bare CR in a value
      {std::string(kNulInValue, sizeof(kNulInValue) - 1), 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n", 411},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n", 413},
      {"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n", 417},
  };
  for (const Case& c : cases) {
    HttpRequest r;
    EXPECT_EQ(Parse(c.head, &r).status, c.status) << c.head;
  }
}

TEST(HttpParseTest, HeaderCapsAre431) {
  HttpLimits limits;
  limits.max_headers = 3;
  limits.max_header_bytes = 100;
  HttpRequest r;
  EXPECT_EQ(Parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n", &r, limits).status, 0);
  EXPECT_EQ(Parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n", &r, limits).status,
            431);
  EXPECT_EQ(Parse("GET / HTTP/1.1\r\nHost: " + std::string(100, 'a') + "\r\n", &r, limits).status,
            431);
}

// ---- the listener ----

class HttpListenerTest : public ::testing::Test {
 protected:
  // The listener goes first: its connection threads run Handle on this fixture.
  void TearDown() override {
    if (listener_ != nullptr) listener_->Stop(absl::ZeroDuration());
  }

  void StartListener(HttpListenerOptions options = {}) {
    absl::StatusOr<std::unique_ptr<HttpListener>> l = HttpListener::Start(
        "127.0.0.1:0", std::move(options),
        [this](const HttpRequest& req, HttpResponse& res) { Handle(req, res); });
    ASSERT_TRUE(l.ok()) << l.status();
    listener_ = *std::move(l);
  }

  void Handle(const HttpRequest& req, HttpResponse& res) {
    if (req.path == "/echo") {
      res.Send(200, "text/plain", absl::StrCat(req.method, " ", req.body));
    } else if (req.path == "/stream") {
      // Three pieces, then (with ?forever) one every 10 ms until the client or a stop ends it.
      if (!res.StartStream(200, "text/event-stream")) return;
      for (int i = 0; i < 3; ++i) res.Write(absl::StrCat("piece ", i, "\n"));
      while (req.query == "forever" && !res.stopping()) {
        if (res.PeerGone() || !res.Write("tick\n")) {
          peer_gone_.store(true);
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      stream_ended_by_stop_.store(res.stopping());
    } else if (req.path == "/silent") {
      // Sends nothing: the listener answers 500 for it.
    } else {
      res.Send(404, "text/plain", "no\n");
    }
  }

  std::unique_ptr<HttpListener> listener_;
  std::atomic<bool> peer_gone_{false};
  std::atomic<bool> stream_ended_by_stop_{false};
};

TEST_F(HttpListenerTest, KeepAliveAndPipelining) {
  StartListener();
  RawConnection c(listener_->port());
  ASSERT_TRUE(c.connected());
  // Two requests in one write, a third after the answers.
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                     "GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_THAT(c.ReadUntil("POST abc"), StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(c.ReadUntil("GET "), HasSubstr("Content-Length: 4\r\n"));
  ASSERT_TRUE(c.Send("GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
  bool closed = false;
  const std::string last = c.ReadToClose(5000, &closed);
  EXPECT_THAT(last, StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(last, HasSubstr("Connection: close\r\n"));
  EXPECT_TRUE(closed);
}

TEST_F(HttpListenerTest, ExpectContinueGetsA100First) {
  StartListener();
  RawConnection c(listener_->port());
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                     "Expect: 100-continue\r\n\r\n"));
  EXPECT_EQ(c.ReadUntil("\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(c.Send("hi"));
  EXPECT_THAT(c.ReadUntil("POST hi"), StartsWith("HTTP/1.1 200"));
}

TEST_F(HttpListenerTest, StreamsAreChunkedOn11AndCloseDelimitedOn10) {
  StartListener();
  {
    RawConnection c(listener_->port());
    ASSERT_TRUE(c.Send("GET /stream HTTP/1.1\r\nHost: a\r\n\r\n"));
    const std::string got = c.ReadUntil("0\r\n\r\n");
    EXPECT_THAT(got, HasSubstr("Transfer-Encoding: chunked\r\n"));
    EXPECT_THAT(got, HasSubstr("\r\n\r\n8\r\npiece 0\n\r\n8\r\npiece 1\n\r\n8\r\npiece 2\n\r\n"
                               "0\r\n\r\n"));
    // The connection stays usable after a stream.
    ASSERT_TRUE(c.Send("GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"));
    EXPECT_THAT(c.ReadUntil("GET "), StartsWith("HTTP/1.1 200"));
  }
  RawConnection c(listener_->port());
  ASSERT_TRUE(c.Send("GET /stream HTTP/1.0\r\n\r\n"));
  bool closed = false;
  const std::string got = c.ReadToClose(5000, &closed);
  EXPECT_TRUE(closed);
  EXPECT_THAT(got, ::testing::EndsWith("\r\n\r\npiece 0\npiece 1\npiece 2\n"));
  EXPECT_THAT(got, ::testing::Not(HasSubstr("chunked")));
}

TEST_F(HttpListenerTest, AHandlerThatSendsNothingIs500) {
  StartListener();
  RawConnection c(listener_->port());
  ASSERT_TRUE(c.Send("GET /silent HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_THAT(c.ReadToClose(), StartsWith("HTTP/1.1 500"));
}

TEST_F(HttpListenerTest, AWholeRequestDeadlineEndsTricklingClients) {
  HttpListenerOptions o;
  o.request_timeout = absl::Milliseconds(500);
  StartListener(o);
  RawConnection c(listener_->port());
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(c.Send("GET /echo HTTP/1.1\r\n"));
  std::string got;
  // One header line every 100 ms: every read is quick, the request never completes.
  for (int i = 0; i < 30 && got.empty(); ++i) {
    c.Send(absl::StrCat("X-", i, ": 1\r\n"));
    got = c.ReadUntil("\r\n\r\n", 100);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_THAT(got, StartsWith("HTTP/1.1 408"));
  EXPECT_LT(s, 2.0);
}

TEST_F(HttpListenerTest, OneConnectionOverTheCapIs503AtOnce) {
  HttpListenerOptions o;
  o.max_connections = 2;
  StartListener(o);
  RawConnection a(listener_->port()), b(listener_->port());
  ASSERT_TRUE(a.Send("GET /stream?forever HTTP/1.1\r\nHost: a\r\n\r\n"));
  ASSERT_TRUE(b.Send("GET /stream?forever HTTP/1.1\r\nHost: a\r\n\r\n"));
  a.ReadUntil("piece 2");
  b.ReadUntil("piece 2");
  RawConnection c(listener_->port());
  const std::string got = c.ReadToClose(2000);
  EXPECT_THAT(got, StartsWith("HTTP/1.1 503"));
  EXPECT_THAT(got, HasSubstr("Retry-After: 1\r\n"));
}

TEST_F(HttpListenerTest, AStreamNoticesItsClientLeaving) {
  StartListener();
  {
    RawConnection c(listener_->port());
    ASSERT_TRUE(c.Send("GET /stream?forever HTTP/1.1\r\nHost: a\r\n\r\n"));
    c.ReadUntil("tick");
  }
  for (int i = 0; i < 200 && !peer_gone_.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(peer_gone_.load());
  for (int i = 0; i < 200 && listener_->connections() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(listener_->connections(), 0);
}

TEST_F(HttpListenerTest, StopEndsIdleConnectionsAtOnceAndLetsStreamsFinish) {
  StartListener();
  RawConnection idle(listener_->port());
  ASSERT_TRUE(idle.Send("GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"));
  idle.ReadUntil("GET ");
  RawConnection streaming(listener_->port());
  ASSERT_TRUE(streaming.Send("GET /stream?forever HTTP/1.1\r\nHost: a\r\n\r\n"));
  streaming.ReadUntil("tick");
  const auto start = std::chrono::steady_clock::now();
  listener_->Stop(absl::Seconds(5));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(s, 2.0) << "the idle connection held the stop";
  EXPECT_TRUE(stream_ended_by_stop_.load());
  bool closed = false;
  EXPECT_THAT(streaming.ReadToClose(2000, &closed), HasSubstr("0\r\n\r\n"));
  EXPECT_TRUE(closed);
  EXPECT_EQ(listener_->connections(), 0);
  RawConnection after(listener_->port());
  EXPECT_FALSE(after.connected() && after.Send("GET /echo HTTP/1.1\r\nHost: a\r\n\r\n") &&
               !after.ReadToClose(1000).empty());
}

}  // namespace
}  // namespace xlstmd::server
