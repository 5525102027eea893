#include "tests/testing/redis_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <thread>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace xlstmd::testing {
namespace {

constexpr int kStartAttempts = 8;
constexpr auto kReadyTimeout = std::chrono::seconds(10);

// Connects to 127.0.0.1:port and checks that a Redis server answers PING.
bool Pings(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    static constexpr char kPing[] = "*1\r\n$4\r\nPING\r\n";
    if (::send(fd, kPing, sizeof(kPing) - 1, MSG_NOSIGNAL) == sizeof(kPing) - 1) {
      pollfd p = {fd, POLLIN, 0};
      char buf[16] = {};
      if (::poll(&p, 1, 1000) == 1 && ::recv(fd, buf, sizeof(buf) - 1, 0) >= 7) {
        // A password-protected server answers -NOAUTH: it is up all the same.
        ok = std::string_view(buf, 5) == "+PONG" || std::string_view(buf, 7) == "-NOAUTH";
      }
    }
  }
  ::close(fd);
  return ok;
}

std::string Tail(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > 2000 ? text.substr(text.size() - 2000) : text;
}

}  // namespace

int PickFreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

std::string RedisServer::BinaryPath() {
  const char* env = std::getenv("XLSTMD_REDIS_SERVER");
  return env != nullptr && env[0] != '\0' ? env : "/usr/bin/redis-server";
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(
    std::filesystem::path dir, std::vector<std::string> extra_args) {
  const std::string binary = BinaryPath();
  if (::access(binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(binary,
                     " not found: these tests need a real Redis. Install the Debian package "
                     "redis-server (scripts/bootstrap.sh does), or set XLSTMD_REDIS_SERVER."));
  }
  std::unique_ptr<RedisServer> server(new RedisServer(std::move(dir), std::move(extra_args)));
  absl::Status last;
  // The port is free when picked but may be taken before redis binds it: retry on another.
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    const int port = PickFreeLoopbackPort();
    if (port == 0) return absl::InternalError("cannot pick a free loopback port");
    last = server->SpawnOn(port);
    if (last.ok()) return server;
    if (!absl::IsUnavailable(last)) break;
  }
  return last;
}

absl::Status RedisServer::SpawnOn(int port) {
  std::error_code ec;
  std::filesystem::remove(unix_socket(), ec);
  const std::string log = (dir_ / "redis.log").string();
  std::vector<std::string> args = {BinaryPath(),
                                   "--bind",
                                   "127.0.0.1",
                                   "--port",
                                   std::to_string(port),
                                   "--unixsocket",
                                   unix_socket().string(),
                                   "--unixsocketperm",
                                   "700",
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--daemonize",
                                   "no",
                                   "--dir",
                                   dir_.string(),
                                   "--logfile",
                                   log};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  // posix_spawn, not fork: the test process has threads.
  const int rc = ::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
  if (rc != 0) return absl::InternalError(absl::StrCat("posix_spawn redis-server: errno ", rc));
  const auto deadline = std::chrono::steady_clock::now() + kReadyTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int wstatus = 0;
    if (::waitpid(pid, &wstatus, WNOHANG) == pid) {
      return absl::UnavailableError(
          absl::StrCat("redis-server exited during startup on port ", port, "; log:\n", Tail(log)));
    }
    // The unix socket is bound after the TCP port, by this child only: together with a PONG
    // it proves the server answering on `port` is ours, not a process that took the port.
    if (std::filesystem::exists(unix_socket(), ec) && Pings(port)) {
      pid_ = pid;
      port_ = port;
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return absl::DeadlineExceededError(
      absl::StrCat("redis-server did not answer PING on port ", port, "; log:\n", Tail(log)));
}

RedisServer::~RedisServer() { Kill(); }

std::string RedisServer::url() const { return absl::StrCat("redis://127.0.0.1:", port_); }

void RedisServer::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

absl::Status RedisServer::Restart() {
  Kill();
  return SpawnOn(port_);
}

void RedisServer::Pause() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

void RedisServer::Resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

}  // namespace xlstmd::testing
