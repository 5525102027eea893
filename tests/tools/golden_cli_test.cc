// `xlstm score` and `xlstm generate` against the golden model (../shared/golden/
// xlstm-large-a1): logits and final state written by score match golden.safetensors within
// golden.json's suggested tolerances on every path (prefill, split prefill, step), and greedy
// generation prints exactly golden.json's generated ids.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/golden.h"
#include "tests/tools/tool_runner.h"

namespace xlstmd::testing {
namespace {

constexpr const char* kModel = "xlstm-large-a1";

std::vector<float> ReadF32(const core::SafetensorsFile& f, const std::string& name) {
  const core::TensorView* t = f.Find(name);
  if (t == nullptr || t->dtype != core::TensorDType::kF32) {
    ADD_FAILURE() << name << " missing or not F32 in " << f.path();
    return {};
  }
  std::vector<float> out(static_cast<size_t>(t->NumElements()));
  std::memcpy(out.data(), t->data, out.size() * sizeof(float));
  return out;
}

class GoldenCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto g = LoadGolden(kModel);
    ASSERT_TRUE(g.ok()) << g.status();
    golden_ = std::move(*g);
  }

  const GoldenSequence& Sequence(const std::string& name) const {
    for (const GoldenSequence& s : golden_.sequences) {
      if (s.name == name) return s;
    }
    ADD_FAILURE() << "no golden sequence " << name;
    return golden_.sequences.front();
  }

  // Runs `xlstm score` on `seq` with extra flags and returns the opened output file.
  std::unique_ptr<core::SafetensorsFile> Score(const GoldenSequence& seq,
                                               const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"score",
                                     "--model",
                                     GoldenDir(kModel).string(),
                                     "--tokens",
                                     absl::StrJoin(seq.tokens, ","),
                                     "--weight-dtype",
                                     "f32",
                                     "--out",
                                     (tmp_.path() / "score.safetensors").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    const ToolResult r = RunTool(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    // One summary line on success.
    EXPECT_THAT(r.out, ::testing::MatchesRegex("wrote .*score.safetensors: logits \\[[0-9]+, "
                                               "[0-9]+\\] and the final state after [0-9]+ "
                                               "tokens \\((prefill, chunk [0-9]+|step)\\)\n"));
    auto f = core::SafetensorsFile::Open(tmp_.path() / "score.safetensors");
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? std::move(*f) : nullptr;
  }

  void ExpectLogits(const core::SafetensorsFile& f, const std::string& golden_name) {
    const std::vector<float> want = golden_.F32(golden_name);
    const std::vector<float> got = ReadF32(f, "logits");
    ASSERT_EQ(got.size(), want.size());
    EXPECT_LE(MaxAbsDiff(got, want), golden_.logits_atol) << golden_name;
  }

  // C and n relative to their max magnitude (rtol 1e-4), m absolutely (1e-4), per the
  // golden.json note.
  void ExpectState(const core::SafetensorsFile& f, const std::string& golden_prefix) {
    for (int b = 0; b < 2; ++b) {
      for (const char* part : {"C", "n", "m"}) {
        const std::string suffix = absl::StrCat("block_", b, "/", part);
        const std::vector<float> want = golden_.F32(absl::StrCat(golden_prefix, suffix));
        const std::vector<float> got = ReadF32(f, absl::StrCat("state/", suffix));
        ASSERT_EQ(got.size(), want.size()) << suffix;
        const double scale = std::string(part) == "m" ? 1.0 : std::max(MaxAbs(want), 1e-30);
        EXPECT_LE(MaxAbsDiff(got, want) / scale, 1e-4) << suffix;
      }
    }
  }

  GoldenModel golden_;
  ToolTempDir tmp_;
};

TEST_F(GoldenCliTest, ScorePrefillMatchesGoldenFull) {
  const GoldenSequence& seq = Sequence("seq_len7");
  auto f = Score(seq, {});
  ASSERT_NE(f, nullptr);
  ExpectLogits(*f, "seq_len7/logits_full");
  ExpectState(*f, "seq_len7/state/");
  const core::TensorView* logits = f->Find("logits");
  ASSERT_NE(logits, nullptr);
  EXPECT_EQ(logits->shape, (std::vector<int64_t>{7, 300}));
  EXPECT_EQ(f->Find("state/block_0/m")->shape, (std::vector<int64_t>{4, 1}));
}

TEST_F(GoldenCliTest, ScoreSplitPrefillMatchesGoldenTurns) {
  const GoldenSequence& seq = Sequence("seq_len33");
  ASSERT_TRUE(seq.split.has_value());
  auto f = Score(seq, {"--split-at", absl::StrCat(*seq.split), "--chunk-size=16"});
  ASSERT_NE(f, nullptr);
  ExpectLogits(*f, "seq_len33/logits_turns");
  ExpectState(*f, "seq_len33/state/");
}

TEST_F(GoldenCliTest, ScoreStepMatchesGoldenStep) {
  const GoldenSequence& seq = Sequence("seq_len7");
  auto f = Score(seq, {"--mode", "step"});
  ASSERT_NE(f, nullptr);
  ExpectLogits(*f, "seq_len7/logits_step");
  ExpectState(*f, "seq_len7/state/");
}

TEST_F(GoldenCliTest, GeneratePrintsGoldenGreedyIds) {
  const ToolResult r = RunTool({"generate", "--model", GoldenDir(kModel).string(), "--tokens",
                                absl::StrJoin(golden_.greedy_prompt, ","), "--max-tokens",
                                absl::StrCat(golden_.greedy_generated.size())});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, absl::StrJoin(golden_.greedy_generated, ",") + "\n");
}

}  // namespace
}  // namespace xlstmd::testing
