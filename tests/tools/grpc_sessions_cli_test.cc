// `xlstm sessions ...` and `xlstm info` against the real daemon: every subcommand, its text and
// --json output, and its errors; `xlstm chat` against a model with random weights.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tools/daemon_runner.h"
#include "tests/tools/tool_runner.h"

namespace xlstmd::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

std::string SessionOf(const ToolResult& r) {
  const std::vector<std::string> lines = LinesStartingWith(r.err, "session: ");
  return lines.empty() ? std::string() : lines.back().substr(9);
}

TEST_F(DaemonClientTest, ChatMessageDeletesItsSessionUnlessKept) {
  const ToolResult once =
      RunTool({"chat", "--server", Addr(), "--message", "hi", "--max-tokens", "2"});
  ASSERT_EQ(once.exit_code, 0) << once.err;
  ASSERT_NE(SessionOf(once), "");
  EXPECT_THAT(once.err, Not(HasSubstr("resume with")));
  const ToolResult gone =
      RunTool({"sessions", "get", "--server", Addr(), "--session", SessionOf(once)});
  EXPECT_EQ(gone.exit_code, 1) << gone.out;
  EXPECT_THAT(gone.err, StartsWith("xlstm sessions get: error: NOT_FOUND: "));

  // A turn refused for its parameters leaves nothing behind either.
  const ToolResult refused =
      RunTool({"chat", "--server", Addr(), "--message", "hi", "--max-tokens", "2000000000"});
  EXPECT_EQ(refused.exit_code, 1);
  ASSERT_NE(SessionOf(refused), "");
  EXPECT_EQ(
      RunTool({"sessions", "get", "--server", Addr(), "--session", SessionOf(refused)}).exit_code,
      1);
}

TEST_F(DaemonClientTest, SessionsCommandsManageSessions) {
  const ToolResult kept =
      RunTool({"chat", "--server", Addr(), "--message", "hi", "--max-tokens", "3", "--keep"});
  ASSERT_EQ(kept.exit_code, 0) << kept.err;
  const std::string id = SessionOf(kept);
  auto json_of = [](const ToolResult& r) {
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  };
  auto sessions = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"sessions"});
    args.insert(args.begin() + 2, {"--server", Addr()});
    return RunTool(args);
  };

  const nlohmann::json list = json_of(sessions({"list", "--json"}));
  ASSERT_TRUE(list.is_array()) << list;
  bool listed = false;
  for (const auto& s : list) listed |= s.at("session_id") == id && s.at("version") == 1;
  EXPECT_TRUE(listed) << list;
  EXPECT_THAT(sessions({"list"}).out, HasSubstr(id + " version=1 tokens="));

  const nlohmann::json got = json_of(sessions({"get", "--session", id, "--json"}));
  EXPECT_EQ(got.value("version", -1), 1);
  EXPECT_EQ(got.value("turn_running", true), false);

  const nlohmann::json fork = json_of(sessions({"fork", "--session", id, "--json"}));
  const std::string fork_id = fork.value("session_id", "");
  EXPECT_NE(fork_id, "");
  EXPECT_NE(fork_id, id);
  EXPECT_EQ(fork.value("version", -1), 1);

  const nlohmann::json rewound =
      json_of(sessions({"rewind", "--session", id, "--version", "0", "--json"}));
  EXPECT_EQ(rewound.value("version", -1), 0);
  EXPECT_EQ(rewound.value("turn_running", true), false) << "the reply describes the idle session";

  const std::filesystem::path snap = daemon_->dir() / "fork.snapshot";
  const ToolResult exported = sessions({"export", "--session", fork_id, "--out", snap.string()});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  EXPECT_GT(std::filesystem::file_size(snap), 0u);
  EXPECT_FALSE(std::filesystem::exists(snap.string() + ".partial"));

  const ToolResult deleted = sessions({"delete", "--session", fork_id});
  EXPECT_EQ(deleted.exit_code, 0) << deleted.err;
  EXPECT_EQ(deleted.out, "deleted " + fork_id + "\n");
  EXPECT_EQ(sessions({"get", "--session", fork_id}).exit_code, 1);

  const nlohmann::json imported = json_of(sessions({"import", "--in", snap.string(), "--json"}));
  EXPECT_EQ(imported.value("version", -1), 1);
  EXPECT_NE(imported.value("session_id", fork_id), fork_id);

  const ToolResult info_run = RunTool({"info", "--server", Addr(), "--json"});
  const nlohmann::json info = json_of(info_run);
  EXPECT_EQ(info.value("family", ""), "xlstm");
  EXPECT_EQ(info.value("model", ""), "xlstm-large-a1");
  EXPECT_GT(info.value("state_bytes_per_session", 0), 0);
  EXPECT_EQ(info.value("random_weights", true), false);
  EXPECT_FALSE(info.value("server_version", "").empty());
  EXPECT_FALSE(info.value("server_commit", "").empty());
  EXPECT_FALSE(info.value("server_build_type", "").empty());
  EXPECT_THAT(RunTool({"info", "--server", Addr()}).out, HasSubstr("vocab_size"));
}

// `xlstm health`: the exit status is the answer (0 serving, 1 not or unreachable, 2 usage).
TEST_F(DaemonClientTest, HealthExitStatusSaysWhetherTheDaemonServes) {
  const ToolResult ok = RunTool({"health", "--server", Addr()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "SERVING\n");
  EXPECT_EQ(RunTool({"health", "--server", Addr(), "--service", "xlstmd.v1.ChatService"}).exit_code,
            0);
  const ToolResult unknown = RunTool({"health", "--server", Addr(), "--service", "no.Such"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("NOT_FOUND"));
  EXPECT_EQ(RunTool({"health", "--bogus"}).exit_code, 2);
  const ToolResult no_port = RunTool({"health", "--server", "localhost"});
  EXPECT_EQ(no_port.exit_code, 2);
  EXPECT_THAT(no_port.err, HasSubstr("no port"));
}

TEST(GrpcClientCliTest, HealthOfNothingListeningExitsOne) {
  const ToolResult r = RunTool({"health", "--server", "127.0.0.1:1", "--timeout", "2s"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "UNAVAILABLE\n");
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
}

TEST_F(DaemonClientTest, SessionsCommandErrors) {
  EXPECT_EQ(RunTool({"sessions"}).exit_code, 2);
  const ToolResult help = RunTool({"sessions", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, AllOf(HasSubstr("list"), HasSubstr("rewind"), HasSubstr("import")));
  const ToolResult bogus = RunTool({"sessions", "bogus"});
  EXPECT_EQ(bogus.exit_code, 2);
  EXPECT_THAT(bogus.err, HasSubstr("unknown verb 'bogus'"));
  const ToolResult no_id = RunTool({"sessions", "get", "--server", Addr()});
  EXPECT_EQ(no_id.exit_code, 2);
  EXPECT_THAT(no_id.err, HasSubstr("missing required flag --session"));
  const ToolResult no_dir = RunTool({"sessions", "export", "--server", Addr(), "--session",
                                     "AAAAAAAAAAAAAAAAAAAAAA", "--out", "/nonexistent/dir/x"});
  EXPECT_EQ(no_dir.exit_code, 1);
  EXPECT_THAT(no_dir.err, HasSubstr("/nonexistent/dir/x"));
  const ToolResult no_file =
      RunTool({"sessions", "import", "--server", Addr(), "--in", "/nonexistent/snap"});
  EXPECT_EQ(no_file.exit_code, 1);
  EXPECT_THAT(no_file.err, HasSubstr("--in /nonexistent/snap: cannot read it"));
}

TEST(RandomModelTest, ChatWarnsOnceThatTheWeightsAreRandom) {
  ToolTempDir dir;
  const std::string model = (dir.path() / "random").string();
  const ToolResult mk = RunTool({"mkmodel", "--embedding-dim", "64", "--num-blocks", "1",
                                 "--num-heads", "2", "--vocab", "257", "--out", model});
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  Daemon daemon({}, model);
  ASSERT_EQ(daemon.error(), "");
  const ToolResult info = RunTool({"info", "--server", daemon.address(), "--json"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_EQ(nlohmann::json::parse(info.out).value("random_weights", false), true);

  const ToolResult chat = RunTool({"chat", "--server", daemon.address(), "--message", "hi",
                                   "--max-tokens", "2"});
  ASSERT_EQ(chat.exit_code, 0) << chat.err;
  EXPECT_EQ(LinesStartingWith(chat.err, "xlstm chat: warning: the server's model random has random "
                                        "weights").size(),
            1u)
      << chat.err;

  // Two turns in one interactive run: still one warning.
  RunToolOptions two = WithInput("a\nb\n");
  const ToolResult chat2 = RunTool(
      {"chat", "--server", daemon.address(), "--max-tokens", "2"}, two);
  ASSERT_EQ(chat2.exit_code, 0) << chat2.err;
  EXPECT_EQ(LinesStartingWith(chat2.err, "xlstm chat: warning:").size(), 1u) << chat2.err;
}

TEST_F(DaemonClientTest, ChatDoesNotWarnAboutATrainedModel) {
  const ToolResult chat =
      RunTool({"chat", "--server", Addr(), "--message", "hi", "--max-tokens", "2"});
  ASSERT_EQ(chat.exit_code, 0) << chat.err;
  EXPECT_THAT(chat.err, Not(HasSubstr("warning")));
}

}  // namespace
}  // namespace xlstmd::testing
