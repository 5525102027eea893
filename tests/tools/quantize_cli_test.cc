// `xlstm quantize` and `xlstm quality` on the golden model: a quantized copy is served as
// stored and computes exactly what quantizing at load computes (same greedy ids, same logits
// bit for bit), keeps the embedding and the norms float, refuses contradicting flags, and the
// quality report measures the same drift either way.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/golden.h"
#include "tests/tools/tool_runner.h"

namespace xlstmd::testing {
namespace {

using ::testing::HasSubstr;

constexpr const char* kModel = "xlstm-large-a1";
constexpr const char* kTokens = "1,2,3,4,5,6,7,8,9,10,11,12";

std::string Logits(const std::string& model, const std::vector<std::string>& extra,
                   const ToolTempDir& tmp, const std::string& name) {
  const std::string out = (tmp.path() / (name + ".safetensors")).string();
  std::vector<std::string> args = {"score", "--model", model, "--tokens", kTokens, "--out", out};
  args.insert(args.end(), extra.begin(), extra.end());
  const ToolResult r = RunTool(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto f = core::SafetensorsFile::Open(out);
  EXPECT_TRUE(f.ok()) << f.status();
  if (!f.ok()) return "";
  const core::TensorView* t = (*f)->Find("logits");
  EXPECT_NE(t, nullptr);
  if (t == nullptr) return "";
  return std::string(static_cast<const char*>(t->data), t->NumElements() * sizeof(float));
}

class QuantizeCliTest : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantizeCliTest, StoredCopyServesExactlyLikeLoadTimeQuantization) {
  const std::string dtype = GetParam();
  const std::string src = GoldenDir(kModel).string();
  ToolTempDir tmp;
  const std::string out = (tmp.path() / "q").string();
  const ToolResult q = RunTool({"quantize", "--in", src, "--out", out, "--weight-dtype", dtype});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_THAT(q.out, HasSubstr("quantized (" + dtype));

  // The file: codes + scales for the projections and the head; the embedding stays float.
  auto f = core::SafetensorsFile::Open(std::filesystem::path(out) / "model.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  const core::TensorView* head = (*f)->Find("lm_head.weight");
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->dtype, dtype == "q4" ? core::TensorDType::kU8 : core::TensorDType::kI8);
  ASSERT_NE((*f)->Find("lm_head.weight_scale"), nullptr);
  const core::TensorView* emb = (*f)->Find("backbone.embeddings.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, core::TensorDType::kF32);

  // Same logits bit for bit, and the same greedy continuation.
  EXPECT_EQ(Logits(out, {}, tmp, "stored"), Logits(src, {"--weight-dtype", dtype}, tmp, "load"));
  const ToolResult g1 = RunTool({"generate", "--model", out, "--tokens", kTokens,
                                 "--max-tokens", "16"});
  const ToolResult g2 = RunTool({"generate", "--model", src, "--tokens", kTokens,
                                 "--max-tokens", "16", "--weight-dtype", dtype});
  ASSERT_EQ(g1.exit_code, 0) << g1.err;
  EXPECT_EQ(g1.out, g2.out);

  // Flags that contradict what is stored are refused, naming the flag.
  const std::string other = dtype == "q4" ? "int8" : "q4";
  const ToolResult bad = RunTool({"generate", "--model", out, "--tokens", kTokens,
                                  "--max-tokens", "1", "--weight-dtype", other});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("--weight-dtype=" + other));
  // Quantizing twice is refused too.
  const ToolResult twice = RunTool({"quantize", "--in", out, "--out",
                                    (tmp.path() / "qq").string(), "--weight-dtype", dtype});
  EXPECT_EQ(twice.exit_code, 1);
  EXPECT_THAT(twice.err, HasSubstr("quantized already"));

  // quality: the stored copy against its source reports what load-time quantization does.
  const ToolResult a = RunTool({"quality", "--model", out, "--reference-model", src,
                                "--positions", "200"});
  const ToolResult b = RunTool({"quality", "--model", src, "--weight-dtype", dtype,
                                "--positions", "200"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["weight_dtype"], dtype);
  EXPECT_EQ(ja["max_abs_dlogit"], jb["max_abs_dlogit"]);
  EXPECT_EQ(ja["greedy_agreement"], jb["greedy_agreement"]);
  EXPECT_GT(ja["mean_abs_dlogit"].get<double>(), 0.0);
  EXPECT_LT(ja["weight_bytes"].get<double>(), ja["reference_weight_bytes"].get<double>());
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizeCliTest, ::testing::Values("int8", "q4"));

TEST(QuantizeCliErrorsTest, BadArguments) {
  ToolTempDir tmp;
  const std::string src = GoldenDir(kModel).string();
  EXPECT_EQ(RunTool({"quantize", "--in", src, "--out", tmp.path().string(), "--weight-dtype",
                     "bf16"}).exit_code,
            2);  // not a quantized format: a flag error
  std::ofstream(tmp.path() / "keep") << "x";
  const ToolResult r = RunTool({"quantize", "--in", src, "--out", tmp.path().string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("not empty"));
  const ToolResult m = RunTool({"quantize", "--in", (tmp.path() / "none").string(), "--out",
                                (tmp.path() / "o").string()});
  EXPECT_EQ(m.exit_code, 1);
  const ToolResult ref = RunTool({"quality", "--model", src, "--reference-dtype", "f32",
                                  "--text", (tmp.path() / "missing.txt").string()});
  EXPECT_EQ(ref.exit_code, 1);
}

}  // namespace
}  // namespace xlstmd::testing
