// `xlstm chat` and `xlstm loadgen`, the gRPC clients of the tool: flag validation and --help,
// a clear one-line error (quickly) when the server is unreachable, and runs against the real
// daemon (XLSTMD_BIN_DIR/xlstmd serving the golden model xlstm-large-a1 on a free loopback
// port). A missing daemon binary is a failure, never a skip.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/golden.h"
#include "tests/tools/daemon_runner.h"
#include "tests/tools/tool_runner.h"

namespace xlstmd::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// A loopback TCP socket bound to a free port; listening (accepting nothing) when asked.
class LoopbackSocket {
 public:
  explicit LoopbackSocket(bool listen) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
        (listen && ::listen(fd_, 16) != 0)) {
      ADD_FAILURE() << "cannot set up a loopback socket";
    }
    port_ = ntohs(addr.sin_port);
  }
  ~LoopbackSocket() { Close(); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(GrpcClientCliTest, TopLevelHelpListsChatAndLoadgen) {
  const ToolResult r = RunTool({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("chat"));
  EXPECT_THAT(r.out, HasSubstr("loadgen"));
  EXPECT_THAT(r.out, HasSubstr("sessions"));
  EXPECT_THAT(r.out, HasSubstr("info"));
}

TEST(GrpcClientCliTest, HelpListsEveryFlag) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"chat",
       {"--server", "--session", "--message", "--system", "--api-key", "--max-tokens",
        "--temperature", "--seed", "--connect-timeout", "--keep", "XLSTMD_API_KEY", "/new",
        "/fork", "/quit", "/help", "//text", "130"}},
      {"loadgen",
       {"--server", "--sessions", "--turns", "--prompt-tokens", "--max-tokens", "--replay",
        "--seed", "--api-key", "--temperature", "--connect-timeout"}},
  };
  for (const auto& [cmd, flags] : cases) {
    SCOPED_TRACE(cmd);
    const ToolResult r = RunTool({cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.err, "");
    EXPECT_THAT(r.out, StartsWith("usage: xlstm " + cmd));
    for (const std::string& f : flags) EXPECT_THAT(r.out, HasSubstr(f));
  }
}

// Every client defaults to the daemon's default address on this machine.
TEST(GrpcClientCliTest, ServerDefaultsToTheLocalDaemon) {
  for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
           {"chat"}, {"loadgen"}, {"sessions", "list"}, {"info"}, {"health"}}) {
    std::vector<std::string> args = cmd;
    args.push_back("--help");
    const ToolResult r = RunTool(args);
    EXPECT_EQ(r.exit_code, 0) << cmd[0];
    EXPECT_THAT(r.out, HasSubstr("(default 127.0.0.1:50051)")) << cmd[0] << ": " << r.out;
  }
}

TEST(GrpcClientCliTest, FlagValidationErrorsPrintOneLineAndExit2) {
  // Nothing listens on the address: every case must fail before connecting.
  const std::string srv = "127.0.0.1:1";
  const std::vector<std::string> lg = {"loadgen", "--server",     srv, "--sessions",
                                       "2",       "--turns",      "2", "--prompt-tokens",
                                       "4",       "--max-tokens", "4"};
  auto with = [](std::vector<std::string> base, std::vector<std::string> extra) {
    base.insert(base.end(), extra.begin(), extra.end());
    return base;
  };
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"chat", "--server", ""}, "--server: empty address"},
      {{"chat", "--server", srv, "--bogus"}, "unknown flag --bogus"},
      {{"chat", "--server", srv, "positional"}, "unexpected argument"},
      {{"chat", "--server", srv, "--max-tokens", "-1"}, "out of range"},
      {{"chat", "--server", srv, "--max-tokens", "x"}, "not an integer"},
      {{"chat", "--server", srv, "--temperature", "abc"}, "not a number"},
      {{"chat", "--server", srv, "--temperature", "-0.5"}, "out of range"},
      {{"chat", "--server", srv, "--seed", "-3"}, "out of range"},
      {{"chat", "--server", srv, "--message", ""}, "--message: empty message"},
      {{"chat", "--server", srv, "--session", ""}, "--session: empty session id"},
      {{"chat", "--server", srv, "--connect-timeout", "0"}, "out of range"},
      {{"chat", "--server", srv, "--message"}, "needs a value"},
      {{"loadgen", "--server", srv}, "missing required flag --sessions"},
      {with(lg, {"--sessions", "0"}), "out of range"},
      {with(lg, {"--sessions", "5000"}), "out of range"},
      {with(lg, {"--turns", "0"}), "out of range"},
      {with(lg, {"--prompt-tokens", "0"}), "out of range"},
      {with(lg, {"--max-tokens", "0"}), "out of range"},
      {with(lg, {"--max-tokens", "4.5"}), "not an integer"},
      {with(lg, {"--temperature", "-1"}), "out of range"},
      {with(lg, {"--seed", "-1"}), "out of range"},
      {with(lg, {"--replay=maybe"}), "not true or false"},
      {with(lg, {"--channels", "999"}), "out of range"},
      {with(lg, {"--frobnicate"}), "unknown flag --frobnicate"},
      {with(lg, {"--server", ""}), "--server: empty address"},
  };
  for (const auto& [args, message_part] : cases) {
    SCOPED_TRACE(::testing::PrintToString(args));
    const ToolResult r = RunTool(args);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.ErrLines(), 1) << r.err;
    EXPECT_THAT(r.err, StartsWith("xlstm " + args[0] + ": error: "));
    EXPECT_THAT(r.err, HasSubstr(message_part));
    EXPECT_EQ(r.out, "");
  }
}

TEST(GrpcClientCliTest, ServerWithoutPortIsExplained) {
  for (const std::string cmd : {"chat", "sessions", "info"}) {
    std::vector<std::string> args = {cmd, "--server", "localhost"};
    if (cmd == "sessions") args.insert(args.begin() + 1, "list");
    if (cmd == "chat") args.insert(args.end(), {"--message", "hi"});
    const ToolResult r = RunTool(args);
    EXPECT_EQ(r.exit_code, 1) << cmd;
    EXPECT_EQ(r.ErrLines(), 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr("--server localhost: no port; use HOST:PORT (e.g. "
                                 "localhost:50051)"))
        << cmd;
  }
  // Targets with a port or a scheme pass the check (and then fail to connect).
  for (const std::string target : {"127.0.0.1:1", "[::1]:1", "unix:/nonexistent/sock"}) {
    const ToolResult r = RunTool({"info", "--server", target, "--connect-timeout", "1s"});
    EXPECT_EQ(r.exit_code, 1) << target;
    EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE")) << target << ": " << r.err;
  }
}

TEST(GrpcClientCliTest, RefusedConnectionIsOneLineExit1Quickly) {
  LoopbackSocket sock(/*listen=*/false);
  const std::string addr = sock.Address();
  sock.Close();  // nothing listens there now: connections are refused
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"chat", "--server", addr, "--message", "hi"},
           {"chat", "--server", addr},
           {"loadgen", "--server", addr, "--sessions", "2", "--turns", "1", "--prompt-tokens", "2",
            "--max-tokens", "2"}}) {
    SCOPED_TRACE(::testing::PrintToString(args));
    const Clock::time_point start = Clock::now();
    const ToolResult r = RunTool(args, WithInput("hello\n"));
    EXPECT_LT(SecondsSince(start), 5.0);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.ErrLines(), 1) << r.err;
    EXPECT_THAT(r.err,
                StartsWith("xlstm " + args[0] + ": error: UNAVAILABLE: cannot connect to " + addr));
    EXPECT_EQ(r.out, "");
  }
}

TEST(GrpcClientCliTest, SilentPeerHitsTheConnectDeadline) {
  // The kernel accepts the TCP connection, but no HTTP/2 server ever answers.
  LoopbackSocket sock(/*listen=*/true);
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"chat", "--server", sock.Address(), "--message", "hi", "--connect-timeout", "1s"},
           {"loadgen", "--server", sock.Address(), "--sessions", "1", "--turns", "1",
            "--prompt-tokens", "2", "--max-tokens", "2", "--connect-timeout", "1s"}}) {
    SCOPED_TRACE(args[0]);
    const Clock::time_point start = Clock::now();
    const ToolResult r = RunTool(args);
    const double elapsed = SecondsSince(start);
    EXPECT_GE(elapsed, 0.9);
    EXPECT_LT(elapsed, 6.0);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.ErrLines(), 1) << r.err;
    EXPECT_THAT(r.err, StartsWith("xlstm " + args[0] + ": error: UNAVAILABLE: "));
    EXPECT_THAT(r.err, HasSubstr("no connection within 1 s"));
  }
}

// ---------------------------------------------------------------------------------------------
TEST_F(DaemonClientTest, ChatMessageRunsOneTurnAndResumes) {
  const ToolResult first = RunTool(
      {"chat", "--server", Addr(), "--message", "hi", "--max-tokens", "4", "--stats", "--keep"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::vector<std::string> sessions = LinesStartingWith(first.err, "session: ");
  ASSERT_EQ(sessions.size(), 1u) << first.err;
  const std::string id = sessions[0].substr(9);
  EXPECT_FALSE(id.empty());
  EXPECT_EQ(first.err.rfind("session: ", 0), 0u) << "the session id comes first: " << first.err;
  const std::vector<std::string> fin = LinesStartingWith(first.err, "finished: ");
  ASSERT_EQ(fin.size(), 1u) << first.err;
  EXPECT_GE(Field(fin[0], "completion_tokens"), 1);
  EXPECT_LE(Field(fin[0], "completion_tokens"), 4);
  EXPECT_EQ(Field(fin[0], "version"), 1);
  ASSERT_FALSE(first.out.empty());
  EXPECT_EQ(first.out.back(), '\n');
  EXPECT_THAT(first.err,
              HasSubstr("resume with: xlstm chat --server " + Addr() + " --session " + id + "\n"));

  // Resuming continues the same session: its version goes on from 1.
  const ToolResult second = RunTool({"chat", "--server", Addr(), "--session", id, "--message",
                                     "again", "--max-tokens", "2", "--stats"});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(LinesStartingWith(second.err, "session: "), std::vector<std::string>{"session: " + id});
  const std::vector<std::string> fin2 = LinesStartingWith(second.err, "finished: ");
  ASSERT_EQ(fin2.size(), 1u) << second.err;
  EXPECT_EQ(Field(fin2[0], "version"), 2);
}

TEST_F(DaemonClientTest, ChatErrorsAreOneLineWithTheCode) {
  const ToolResult unknown = RunTool(
      {"chat", "--server", Addr(), "--session", "AAAAAAAAAAAAAAAAAAAAAA", "--message", "hi"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_EQ(unknown.ErrLines(), 1) << unknown.err;
  EXPECT_THAT(unknown.err, StartsWith("xlstm chat: error: NOT_FOUND: "));

  // A turn the server rejects (max_tokens above its --max-tokens-limit): the session line, then
  // the error line.
  const ToolResult too_many =
      RunTool({"chat", "--server", Addr(), "--message", "hi", "--max-tokens", "2000000000"});
  EXPECT_EQ(too_many.exit_code, 1);
  EXPECT_EQ(too_many.out, "");  // nothing streamed, so no reply line
  const std::vector<std::string> lines = Lines(too_many.err);
  ASSERT_EQ(lines.size(), 2u) << too_many.err;
  EXPECT_THAT(lines[0], StartsWith("session: "));
  EXPECT_THAT(lines[1],
              ::testing::ContainsRegex(
                  "^xlstm chat: error: (INVALID_ARGUMENT|RESOURCE_EXHAUSTED|OUT_OF_RANGE): "));
}

// The session id from a run's `session: ID` line ("" when there is none).
TEST_F(DaemonClientTest, ChatInteractiveCommands) {
  const ToolResult r = RunTool({"chat", "--server", Addr(), "--max-tokens", "3", "--stats"},
                               WithInput("hello\n/fork\nsecond\n/bogus\n\n/new\nthird\n"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> sessions = LinesStartingWith(r.err, "session: ");
  ASSERT_EQ(sessions.size(), 3u) << r.err;  // start, /fork, /new
  EXPECT_EQ(std::set<std::string>(sessions.begin(), sessions.end()).size(), 3u) << r.err;
  const std::vector<std::string> fin = LinesStartingWith(r.err, "finished: ");
  ASSERT_EQ(fin.size(), 3u) << r.err;  // the empty line sends nothing
  EXPECT_EQ(Field(fin[0], "version"), 1);
  EXPECT_GT(Field(fin[1], "version"), 0);  // the fork continues the first session's state
  EXPECT_EQ(Field(fin[2], "version"), 1);  // /new starts over
  const std::vector<std::string> errors = LinesStartingWith(r.err, "xlstm chat: error: ");
  ASSERT_EQ(errors.size(), 1u) << r.err;
  EXPECT_THAT(errors[0], HasSubstr("unknown command '/bogus'"));
  ASSERT_FALSE(r.out.empty());
  EXPECT_EQ(r.out.back(), '\n');

  // /quit ends before the next line; errors in interactive mode do not stop the loop.
  const ToolResult q =
      RunTool({"chat", "--server", Addr(), "--stats"}, WithInput("/quit\nhello\n"));
  EXPECT_EQ(q.exit_code, 0) << q.err;
  EXPECT_EQ(LinesStartingWith(q.err, "finished: ").size(), 0u) << q.err;
  EXPECT_EQ(q.out, "");
}

nlohmann::json ParseReport(const ToolResult& r) {
  EXPECT_EQ(Lines(r.out).size(), 1u) << r.out;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.out;
  return j;
}

void ExpectCommonReportFields(const nlohmann::json& j, bool replay) {
  EXPECT_EQ(j.at("sessions"), 2);
  EXPECT_EQ(j.at("turns"), 2);
  EXPECT_EQ(j.at("prompt_tokens"), 4);
  EXPECT_EQ(j.at("max_tokens"), 4);
  EXPECT_EQ(j.at("replay"), replay);
  EXPECT_EQ(j.at("turns_ok"), 4);
  EXPECT_EQ(j.at("errors_by_code"), nlohmann::json::object());
  const int64_t tokens = j.at("completion_tokens");
  EXPECT_GE(tokens, 4);  // at least one token per turn
  EXPECT_LE(tokens, 16);
  for (const char* key : {"ttft_ms", "itl_ms"}) {
    SCOPED_TRACE(key);
    ASSERT_TRUE(j.at(key).is_object());
    ASSERT_TRUE(j.at(key).at("p50").is_number()) << j.dump();
    EXPECT_GE(j.at(key).at("p50").get<double>(), 0);
    EXPECT_GE(j.at(key).at("p99").get<double>(), j.at(key).at("p50").get<double>());
  }
  EXPECT_GT(j.at("ttft_ms").at("p50").get<double>(), 0);
  EXPECT_EQ(j.at("ttft_ms").at("n"), 4);
  EXPECT_EQ(j.at("itl_ms").at("n"), tokens - 4);
  ASSERT_TRUE(j.at("ttft_ms_by_turn").is_array());
  ASSERT_EQ(j.at("ttft_ms_by_turn").size(), 2u);
  for (const auto& t : j.at("ttft_ms_by_turn")) EXPECT_GT(t.get<double>(), 0);
  EXPECT_GT(j.at("tokens_per_s").get<double>(), 0);
  EXPECT_GE(j.at("decode_tokens_per_s").get<double>(), 0);
  EXPECT_GT(j.at("wall_s").get<double>(), 0);
  EXPECT_EQ(j.at("vocab_size"), 300);
}

TEST_F(DaemonClientTest, LoadgenReportsEveryField) {
  const ToolResult r = RunTool({"loadgen", "--server", Addr(), "--sessions", "2", "--turns", "2",
                                "--prompt-tokens", "4", "--max-tokens", "4", "--seed", "7"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const nlohmann::json j = ParseReport(r);
  ExpectCommonReportFields(j, /*replay=*/false);
  EXPECT_EQ(j.at("input_tokens"), 16);  // each turn sends only its 4 new ids
}

TEST_F(DaemonClientTest, LoadgenReplayResendsTheHistory) {
  const ToolResult r =
      RunTool({"loadgen", "--server", Addr(), "--sessions", "2", "--turns", "2", "--prompt-tokens",
               "4", "--max-tokens", "4", "--replay", "--seed", "7"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = ParseReport(r);
  ExpectCommonReportFields(j, /*replay=*/true);
  // Turn 0 sends 4 ids; turn 1 sends turn 0's 4 + its generated ids + 4 new ones.
  const int64_t input = j.at("input_tokens");
  EXPECT_GE(input, 4 + 4 + 1 + 4 + 4 + 4 + 1 + 4);
  EXPECT_LE(input, 2 * (4 + 4 + 4 + 4));
}

TEST(DaemonAuthTest, ChatSendsTheApiKeyFromFlagOrEnvironment) {
  ToolTempDir tmp;
  const std::filesystem::path keys = tmp.path() / "keys";
  std::ofstream(keys) << "alice key-alice-123\n";
  ::chmod(keys.c_str(), 0600);
  Daemon daemon({"--api-keys-file", keys.string()});
  ASSERT_EQ(daemon.error(), "");
  const std::vector<std::string> base = {
      "chat", "--server", daemon.address(), "--message", "hi", "--max-tokens", "2"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  const ToolResult flag = RunTool(with({"--api-key", "key-alice-123"}));
  EXPECT_EQ(flag.exit_code, 0) << flag.err;
  const ToolResult env = RunTool(base, WithEnv({"XLSTMD_API_KEY=key-alice-123"}));
  EXPECT_EQ(env.exit_code, 0) << env.err;
  // The flag wins over the environment.
  const ToolResult wrong =
      RunTool(with({"--api-key", "wrong"}), WithEnv({"XLSTMD_API_KEY=key-alice-123"}));
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_EQ(wrong.ErrLines(), 1) << wrong.err;
  EXPECT_THAT(wrong.err, StartsWith("xlstm chat: error: UNAUTHENTICATED: "));
  const ToolResult none = RunTool(base, WithEnv({"XLSTMD_API_KEY="}));
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_THAT(none.err, StartsWith("xlstm chat: error: UNAUTHENTICATED: "));

  const ToolResult lg = RunTool({"loadgen", "--server", daemon.address(), "--sessions", "1",
                                 "--turns", "1", "--prompt-tokens", "2", "--max-tokens", "2"},
                                WithEnv({"XLSTMD_API_KEY=key-alice-123"}));
  EXPECT_EQ(lg.exit_code, 0) << lg.err;
  if (HasFailure()) std::cerr << "xlstmd log:\n" << daemon.Log();
}

}  // namespace
}  // namespace xlstmd::testing
