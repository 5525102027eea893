// The real xlstmd for the gRPC client tests: XLSTMD_BIN_DIR/xlstmd on 127.0.0.1:0 serving the
// golden model (or another), started once per test suite, plus the small text helpers those
// tests share. Header-only: each test file of the `xlstm` clients includes it.
#ifndef XLSTMD_TESTS_TOOLS_DAEMON_RUNNER_H_
#define XLSTMD_TESTS_TOOLS_DAEMON_RUNNER_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/golden.h"
#include "tests/tools/tool_runner.h"

namespace xlstmd::testing {

using Clock = std::chrono::steady_clock;

inline double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

inline std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

inline std::vector<std::string> LinesStartingWith(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  for (const std::string& l : Lines(text)) {
    if (l.rfind(prefix, 0) == 0) out.push_back(l);
  }
  return out;
}

// The integer after `key=` in `line`, or -1.
inline int64_t Field(const std::string& line, const std::string& key) {
  const size_t at = line.find(" " + key + "=");
  if (at == std::string::npos) return -1;
  return std::stoll(line.substr(at + key.size() + 2));
}

inline RunToolOptions WithInput(std::string input) {
  RunToolOptions o;
  o.input = std::move(input);
  return o;
}

inline RunToolOptions WithEnv(std::vector<std::string> env) {
  RunToolOptions o;
  o.env = std::move(env);
  return o;
}

inline std::string DaemonPath() { return std::string(XLSTMD_BIN_DIR) + "/xlstmd"; }

// XLSTMD_BIN_DIR/xlstmd on 127.0.0.1:0 with `model`; stops it (SIGTERM) on destruction.
class Daemon {
 public:
  explicit Daemon(std::vector<std::string> extra_args,
                  std::filesystem::path model = GoldenDir("xlstm-large-a1")) {
    if (!std::filesystem::exists(DaemonPath())) {
      error_ = "no daemon binary at " + DaemonPath() + " (build the xlstmd target)";
      return;
    }
    log_ = dir_.path() / "xlstmd.log";
    std::vector<std::string> args = {
        DaemonPath(), "--model",          model.string(),
        "--listen",   "127.0.0.1:0",      "--threads",
        "1",          "--grace-period", "5s"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      error_ = "posix_spawn " + DaemonPath() + " failed";
      pid_ = -1;
      return;
    }
    const Clock::time_point start = Clock::now();
    while (SecondsSince(start) < 120) {
      for (const std::string& line : Lines(ReadWholeFile(log_))) {
        size_t at = line.find("listen=");
        while (at != std::string::npos && at > 0 && line[at - 1] != ' ') {
          at = line.find("listen=", at + 1);
        }
        if (at == std::string::npos) continue;
        std::string addr = line.substr(at + 7);
        addr = addr.substr(0, addr.find_first_of(" \t,\"'"));
        if (!addr.empty()) {
          address_ = addr;
          return;
        }
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        error_ = "xlstmd exited before serving; its log:\n" + ReadWholeFile(log_);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    error_ = "xlstmd logged no listen= line within 120 s; its log:\n" + ReadWholeFile(log_);
  }

  ~Daemon() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const Clock::time_point start = Clock::now();
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (SecondsSince(start) > 20) {
        ADD_FAILURE() << "xlstmd did not exit within 20 s of SIGTERM";
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // "" once serving, else what went wrong.
  const std::string& error() const { return error_; }
  const std::string& address() const { return address_; }
  std::string Log() const { return ReadWholeFile(log_); }
  const std::filesystem::path& dir() const { return dir_.path(); }

 private:
  ToolTempDir dir_;
  std::filesystem::path log_;
  pid_t pid_ = -1;
  std::string address_;
  std::string error_;
};

class DaemonClientTest : public ::testing::Test {
 protected:
  // Turn checkpoints: `xlstm sessions rewind` needs them.
  static void SetUpTestSuite() { daemon_ = new Daemon({"--keep-turn-checkpoints", "4"}); }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override { ASSERT_EQ(daemon_->error(), ""); }
  void TearDown() override {
    if (HasFailure()) std::cerr << "xlstmd log:\n" << daemon_->Log();
  }
  static const std::string& Addr() { return daemon_->address(); }

  static inline Daemon* daemon_ = nullptr;
};

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_TOOLS_DAEMON_RUNNER_H_
