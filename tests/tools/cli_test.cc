// The `xlstm` command line contract: --help everywhere (exit 0), flag validation errors as
// exactly one `xlstm <cmd>: error: ...` line on stderr with exit 2, runtime failures as one
// line with exit 1.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/golden.h"
#include "tests/tools/tool_runner.h"

namespace xlstmd::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::vector<std::string> kSubcommands = {"mkmodel", "score", "generate", "bench",
                                               "bench-state"};

std::string GoldenModelDir() { return GoldenDir("xlstm-large-a1").string(); }

TEST(XlstmCliTest, TopLevelHelpListsEverySubcommand) {
  const ToolResult r = RunTool({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.err, "");
  for (const std::string& cmd : kSubcommands) EXPECT_THAT(r.out, HasSubstr(cmd));
}

TEST(XlstmCliTest, VersionNamesCommitBuildTypeAndBackends) {
  const ToolResult r = RunTool({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.err, "");
  EXPECT_THAT(r.out, ::testing::MatchesRegex("xlstm [0-9]+\\.[0-9]+\\.[0-9]+ \\(commit "
                                             "([0-9a-f]+(-dirty)?|unknown), [A-Za-z]+ build, "
                                             "backends: cpu(, cuda)?\\)\n"));
}

TEST(XlstmCliTest, EverySubcommandHasHelp) {
  for (const std::string& cmd : kSubcommands) {
    SCOPED_TRACE(cmd);
    const ToolResult r = RunTool({cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.err, "");
    EXPECT_THAT(r.out, HasSubstr("usage: xlstm " + cmd));
    EXPECT_THAT(r.out, HasSubstr("--"));
  }
}

TEST(XlstmCliTest, NoOrUnknownSubcommandIsUsageError) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{}, std::vector<std::string>{"frobnicate"}}) {
    const ToolResult r = RunTool(args);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.ErrLines(), 1) << r.err;
    EXPECT_THAT(r.err, StartsWith("xlstm: error: "));
    EXPECT_EQ(r.out, "");
  }
}

struct FlagErrorCase {
  std::vector<std::string> args;
  std::string message_part;
};

TEST(XlstmCliTest, FlagValidationErrorsPrintOneLineAndExit2) {
  const std::string model = GoldenModelDir();
  const std::vector<std::string> mk = {
      "mkmodel", "--family", "xlstm", "--embedding-dim", "64",  "--num-blocks", "2", "--num-heads",
      "2",       "--vocab",  "97",    "--weight-dtype", "f32", "--seed",       "1"};
  auto with = [](std::vector<std::string> base, std::vector<std::string> extra) {
    base.insert(base.end(), extra.begin(), extra.end());
    return base;
  };
  const std::vector<FlagErrorCase> cases = {
      {{"score", "--bogus", "1"}, "unknown flag --bogus"},
      {{"score", "--model", model, "--tokens", "1,2"}, "missing required flag --out"},
      {{"generate", "--model", model, "--tokens", "1,x", "--max-tokens", "3"}, "not an integer"},
      {{"generate", "--model", model, "--tokens", "1", "--max-tokens", "0"}, "out of range"},
      {{"generate", "--model", model, "--tokens", "1", "--max-tokens=abc"}, "not an integer"},
      {{"generate", "--model", model, "--tokens", "1", "--max-tokens"}, "needs a value"},
      {{"generate", "--model", model, "--tokens", "1,-4", "--max-tokens", "2"}, "out of range"},
      {{"generate", "--model", model, "--tokens", "1,300", "--max-tokens", "2"}, "out of range"},
      {{"score", "--model", model, "--tokens", "1,2", "--mode", "fast", "--out", "x"},
       "not one of"},
      {{"score", "--model", model, "--tokens", "1,2", "--split-at", "2", "--out", "x"},
       "--split-at"},
      {{"bench", "--model", model, "--threads", "-1"}, "out of range"},
      {{"bench", "--model", model, "--min-time", "nan"}, "not a duration"},
      {{"bench", "positional"}, "unexpected argument"},
      {{"bench"}, "exactly one of --model DIR and --synthetic"},
      {{"bench", "--model", model, "--synthetic", "tiny"}, "exactly one of"},
      {{"bench-state", "--states", "e1024,9b"}, "unknown layout '9b'"},
      {{"bench-state", "--repeat", "0"}, "out of range"},
      {with(mk, {"--out", "/tmp/unused", "--embedding-dim", "0"}), "out of range"},
      {with(mk, {"--out", "/tmp/unused", "--num-heads", "3"}), "does not divide"},
      {with(mk, {"--out", "/tmp/unused", "--weight-dtype", "f16"}), "not one of"},
      {with(mk, {}), "missing required flag --out"},
  };
  for (const FlagErrorCase& c : cases) {
    SCOPED_TRACE(::testing::PrintToString(c.args));
    const ToolResult r = RunTool(c.args);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.ErrLines(), 1) << r.err;
    EXPECT_THAT(r.err, StartsWith("xlstm " + c.args[0] + ": error: "));
    EXPECT_THAT(r.err, HasSubstr(c.message_part));
    EXPECT_EQ(r.out, "");
  }
}

TEST(XlstmCliTest, RuntimeFailureIsOneLineExit1) {
  ToolTempDir tmp;
  const std::string missing = (tmp.path() / "no_such_model").string();
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"score", "--model", missing, "--tokens", "1", "--out", (tmp.path() / "o").string()},
           {"generate", "--model", missing, "--tokens", "1", "--max-tokens", "2"},
           {"bench", "--model", missing, "--min-time", "0.01s"},
           {"bench", "--synthetic", "9b", "--synthetic-dir", missing}}) {
    SCOPED_TRACE(args[0]);
    const ToolResult r = RunTool(args);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.ErrLines(), 1) << r.err;
    EXPECT_THAT(r.err, StartsWith("xlstm " + args[0] + ": error: "));
    EXPECT_THAT(r.err, HasSubstr(args[1] == "--synthetic" ? "unknown shape" : "no_such_model"));
  }
}

// --synthetic writes a random model of a named shape, benches it and removes it; without a
// GPU, --backend cuda is a one-line runtime error saying why.
TEST(XlstmCliTest, BenchSyntheticModelAndCudaWithoutADevice) {
  ToolTempDir tmp;
  const std::string dir = (tmp.path() / "synthetic").string();
  const ToolResult r = RunTool({"bench", "--synthetic", "tiny", "--synthetic-dir", dir,
                                "--batch", "2", "--prompt-len", "40", "--min-time", "0.05s",
                                "--dram-mib", "64"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"model\":\"synthetic:tiny\""));
  EXPECT_THAT(r.out, HasSubstr("\"phase\":\"decode\",\"batch\":2"));
  EXPECT_THAT(r.out, HasSubstr("\"phase\":\"prefill\""));
  EXPECT_THAT(r.out, HasSubstr("\"cuda_math\":\"exact\""));
  // Each decode and prefill line says where its time went, by class of op.
  EXPECT_THAT(r.out, ::testing::ContainsRegex("\"split_ms\":\\{\"gemm\":[0-9.e-]+,\"mlstm\""));
  EXPECT_FALSE(std::filesystem::exists(dir));
  const ToolResult gpu = RunTool({"bench", "--synthetic", "tiny", "--synthetic-dir", dir,
                                  "--backend", "cuda", "--min-time", "0.05s"});
  if (gpu.exit_code == 0) GTEST_SKIP() << "a CUDA device is usable here";
  EXPECT_EQ(gpu.exit_code, 1);
  EXPECT_EQ(gpu.ErrLines(), 1) << gpu.err;
  EXPECT_THAT(gpu.err, HasSubstr("UNAVAILABLE"));
  EXPECT_FALSE(std::filesystem::exists(dir));
}

}  // namespace
// The tier benchmark runs end to end on the small layout and reports every operation with
// its baseline (figures are not asserted: timing belongs in benchmarks, not tests).
TEST(XlstmCliTest, BenchStateReportsEveryTierWithItsBaseline) {
  ToolTempDir tmp;
  const ToolResult r = RunTool({"bench-state", "--states", "e1024", "--repeat", "1", "--dir",
                                tmp.path().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string op : {"\"memcpy\"", "\"host_to_slot\"", "\"slot_to_host\"",
                               "\"disk_write_sync\"", "\"disk_restore_cold\"",
                               "\"disk_restore_warm\""}) {
    EXPECT_THAT(r.out, HasSubstr(op));
  }
  EXPECT_THAT(r.out, HasSubstr("\"state_bytes\":3171072"));
  EXPECT_THAT(r.out, HasSubstr("fraction_of_memcpy"));
  EXPECT_THAT(r.out, HasSubstr("fraction_of_raw_read"));
}

}  // namespace xlstmd::testing
