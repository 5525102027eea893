// Test helpers for the Redis tier: RawRedis, a plain hiredis connection for looking at and
// damaging keys behind RedisStore's back, and FakeRedis, a loopback server that answers every
// command with one canned (possibly malformed) reply. Test-only.
#ifndef XLSTMD_TESTS_STATE_REDIS_TESTUTIL_H_
#define XLSTMD_TESTS_STATE_REDIS_TESTUTIL_H_

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace xlstmd::testing {

// A plain hiredis connection for looking at and damaging keys behind the store's back.
class RawRedis {
 public:
  explicit RawRedis(int port) : ctx_(redisConnect("127.0.0.1", port)) {}
  ~RawRedis() {
    if (ctx_ != nullptr) redisFree(ctx_);
  }
  // Runs a command; returns the reply as text ("(nil)", integers in decimal, arrays joined by
  // '\n'), or "ERR:<message>".
  std::string Run(std::vector<std::string> args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(args.size()), argv.data(), lens.data()));
    if (r == nullptr) return "IOERR";
    std::string out = Text(r);
    freeReplyObject(r);
    return out;
  }
  // Sorted key names matching `pattern`.
  std::vector<std::string> Keys(const std::string& pattern) {
    std::string all = Run({"KEYS", pattern});
    std::vector<std::string> keys;
    size_t start = 0;
    while (start < all.size()) {
      size_t end = all.find('\n', start);
      if (end == std::string::npos) end = all.size();
      keys.push_back(all.substr(start, end - start));
      start = end + 1;
    }
    std::sort(keys.begin(), keys.end());
    return keys;
  }

 private:
  static std::string Text(const redisReply* r) {
    switch (r->type) {
      case REDIS_REPLY_STRING:
      case REDIS_REPLY_STATUS:
        return std::string(r->str, r->len);
      case REDIS_REPLY_ERROR:
        return "ERR:" + std::string(r->str, r->len);
      case REDIS_REPLY_INTEGER:
        return std::to_string(r->integer);
      case REDIS_REPLY_NIL:
        return "(nil)";
      case REDIS_REPLY_ARRAY: {
        std::string out;
        for (size_t i = 0; i < r->elements; ++i) {
          if (i > 0) out += "\n";
          out += Text(r->element[i]);
        }
        return out;
      }
    }
    return "?";
  }
  redisContext* ctx_;
};

// A fake server: PING gets +PONG, every other command gets the same canned reply (after which
// the server hangs up, with `hang_up_after_reply`).
class FakeRedis {
 public:
  explicit FakeRedis(std::string reply, bool hang_up_after_reply = false)
      : reply_(std::move(reply)), hang_up_(hang_up_after_reply) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 16), 0);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeRedis() {
    stop_ = true;
    thread_.join();
    for (auto& [fd, buf] : clients_) ::close(fd);
    ::close(listen_fd_);
  }
  int port() const { return port_; }

 private:
  // Parses one RESP request (an array of bulk strings) from the front of `buf`: its first
  // argument and the bytes consumed, or 0 when incomplete.
  static size_t ParseCommand(const std::string& buf, std::string* name) {
    size_t pos = 0;
    auto line = [&](char type, long* value) {
      if (pos >= buf.size() || buf[pos] != type) return false;
      const size_t end = buf.find("\r\n", pos);
      if (end == std::string::npos) return false;
      *value = std::stol(buf.substr(pos + 1, end - pos - 1));
      pos = end + 2;
      return true;
    };
    long n = 0;
    if (!line('*', &n)) return 0;
    for (long i = 0; i < n; ++i) {
      long len = 0;
      if (!line('$', &len) || buf.size() < pos + len + 2) return 0;
      if (i == 0) *name = buf.substr(pos, len);
      pos += len + 2;
    }
    return pos;
  }
  void Serve() {
    while (!stop_) {
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}};
      for (auto& [fd, buf] : clients_) fds.push_back({fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) clients_.push_back({c, ""});
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP))) continue;
        auto& [fd, buf] = clients_[i - 1];
        char chunk[65536];
        const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
        if (n <= 0) {
          ::close(fd);
          fd = -1;
          continue;
        }
        buf.append(chunk, static_cast<size_t>(n));
        std::string name;
        while (size_t used = ParseCommand(buf, &name)) {
          buf.erase(0, used);
          const std::string& out = name == "PING" ? std::string("+PONG\r\n") : reply_;
          ::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
          if (hang_up_ && name != "PING") {
            ::close(fd);
            fd = -1;
            break;
          }
        }
      }
      clients_.erase(std::remove_if(clients_.begin(), clients_.end(),
                                    [](const auto& c) { return c.first < 0; }),
                     clients_.end());
    }
  }
  const std::string reply_;
  const bool hang_up_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<std::pair<int, std::string>> clients_;  // Serve's thread only
  std::thread thread_;
};

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_STATE_REDIS_TESTUTIL_H_
