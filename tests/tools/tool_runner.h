// Test helpers for the `xlstm` tool tests: run the built binary (XLSTMD_BIN_DIR/xlstm) with
// arguments (and optionally stdin text and extra environment variables), capturing exit code,
// stdout and stderr separately; a self-cleaning temp dir. Test-only, header-only;
// single-threaded use.
#ifndef XLSTMD_TESTS_TOOLS_TOOL_RUNNER_H_
#define XLSTMD_TESTS_TOOLS_TOOL_RUNNER_H_

#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include "gtest/gtest.h"

extern char** environ;

namespace xlstmd::testing {

inline std::string ReadWholeFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A fresh directory under gtest's TempDir(), removed with its contents on destruction.
class ToolTempDir {
 public:
  ToolTempDir() {
    std::string tmpl = ::testing::TempDir() + "xlstm_tool_test_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << tmpl;
    path_ = tmpl;
  }
  ~ToolTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ToolTempDir(const ToolTempDir&) = delete;
  ToolTempDir& operator=(const ToolTempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct ToolResult {
  int exit_code = -1;  // -1: did not exit normally
  std::string out;
  std::string err;
  // Number of '\n'-terminated lines in err.
  int ErrLines() const {
    int n = 0;
    for (char c : err) n += c == '\n';
    return n;
  }
};

inline std::string ToolPath() { return std::string(XLSTMD_BIN_DIR) + "/xlstm"; }

struct RunToolOptions {
  std::string input;             // the tool's stdin (empty: an empty stdin)
  std::vector<std::string> env;  // "NAME=value" entries added to (or overriding) the environment
};

// Runs `xlstm args...` and waits for it; stdin/stdout/stderr go through temp files.
inline ToolResult RunTool(const std::vector<std::string>& args,
                          const RunToolOptions& options = {}) {
  ToolResult r;
  ToolTempDir io;
  const std::string in_path = (io.path() / "stdin").string();
  const std::string out_path = (io.path() / "stdout").string();
  const std::string err_path = (io.path() / "stderr").string();
  std::ofstream(in_path, std::ios::binary) << options.input;
  std::vector<std::string> argv_storage = {ToolPath()};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_storage = options.env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const std::string& o : options.env) overridden |= o.rfind(name + "=", 0) == 0;
    if (!overridden) env_storage.push_back(entry);
  }
  std::vector<char*> envp;
  for (std::string& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, in_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << argv[0] << " failed: " << rc;
    return r;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.out = ReadWholeFile(out_path);
  r.err = ReadWholeFile(err_path);
  return r;
}

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_TOOLS_TOOL_RUNNER_H_
