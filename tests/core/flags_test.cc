// FlagSet, the flag parser of `xlstm` and `xlstmd` (server/options_test.cc covers the
// daemon's flags on top of it): sources and precedence, required flags, id lists, durations
// with units, and renamed flags kept as warned aliases.
#include "core/base/flags.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xlstmd {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The tool's contract survives the daemon's additions: no env twins, `xlstm <cmd>` prefix.
TEST(FlagSetTest, ToolFlagSetKeepsItsPrefixAndIgnoresTheEnvironment) {
  int64_t n = 1;
  base::FlagSet flags("score", "summary");
  flags.Int("n", &n, 0, 10, "a number");
  EXPECT_EQ(flags.EnvName("n"), "");
  std::string a0 = "score", a1 = "--n", a2 = "11";
  char* argv[] = {a0.data(), a1.data(), a2.data()};
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(flags.Parse(3, argv), base::ParseOutcome::kError);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(),
            "xlstm score: error: --n: 11 is out of range [0, 10]\n");
  EXPECT_THAT(flags.Usage(), StartsWith("usage: xlstm score [flags]"));
}

TEST(FlagSetTest, SourceTellsWhereAValueCameFrom) {
  int64_t a = 0, b = 0, c = 0;
  base::FlagSet flags("", "summary");
  flags.set_program("prog");
  flags.EnableEnvTwins("P_", [](const std::string& name) -> std::optional<std::string> {
    if (name == "P_B" || name == "P_A") return "4";
    return std::nullopt;
  });
  flags.Int("a", &a, 0, 10, "");
  flags.Int("b", &b, 0, 10, "");
  flags.Int("c-d", &c, 0, 10, "");
  EXPECT_EQ(flags.EnvName("c-d"), "P_C_D");
  std::string a0 = "prog", a1 = "--a=2";
  char* argv[] = {a0.data(), a1.data()};
  ASSERT_EQ(flags.Parse(2, argv), base::ParseOutcome::kOk);
  EXPECT_EQ(flags.Source("a"), base::FlagSource::kCommandLine);
  EXPECT_EQ(flags.Source("b"), base::FlagSource::kEnvironment);
  EXPECT_EQ(flags.Source("c-d"), base::FlagSource::kDefault);
  EXPECT_TRUE(flags.WasSet("b"));
  EXPECT_FALSE(flags.WasSet("c-d"));
  EXPECT_EQ(a, 2);
  EXPECT_EQ(b, 4);
}

TEST(FlagSetTest, RequiredFlagIsSatisfiedByItsEnvironmentTwin) {
  std::string s;
  base::FlagSet flags("", "summary");
  flags.set_program("prog");
  flags.EnableEnvTwins("P_", [](const std::string&) -> std::optional<std::string> { return "v"; });
  flags.String("s", &s, "", /*required=*/true);
  std::string a0 = "prog";
  char* argv[] = {a0.data()};
  ASSERT_EQ(flags.Parse(1, argv), base::ParseOutcome::kOk);
  EXPECT_EQ(s, "v");
}

TEST(FlagSetTest, IntListAlsoTakesTheJsonArrayTokenizePrints) {
  for (const std::string value : {"72,101,0", "[72,101,0]", " [72, 101, 0] "}) {
    std::vector<int64_t> ids;
    base::FlagSet flags("generate", "summary");
    flags.IntList("tokens", &ids, 0, 1000, "ids");
    std::string a0 = "generate", a1 = "--tokens", a2 = value;
    char* argv[] = {a0.data(), a1.data(), a2.data()};
    ASSERT_EQ(flags.Parse(3, argv), base::ParseOutcome::kOk) << value;
    EXPECT_EQ(ids, (std::vector<int64_t>{72, 101, 0})) << value;
  }
  for (const std::string value : {"[72,101", "[]", "72,,101"}) {
    std::vector<int64_t> ids;
    base::FlagSet flags("generate", "summary");
    flags.IntList("tokens", &ids, 0, 1000, "ids");
    std::string a0 = "generate", a1 = "--tokens", a2 = value;
    char* argv[] = {a0.data(), a1.data(), a2.data()};
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(flags.Parse(3, argv), base::ParseOutcome::kError) << value;
    EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("is not an integer")) << value;
  }
}

TEST(FlagSetTest, DurationsParseAndPrintWithUnits) {
  const std::vector<std::pair<std::string, double>> good = {
      {"0", 0},         {"250ms", 250},     {"30s", 30000},  {"1.5s", 1500},
      {"10m", 600000},  {"2h", 7200000},    {"1h30m", 5.4e6}, {"0s", 0},
      {"1m0.5s", 60500}};
  for (const auto& [text, ms] : good) {
    double got = -1;
    EXPECT_TRUE(base::ParseDurationMs(text, &got)) << text;
    EXPECT_EQ(got, ms) << text;
  }
  for (const std::string bad : {"", "s", "5", "-5s", "5 s", "5sec", "5d", "1e3s", "inf", "nan",
                                "5us", "s5", "1.2.3s"}) {
    double got = -1;
    bool bare = false;
    EXPECT_FALSE(base::ParseDurationMs(bad, &got, &bare)) << bad;
    EXPECT_EQ(bare, bad == "5") << bad;
  }
  EXPECT_EQ(base::FormatDurationMs(0), "0");
  EXPECT_EQ(base::FormatDurationMs(1500), "1500ms");
  EXPECT_EQ(base::FormatDurationMs(30000), "30s");
  EXPECT_EQ(base::FormatDurationMs(600000), "10m");
  EXPECT_EQ(base::FormatDurationMs(7200000), "2h");
  EXPECT_EQ(base::FormatDurationMs(90000), "90s");
}

TEST(FlagSetTest, ToolDurationSecondsAndRenamedFlags) {
  double timeout = 600, duration = 0;
  std::vector<int64_t> ids;
  base::FlagSet flags("loadgen", "summary");
  flags.DurationSeconds("timeout", &timeout, 0, 1e6, "per turn");
  flags.DurationSeconds("duration", &duration, 0, 1e7, "run time");
  flags.Renamed("duration-s", "duration", "s");
  flags.IntList("tokens", &ids, 0, 1000, "ids");
  flags.Renamed("ids", "tokens");
  EXPECT_THAT(flags.Usage(), HasSubstr("--timeout DURATION"));
  EXPECT_THAT(flags.Usage(), HasSubstr("(default 10m)"));
  EXPECT_THAT(flags.Usage(), ::testing::Not(HasSubstr("duration-s")));
  EXPECT_THAT(flags.Usage(), ::testing::Not(HasSubstr("--ids")));
  std::vector<std::string> args = {"loadgen", "--timeout", "250ms", "--duration-s",
                                   "1.5", "--ids", "[1,2]"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  ::testing::internal::CaptureStderr();
  ASSERT_EQ(flags.Parse(static_cast<int>(argv.size()), argv.data()), base::ParseOutcome::kOk);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_DOUBLE_EQ(timeout, 0.25);
  EXPECT_DOUBLE_EQ(duration, 1.5);
  EXPECT_EQ(ids, (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(flags.WasSet("duration"));
  EXPECT_THAT(err, HasSubstr("xlstm loadgen: warning: --duration-s is renamed --duration"));
  EXPECT_THAT(err, HasSubstr("xlstm loadgen: warning: --ids is renamed --tokens"));
}

}  // namespace
}  // namespace xlstmd
