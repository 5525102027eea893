// `xlstm mkmodel --family xlstm-paper` and core::WritePaperRandomModel: every option combination
// loads with XlstmModel::Load and runs (finite logits, prefill = steps); the config and tensor
// layout match the official golden checkpoint's; the cuda and vanilla sLSTM layouts hold the same
// logical weights (bit-identical logits); the bytes depend on the spec alone; bad specs and
// flags of the other family are rejected naming the field.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/model/config.h"
#include "core/model/random_model_paper.h"
#include "core/model/xlstm_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "nlohmann/json.hpp"
#include "tests/testing/golden.h"
#include "tests/tools/tool_runner.h"

namespace xlstmd::testing {
namespace {

namespace fs = std::filesystem;
using core::PaperModelSpec;
using core::SlstmWeightLayout;
using ::testing::HasSubstr;
using Json = nlohmann::json;

PaperModelSpec SmallSpec(uint64_t seed) {
  PaperModelSpec s;
  s.embedding_dim = 64;
  s.num_blocks = 4;
  s.vocab = 97;
  s.slstm_at = {1, 3};
  s.seed = seed;
  return s;
}

// name -> (shape, data offsets) of a single-file safetensors checkpoint.
struct StoredTensor {
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

std::map<std::string, StoredTensor> ReadHeader(const fs::path& file, uint64_t* data_start) {
  const std::string bytes = ReadWholeFile(file);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes.at(i));
  *data_start = 8 + n;
  std::map<std::string, StoredTensor> out;
  const Json header = Json::parse(bytes.substr(8, n));
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") continue;
    out[name] = {v["shape"].get<std::vector<int64_t>>(), v["data_offsets"][0].get<uint64_t>(),
                 v["data_offsets"][1].get<uint64_t>()};
  }
  return out;
}

std::vector<float> ReadF32Tensor(const fs::path& file, const std::string& name) {
  uint64_t start = 0;
  const auto header = ReadHeader(file, &start);
  const auto it = header.find(name);
  EXPECT_NE(it, header.end()) << name;
  if (it == header.end()) return {};
  const std::string bytes = ReadWholeFile(file);
  std::vector<float> v((it->second.end - it->second.begin) / 4);
  std::memcpy(v.data(), bytes.data() + start + it->second.begin, v.size() * 4);
  return v;
}

struct RunResult {
  std::vector<float> prefill;  // [tokens, vocab]
  std::vector<float> steps;    // the same tokens one step at a time, [tokens, vocab]
};

// Runs `tokens` through the model twice on the CPU backend: one prefill (chunk 4, so several
// chunks) and token by token with Step.
RunResult RunModel(const fs::path& dir, const std::vector<int32_t>& tokens) {
  RunResult r;
  auto backend = kernels::CreateBackend("cpu", {1, kernels::DType::kF32});
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return r;
  auto model = core::XlstmModel::Load(dir, backend->get());
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return r;
  EXPECT_TRUE((*model)->AllocateSlots(2).ok());
  const core::PrefillSequence seq{tokens, 0};
  EXPECT_TRUE((*model)->Prefill({&seq, 1}, {4, core::LogitsMode::kAll}, &r.prefill).ok());
  for (int32_t t : tokens) {
    std::vector<float> row;
    const int32_t slot = 1;
    EXPECT_TRUE((*model)->Step({&t, 1}, {&slot, 1}, &row).ok());
    r.steps.insert(r.steps.end(), row.begin(), row.end());
  }
  return r;
}

void ExpectRealistic(const std::vector<float>& logits, size_t expected_size) {
  ASSERT_EQ(logits.size(), expected_size);
  float lo = logits[0], hi = logits[0];
  for (float x : logits) {
    ASSERT_TRUE(std::isfinite(x));
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  EXPECT_GT(hi - lo, 0.5f) << "logits nearly constant";
  EXPECT_LT(hi - lo, 60.0f);
}

struct OptionCase {
  std::string name;
  void (*apply)(PaperModelSpec&);
};

class PaperOptionsTest : public ::testing::TestWithParam<OptionCase> {};

TEST_P(PaperOptionsTest, LoadsAndRuns) {
  PaperModelSpec spec = SmallSpec(5);
  GetParam().apply(spec);
  ToolTempDir tmp;
  ASSERT_TRUE(core::WritePaperRandomModel(spec, tmp.path()).ok());

  uint64_t start = 0;
  const auto header = ReadHeader(tmp.path() / "model.safetensors", &start);
  EXPECT_EQ(header.count("lm_head.weight"), spec.tie_weights ? 0u : 1u);
  const bool has_mlstm = spec.slstm_at.size() < static_cast<size_t>(spec.num_blocks);
  const bool has_slstm = !spec.slstm_at.empty();
  int biases = 0, group_norms = 0, convs = 0;
  for (const auto& [name, t] : header) {
    biases += name.ends_with("proj_up.bias") || name.ends_with("proj_down.bias") ||
              name.ends_with("_proj.bias");
    group_norms += name.ends_with("group_norm.weight");
    convs += name.ends_with("conv1d.conv.weight");
    EXPECT_FALSE(name.ends_with("norm.bias")) << name;
  }
  const int slstm_blocks = static_cast<int>(spec.slstm_at.size());
  const int mlstm_blocks = static_cast<int>(spec.num_blocks) - slstm_blocks;
  EXPECT_EQ(biases, spec.bias ? 5 * mlstm_blocks + 2 * slstm_blocks : 0);
  EXPECT_EQ(group_norms, spec.group_norm_weight ? slstm_blocks : 0);
  EXPECT_EQ(convs,
            (spec.mlstm_conv > 0 ? mlstm_blocks : 0) + (spec.slstm_conv > 0 ? slstm_blocks : 0));

  const Json config = Json::parse(ReadWholeFile(tmp.path() / "config.json"));
  EXPECT_EQ(config["mlstm_block"].is_null(), !has_mlstm);
  EXPECT_EQ(config["slstm_block"].is_null(), !has_slstm);

  const std::vector<int32_t> tokens = {5, 17, 3, 96, 0, 42, 7};
  const RunResult r = RunModel(tmp.path(), tokens);
  ExpectRealistic(r.prefill, tokens.size() * 97);
  ExpectRealistic(r.steps, tokens.size() * 97);
  ASSERT_EQ(r.prefill.size(), r.steps.size());
  for (size_t i = 0; i < r.prefill.size(); ++i) {
    ASSERT_NEAR(r.prefill[i], r.steps[i], 1e-3f * std::max(1.0f, std::fabs(r.steps[i]))) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Options, PaperOptionsTest,
    ::testing::Values(OptionCase{"Defaults", [](PaperModelSpec&) {}},
                      OptionCase{"NoConv",
                                 [](PaperModelSpec& s) {
                                   s.mlstm_conv = 0;
                                   s.slstm_conv = 0;
                                 }},
                      OptionCase{"MlstmOnly", [](PaperModelSpec& s) { s.slstm_at.clear(); }},
                      OptionCase{"SlstmOnly",
                                 [](PaperModelSpec& s) {
                                   s.slstm_at = {3, 0, 2, 1};
                                   s.mlstm_heads = 3;  // not validated: there is no mLSTM block
                                 }},
                      OptionCase{"BiasAndTiedWeights",
                                 [](PaperModelSpec& s) {
                                   s.bias = true;
                                   s.tie_weights = true;
                                 }},
                      OptionCase{"VanillaLayoutNoGroupNormReluSq",
                                 [](PaperModelSpec& s) {
                                   s.slstm_layout = SlstmWeightLayout::kVanilla;
                                   s.group_norm_weight = false;
                                   s.ffn_act = "relu^2";
                                   s.slstm_conv = 2;
                                 }},
                      OptionCase{"Bf16OddDims",
                                 [](PaperModelSpec& s) {
                                   s.dtype = kernels::DType::kBF16;
                                   s.embedding_dim = 96;  // Din 192, F 128, sLSTM DH 48
                                   s.num_blocks = 3;
                                   s.slstm_at = {0};
                                   s.mlstm_heads = 2;
                                   s.qkv_proj_blocksize = 8;
                                   s.slstm_heads = 2;
                                   s.mlstm_conv = 3;
                                   s.ffn_act = "selu";
                                 }},
                      OptionCase{"WideProjSwish",
                                 [](PaperModelSpec& s) {
                                   s.mlstm_proj_factor = 1.3;
                                   s.ffn_proj_factor = 2.0;
                                   s.ffn_act = "swish";
                                   s.slstm_heads = 1;
                                   s.bias = true;
                                 }}),
    [](const ::testing::TestParamInfo<OptionCase>& info) { return info.param.name; });

// A generated model is laid out like the official checkpoint: with the golden model's
// dimensions, config.json equals the golden one field for field (but the free-text note) and
// the safetensors hold the same tensor names and shapes.
TEST(MkmodelPaperTest, MatchesGoldenCheckpointLayout) {
  PaperModelSpec spec = SmallSpec(1);
  spec.vocab = 300;
  spec.context_length = 256;
  ToolTempDir tmp;
  ASSERT_TRUE(core::WritePaperRandomModel(spec, tmp.path()).ok());
  const fs::path golden = GoldenDir("xlstm-paper-b1");
  Json want = Json::parse(ReadWholeFile(golden / "config.json"));
  Json got = Json::parse(ReadWholeFile(tmp.path() / "config.json"));
  EXPECT_THAT(got["_note"].get<std::string>(), HasSubstr("cuda-backend internal layout"));
  want.erase("_note");
  got.erase("_note");
  EXPECT_EQ(got.value("xlstmd_random_weights", false), true) << "mkmodel marks its output";
  got.erase("xlstmd_random_weights");
  EXPECT_EQ(got, want) << got.dump(2);

  uint64_t start = 0;
  const auto want_tensors = ReadHeader(golden / "model.safetensors", &start);
  const auto got_tensors = ReadHeader(tmp.path() / "model.safetensors", &start);
  ASSERT_EQ(got_tensors.size(), want_tensors.size());
  for (const auto& [name, t] : want_tensors) {
    const auto it = got_tensors.find(name);
    ASSERT_NE(it, got_tensors.end()) << name;
    EXPECT_EQ(it->second.shape, t.shape) << name;
  }
}

// The vanilla file is the cuda file's logical weights permuted (spec 4.4), so the two load to
// the same model.
TEST(MkmodelPaperTest, CudaAndVanillaLayoutsHoldTheSameModel) {
  ToolTempDir tmp;
  const fs::path cuda = tmp.path() / "cuda", vanilla = tmp.path() / "vanilla";
  PaperModelSpec spec = SmallSpec(9);
  spec.slstm_heads = 2;  // DH 32: head and gate axes are told apart
  ASSERT_TRUE(core::WritePaperRandomModel(spec, cuda).ok());
  spec.slstm_layout = SlstmWeightLayout::kVanilla;
  ASSERT_TRUE(core::WritePaperRandomModel(spec, vanilla).ok());
  EXPECT_THAT(ReadWholeFile(vanilla / "config.json"), HasSubstr("\"backend\": \"vanilla\""));

  const int64_t nh = 2, dh = 32, e = 64;
  const std::string cell = "xlstm_block_stack.blocks.1.xlstm.slstm_cell.";
  const std::vector<float> rc =
      ReadF32Tensor(cuda / "model.safetensors", cell + "_recurrent_kernel_");
  const std::vector<float> rv =
      ReadF32Tensor(vanilla / "model.safetensors", cell + "_recurrent_kernel_");
  ASSERT_EQ(rc.size(), static_cast<size_t>(nh * dh * 4 * dh));
  ASSERT_EQ(rv.size(), rc.size());
  for (int64_t j = 0; j < nh; ++j)
    for (int64_t in = 0; in < dh; ++in)
      for (int64_t go = 0; go < 4 * dh; ++go)
        ASSERT_EQ(rv[(j * 4 * dh + go) * dh + in], rc[(j * dh + in) * 4 * dh + go]);
  const std::vector<float> bc = ReadF32Tensor(cuda / "model.safetensors", cell + "_bias_");
  const std::vector<float> bv = ReadF32Tensor(vanilla / "model.safetensors", cell + "_bias_");
  ASSERT_EQ(bc.size(), static_cast<size_t>(4 * e));
  ASSERT_EQ(bv.size(), bc.size());
  const float lo[4] = {-3.0f, 3.0f, -0.05f, -0.05f}, hi[4] = {0.0f, 6.0f, 0.05f, 0.05f};
  for (int64_t j = 0; j < nh; ++j)
    for (int64_t g = 0; g < 4; ++g)
      for (int64_t u = 0; u < dh; ++u) {
        const float b = bc[(j * 4 + g) * dh + u];
        ASSERT_EQ(bv[(g * nh + j) * dh + u], b);
        ASSERT_GE(b, lo[g]) << "gate " << g;
        ASSERT_LE(b, hi[g]) << "gate " << g;
      }

  const std::vector<int32_t> tokens = {1, 2, 3, 50, 96, 4};
  const RunResult a = RunModel(cuda, tokens), b = RunModel(vanilla, tokens);
  ASSERT_FALSE(a.prefill.empty());
  EXPECT_EQ(a.prefill, b.prefill);
  EXPECT_EQ(a.steps, b.steps);
}

// A recurrent kernel of several generator chunks (4M elements): the permuted draw crosses
// chunk boundaries in a different order than the file.
TEST(MkmodelPaperTest, LayoutsAgreeAcrossGeneratorChunks) {
  ToolTempDir tmp;
  PaperModelSpec spec;
  spec.embedding_dim = 1024;
  spec.num_blocks = 1;
  spec.vocab = 3;
  spec.slstm_at = {0};
  spec.slstm_heads = 1;
  spec.slstm_conv = 0;
  spec.ffn_proj_factor = 0.01;
  ASSERT_TRUE(core::WritePaperRandomModel(spec, tmp.path() / "cuda").ok());
  spec.slstm_layout = SlstmWeightLayout::kVanilla;
  ASSERT_TRUE(core::WritePaperRandomModel(spec, tmp.path() / "vanilla").ok());
  const std::string name = "xlstm_block_stack.blocks.0.xlstm.slstm_cell._recurrent_kernel_";
  const std::vector<float> rc = ReadF32Tensor(tmp.path() / "cuda" / "model.safetensors", name);
  const std::vector<float> rv = ReadF32Tensor(tmp.path() / "vanilla" / "model.safetensors", name);
  const int64_t dh = 1024;
  ASSERT_EQ(rc.size(), static_cast<size_t>(4 * dh * dh));
  ASSERT_EQ(rv.size(), rc.size());
  for (int64_t in = 0; in < dh; ++in)
    for (int64_t go = 0; go < 4 * dh; ++go) ASSERT_EQ(rv[go * dh + in], rc[in * 4 * dh + go]);
}

TEST(MkmodelPaperTest, BytesDependOnSpecOnly) {
  ToolTempDir tmp;
  const fs::path a = tmp.path() / "a", b = tmp.path() / "b", c = tmp.path() / "c";
  PaperModelSpec spec = SmallSpec(7);
  spec.bias = true;
  spec.slstm_layout = SlstmWeightLayout::kVanilla;
  spec.threads = 1;
  ASSERT_TRUE(core::WritePaperRandomModel(spec, a).ok());
  spec.threads = 3;
  ASSERT_TRUE(core::WritePaperRandomModel(spec, b).ok());
  spec.seed = 8;
  ASSERT_TRUE(core::WritePaperRandomModel(spec, c).ok());
  for (const char* f : {"config.json", "model.safetensors"}) {
    EXPECT_EQ(ReadWholeFile(a / f), ReadWholeFile(b / f)) << f;
  }
  EXPECT_EQ(ReadWholeFile(a / "config.json"), ReadWholeFile(c / "config.json"));
  EXPECT_NE(ReadWholeFile(a / "model.safetensors"), ReadWholeFile(c / "model.safetensors"));
}

TEST(MkmodelPaperTest, ShardedModelLoadsLikeSingleFile) {
  ToolTempDir tmp;
  const fs::path single = tmp.path() / "single", sharded = tmp.path() / "sharded";
  PaperModelSpec spec = SmallSpec(3);
  ASSERT_TRUE(core::WritePaperRandomModel(spec, single).ok());
  spec.max_shard_bytes = 64 << 10;
  ASSERT_TRUE(core::WritePaperRandomModel(spec, sharded).ok());
  EXPECT_FALSE(fs::exists(sharded / "model.safetensors"));
  EXPECT_TRUE(fs::exists(sharded / "model.safetensors.index.json"));
  const std::vector<int32_t> tokens = {9, 8, 7};
  EXPECT_EQ(RunModel(single, tokens).prefill, RunModel(sharded, tokens).prefill);
}

TEST(MkmodelPaperTest, ParameterCountMatchesFile) {
  PaperModelSpec spec = SmallSpec(1);
  spec.bias = true;
  ToolTempDir tmp;
  ASSERT_TRUE(core::WritePaperRandomModel(spec, tmp.path()).ok());
  uint64_t start = 0;
  int64_t total = 0;
  for (const auto& [name, t] : ReadHeader(tmp.path() / "model.safetensors", &start)) {
    total += static_cast<int64_t>(t.end - t.begin) / 4;
  }
  EXPECT_EQ(core::PaperModelParameterCount(spec), total);
}

struct InvalidCase {
  void (*apply)(PaperModelSpec&);
  std::string field;
};

TEST(MkmodelPaperTest, InvalidSpecsNameTheField) {
  const std::vector<InvalidCase> cases = {
      {[](PaperModelSpec& s) { s.embedding_dim = 0; }, "embedding_dim"},
      {[](PaperModelSpec& s) { s.num_blocks = 0; }, "num_blocks"},
      {[](PaperModelSpec& s) { s.vocab = 2; }, "vocab"},
      {[](PaperModelSpec& s) { s.slstm_at = {4}; }, "slstm_at holds 4, outside"},
      {[](PaperModelSpec& s) { s.slstm_at = {-1}; }, "slstm_at"},
      {[](PaperModelSpec& s) {
         s.slstm_at = {1, 1};
       },
       "slstm_at holds 1 twice"},
      {[](PaperModelSpec& s) { s.mlstm_heads = 3; }, "mlstm_heads 3 does not divide"},
      {[](PaperModelSpec& s) { s.mlstm_heads = 0; }, "mlstm_heads"},
      {[](PaperModelSpec& s) { s.qkv_proj_blocksize = 5; }, "qkv_proj_blocksize 5 does not divide"},
      {[](PaperModelSpec& s) { s.mlstm_conv = -1; }, "mlstm_conv"},
      {[](PaperModelSpec& s) { s.mlstm_proj_factor = 0.0; }, "mlstm_proj_factor"},
      {[](PaperModelSpec& s) { s.slstm_heads = 3; }, "slstm_heads 3 does not divide embedding_dim"},
      {[](PaperModelSpec& s) { s.slstm_heads = 128; }, "slstm_heads"},
      {[](PaperModelSpec& s) { s.slstm_conv = 2000; }, "slstm_conv"},
      {[](PaperModelSpec& s) { s.ffn_proj_factor = -1.0; }, "ffn_proj_factor"},
      {[](PaperModelSpec& s) { s.ffn_act = "tanh"; }, "ffn_act"},
      {[](PaperModelSpec& s) { s.context_length = 0; }, "context_length"},
      {[](PaperModelSpec& s) { s.dtype = kernels::DType::kI8; }, "dtype"},
  };
  ToolTempDir tmp;
  for (const InvalidCase& c : cases) {
    SCOPED_TRACE(c.field);
    PaperModelSpec spec = SmallSpec(1);
    c.apply(spec);
    const absl::Status s = core::ValidatePaperModelSpec(spec);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.field));
    EXPECT_EQ(core::WritePaperRandomModel(spec, tmp.path() / "m").code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_FALSE(fs::exists(tmp.path() / "m"));
  }
}

std::vector<std::string> PaperArgs(const fs::path& out) {
  return {"mkmodel",   "--family", "xlstm-paper", "--embedding-dim", "64", "--num-blocks",
          "4",         "--vocab",  "97",          "--seed",          "11", "--out",
          out.string()};
}

// Every family-B flag reaches the spec: the CLI writes the same bytes as the API.
TEST(MkmodelPaperCliTest, FlagsWriteTheSpecsModel) {
  ToolTempDir tmp;
  std::vector<std::string> args = PaperArgs(tmp.path() / "cli");
  args.insert(args.end(), {"--slstm-at",
                           "2,0",
                           "--num-heads",
                           "2",
                           "--slstm-heads",
                           "2",
                           "--conv",
                           "0",
                           "--slstm-conv",
                           "3",
                           "--qkv-blocksize",
                           "8",
                           "--proj-factor",
                           "1.5",
                           "--ffn-proj-factor",
                           "1.8",
                           "--ffn-act",
                           "sigmoid",
                           "--group-norm-weight=false",
                           "--bias",
                           "--tie-weights",
                           "--slstm-layout",
                           "vanilla",
                           "--context-length",
                           "512",
                           "--weight-dtype",
                           "bf16",
                           "--threads",
                           "2"});
  const ToolResult r = RunTool(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  // One summary line on success, saying the weights are random.
  EXPECT_THAT(r.out, ::testing::MatchesRegex("wrote .*cli: xlstm-paper, 4 blocks, embedding 64, "
                                             "vocab 97, [a-z0-9]+, [0-9.]+ MB of weights "
                                             "\\(random, seed 11\\)\n"));

  PaperModelSpec spec = SmallSpec(11);
  spec.slstm_at = {0, 2};
  spec.mlstm_heads = 2;
  spec.slstm_heads = 2;
  spec.mlstm_conv = 0;
  spec.slstm_conv = 3;
  spec.qkv_proj_blocksize = 8;
  spec.mlstm_proj_factor = 1.5;
  spec.ffn_proj_factor = 1.8;
  spec.ffn_act = "sigmoid";
  spec.group_norm_weight = false;
  spec.bias = true;
  spec.tie_weights = true;
  spec.slstm_layout = SlstmWeightLayout::kVanilla;
  spec.context_length = 512;
  spec.dtype = kernels::DType::kBF16;
  ASSERT_TRUE(core::WritePaperRandomModel(spec, tmp.path() / "api").ok());
  for (const char* f : {"config.json", "model.safetensors"}) {
    EXPECT_EQ(ReadWholeFile(tmp.path() / "cli" / f), ReadWholeFile(tmp.path() / "api" / f)) << f;
  }
  ExpectRealistic(RunModel(tmp.path() / "cli", {1, 2, 3}).prefill, 3 * 97);
}

TEST(MkmodelPaperCliTest, DefaultsAreUpstreams) {
  ToolTempDir tmp;
  std::vector<std::string> args = PaperArgs(tmp.path() / "m");
  args.insert(args.end(), {"--slstm-at", "all"});
  ASSERT_EQ(RunTool(args).exit_code, 0);
  auto config = core::LoadModelConfig(tmp.path() / "m");
  ASSERT_TRUE(config.ok()) << config.status();
  const core::PaperConfig& p = config->paper;
  EXPECT_EQ(config->family, core::ModelFamily::kPaper);
  EXPECT_EQ(std::count(p.slstm.begin(), p.slstm.end(), true), 4);
  EXPECT_EQ(p.s_heads, 4);
  EXPECT_EQ(p.s_conv, 4);
  EXPECT_EQ(p.ff_dim(64), 128);  // ffn proj factor 1.3, not family A's 2.667
  EXPECT_EQ(p.ff_act, "gelu");
  EXPECT_TRUE(p.s_group_norm_weight);
  EXPECT_FALSE(p.s_vanilla_layout);
  EXPECT_FALSE(p.bias);
  EXPECT_FALSE(p.tie_weights);
}

TEST(MkmodelPaperCliTest, UsageErrorsPrintOneLine) {
  ToolTempDir tmp;
  const fs::path out = tmp.path() / "m";
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = PaperArgs(out);
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {with({"--qk-dim-factor", "0.5"}), "--qk-dim-factor applies to --family xlstm only"},
      {with({"--slstm-at", "1,x"}), "--slstm-at: 'x' is not a block index"},
      {with({"--slstm-at", "4"}), "slstm_at holds 4"},
      {with({"--num-heads", "3"}), "mlstm_heads 3 does not divide"},
      {with({"--slstm-layout", "triton"}), "not one of"},
      {{"mkmodel", "--family", "xlstm", "--embedding-dim", "64", "--num-blocks", "2", "--num-heads",
        "2", "--vocab", "97", "--seed", "1", "--out", out.string(), "--slstm-at", "1"},
       "--slstm-at applies to --family xlstm-paper only"},
      {{"mkmodel", "--embedding-dim", "64", "--num-blocks", "2", "--vocab", "97", "--seed", "1",
        "--out", out.string()},
       "missing required flag --num-heads"},
  };
  for (const auto& [args, message] : cases) {
    SCOPED_TRACE(message);
    const ToolResult r = RunTool(args);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.ErrLines(), 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr(message));
    EXPECT_FALSE(fs::exists(out));
  }
}

}  // namespace
}  // namespace xlstmd::testing
