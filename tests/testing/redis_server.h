// A real redis-server (Debian's /usr/bin/redis-server, or $XLSTMD_REDIS_SERVER) for tests, on a
// free loopback port and a unix socket in a caller's temp directory, with persistence off. The
// destructor kills it. A missing binary is FAILED_PRECONDITION, which tests report as a failure,
// not a skip: CI installs redis-server through scripts/bootstrap.sh.
//
// Kill/Restart/Pause/Resume let tests cut the server away (connections see EOF, then refused),
// bring it back on the same port with an empty dataset, or stall it (SIGSTOP: connections stay
// open and replies never come). Test-only; not thread-safe.
#ifndef XLSTMD_TESTS_TESTING_REDIS_SERVER_H_
#define XLSTMD_TESTS_TESTING_REDIS_SERVER_H_

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace xlstmd::testing {

class RedisServer {
 public:
  // `dir` holds the server's log (redis.log, quoted in startup errors) and socket (redis.sock).
  // `extra_args` are appended to the command line, e.g. {"--requirepass", "pw"}.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(
      std::filesystem::path dir, std::vector<std::string> extra_args = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string url() const;  // redis://127.0.0.1:<port>
  std::filesystem::path unix_socket() const { return dir_ / "redis.sock"; }
  pid_t pid() const { return pid_; }

  // SIGKILL and reap. Idempotent.
  void Kill();
  // Kill() if running, then start again on the same port (fails if the port was taken meanwhile).
  absl::Status Restart();
  void Pause();   // SIGSTOP
  void Resume();  // SIGCONT

  static std::string BinaryPath();

 private:
  RedisServer(std::filesystem::path dir, std::vector<std::string> extra_args)
      : dir_(std::move(dir)), extra_args_(std::move(extra_args)) {}
  // Spawns on `port` and waits until it answers PING; UNAVAILABLE if the child exits first
  // (e.g. the port was taken), DEADLINE_EXCEEDED if it never becomes ready.
  absl::Status SpawnOn(int port);

  std::filesystem::path dir_;
  std::vector<std::string> extra_args_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// A loopback TCP port that was free a moment ago (bind to port 0, read it, close). Another
// process may take it before the caller binds: callers retry.
int PickFreeLoopbackPort();

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_TESTING_REDIS_SERVER_H_
