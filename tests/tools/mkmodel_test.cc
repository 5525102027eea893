// `xlstm mkmodel` and core::WriteRandomModel: the directory loads with XlstmModel::Load, the
// bytes depend only on the spec (seed, not thread count), shards load like one file, and an
// existing model is only replaced with --force.
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/model/random_model.h"
#include "core/model/xlstm_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "tests/testing/golden.h"
#include "tests/tools/tool_runner.h"

namespace xlstmd::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::vector<std::string> TinyArgs(const fs::path& out, const std::string& seed) {
  return {"mkmodel",
          "--family=xlstm",
          "--embedding-dim=64",
          "--num-blocks",
          "2",
          "--num-heads",
          "2",
          "--vocab",
          "97",
          "--weight-dtype",
          "f32",
          "--seed",
          seed,
          "--out",
          out.string()};
}

core::RandomModelSpec TinySpec(uint64_t seed) {
  core::RandomModelSpec s;
  s.embedding_dim = 64;
  s.num_blocks = 2;
  s.num_heads = 2;
  s.vocab = 97;
  s.seed = seed;
  return s;
}

// Logits [tokens, vocab] of a prefill from a zero state, f32 weights.
std::vector<float> PrefillLogits(const fs::path& dir, const std::vector<int32_t>& tokens) {
  auto backend = kernels::CreateBackend("cpu", {1, kernels::DType::kF32});
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return {};
  auto model = core::XlstmModel::Load(dir, backend->get());
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  EXPECT_TRUE((*model)->AllocateSlots(1).ok());
  const core::PrefillSequence seq{tokens, 0};
  std::vector<float> logits;
  EXPECT_TRUE((*model)->Prefill({&seq, 1}, {64, core::LogitsMode::kAll}, &logits).ok());
  return logits;
}

TEST(MkmodelTest, TinyModelLoadsWithRealisticLogits) {
  ToolTempDir tmp;
  const fs::path dir = tmp.path() / "m";
  const ToolResult r = RunTool(TinyArgs(dir, "1"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir / "config.json"));
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  // Marked as random, and the marker is what the daemon and clients read.
  EXPECT_TRUE(core::HasRandomWeights(dir));
  EXPECT_FALSE(core::HasRandomWeights(GoldenDir("xlstm-large-a1")));
  EXPECT_FALSE(core::HasRandomWeights(tmp.path() / "missing"));

  auto backend = kernels::CreateBackend("cpu", {1, kernels::DType::kF32});
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto model = core::XlstmModel::Load(dir, backend->get());
  ASSERT_TRUE(model.ok()) << model.status();
  const core::ModelConfig& c = (*model)->config();
  EXPECT_EQ(c.embedding_dim, 64);
  EXPECT_EQ(c.num_blocks, 2);
  EXPECT_EQ(c.num_heads, 2);
  EXPECT_EQ(c.vocab_size, 97);
  EXPECT_EQ(c.ffn_dim(), 192);  // ceil(64 * 2.667 / 64) * 64

  const std::vector<float> logits = PrefillLogits(dir, {5, 17, 3, 96, 0});
  ASSERT_EQ(logits.size(), 5u * 97u);
  float lo = logits[0], hi = logits[0];
  for (float x : logits) {
    ASSERT_TRUE(std::isfinite(x));
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  EXPECT_GT(hi - lo, 0.5f) << "logits nearly constant";
  EXPECT_LT(hi - lo, 60.0f);
}

TEST(MkmodelTest, BytesDependOnSeedOnly) {
  ToolTempDir tmp;
  const fs::path a = tmp.path() / "a", b = tmp.path() / "b", c = tmp.path() / "c";
  std::vector<std::string> args_a = TinyArgs(a, "7");
  args_a.insert(args_a.end(), {"--threads", "1"});
  std::vector<std::string> args_b = TinyArgs(b, "7");
  args_b.insert(args_b.end(), {"--threads", "3"});
  ASSERT_EQ(RunTool(args_a).exit_code, 0);
  ASSERT_EQ(RunTool(args_b).exit_code, 0);
  ASSERT_EQ(RunTool(TinyArgs(c, "8")).exit_code, 0);
  for (const char* f : {"config.json", "model.safetensors"}) {
    EXPECT_EQ(ReadWholeFile(a / f), ReadWholeFile(b / f)) << f;
  }
  EXPECT_EQ(ReadWholeFile(a / "config.json"), ReadWholeFile(c / "config.json"));
  EXPECT_NE(ReadWholeFile(a / "model.safetensors"), ReadWholeFile(c / "model.safetensors"));
}

TEST(MkmodelTest, RefusesToOverwriteWithoutForce) {
  ToolTempDir tmp;
  const fs::path dir = tmp.path() / "m";
  ASSERT_EQ(RunTool(TinyArgs(dir, "1")).exit_code, 0);
  const std::string before = ReadWholeFile(dir / "model.safetensors");
  const ToolResult again = RunTool(TinyArgs(dir, "2"));
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_EQ(again.ErrLines(), 1) << again.err;
  EXPECT_THAT(again.err, HasSubstr("already exists"));
  EXPECT_EQ(ReadWholeFile(dir / "model.safetensors"), before);

  std::vector<std::string> forced = TinyArgs(dir, "2");
  forced.push_back("--force");
  ASSERT_EQ(RunTool(forced).exit_code, 0);
  EXPECT_NE(ReadWholeFile(dir / "model.safetensors"), before);
}

TEST(MkmodelTest, ShardedModelLoadsLikeSingleFile) {
  ToolTempDir tmp;
  const fs::path single = tmp.path() / "single", sharded = tmp.path() / "sharded";
  ASSERT_TRUE(core::WriteRandomModel(TinySpec(3), single).ok());
  core::RandomModelSpec spec = TinySpec(3);
  spec.max_shard_bytes = 100 << 10;
  ASSERT_TRUE(core::WriteRandomModel(spec, sharded).ok());
  EXPECT_FALSE(fs::exists(sharded / "model.safetensors"));
  ASSERT_TRUE(fs::exists(sharded / "model.safetensors.index.json"));
  int shards = 0;
  for (const auto& e : fs::directory_iterator(sharded)) {
    shards += e.path().filename().string().find("-of-") != std::string::npos;
  }
  EXPECT_GT(shards, 2);
  EXPECT_TRUE(
      fs::exists(sharded / ("model-00001-of-0000" + std::to_string(shards) + ".safetensors")));
  const std::vector<int32_t> tokens = {1, 2, 3, 50};
  EXPECT_EQ(PrefillLogits(single, tokens), PrefillLogits(sharded, tokens));

  // Replacing the sharded model with a single file leaves no stale shards behind.
  core::RandomModelSpec replace = TinySpec(3);
  replace.overwrite = true;
  ASSERT_TRUE(core::WriteRandomModel(replace, sharded).ok());
  EXPECT_FALSE(fs::exists(sharded / "model.safetensors.index.json"));
  EXPECT_EQ(ReadWholeFile(sharded / "model.safetensors"),
            ReadWholeFile(single / "model.safetensors"));
}

TEST(MkmodelTest, Bf16ModelLoads) {
  ToolTempDir tmp;
  core::RandomModelSpec spec = TinySpec(4);
  spec.dtype = kernels::DType::kBF16;
  ASSERT_TRUE(core::WriteRandomModel(spec, tmp.path()).ok());
  EXPECT_THAT(ReadWholeFile(tmp.path() / "config.json"), HasSubstr("\"bfloat16\""));
  const std::vector<float> logits = PrefillLogits(tmp.path(), {4, 5});
  EXPECT_EQ(logits.size(), 2u * 97u);
}

TEST(MkmodelTest, RejectsIndivisibleHeads) {
  core::RandomModelSpec spec = TinySpec(1);
  spec.num_heads = 3;
  const absl::Status s = core::ValidateRandomModelSpec(spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not divide"));
}

}  // namespace
}  // namespace xlstmd::testing
