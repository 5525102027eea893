// Family-B configs (xlstm-spec.md 4.1): the golden one with its derived dims, the choices a
// config may make (slstm_at "all", no conv, vanilla layout, other activations, no block of a
// kind), and one clear error per malformed input, naming the file and the field.
#include <cmath>
#include <filesystem>
#include <string>

#include "core/model/checkpoint.h"
#include "core/model/config.h"
#include "core/model/safetensors.h"
#include "core/model/xlstm_model.h"
#include "kernels/backend_registry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/model_files_testutil.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using ::xlstmd::testing::MessageHas;
using ::xlstmd::testing::ReadFile;
using ::xlstmd::testing::ScopedTempDir;
using ::xlstmd::testing::WriteFile;
using ::xlstmd::testing::StatusIs;
using Json = nlohmann::json;

const std::filesystem::path kGolden = XLSTMD_SHARED_DIR "/golden/xlstm-paper-b1";

Json Golden() { return Json::parse(ReadFile(kGolden / "config.json")); }

absl::StatusOr<ModelConfig> Parse(const Json& j) {
  return ParseModelConfig(j.dump(), "test/config.json");
}

TEST(PaperConfigTest, LoadsGoldenConfigWithDerivedDims) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig(kGolden);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kPaper);
  EXPECT_EQ(c->model_type, "xlstm-paper");
  EXPECT_EQ(c->vocab_size, 300);
  EXPECT_EQ(c->embedding_dim, 64);
  EXPECT_EQ(c->num_blocks, 4);
  const PaperConfig& p = c->paper;
  EXPECT_EQ(p.slstm, (std::vector<bool>{false, true, false, true}));
  EXPECT_EQ(p.m_inner(64), 128);
  EXPECT_EQ(p.m_dh(64), 32);
  EXPECT_EQ(p.s_dh(64), 16);
  EXPECT_EQ(p.ff_dim(64), 128);  // ceil(1.3 * 64 / 64) * 64
  EXPECT_EQ(p.m_conv, 4);
  EXPECT_EQ(p.s_conv, 4);
  EXPECT_EQ(p.ff_act, "gelu");
  EXPECT_FALSE(p.s_vanilla_layout);
  EXPECT_TRUE(p.add_post_blocks_norm);
  EXPECT_FALSE(p.tie_weights);
  EXPECT_EQ(c->output_logit_soft_cap, 0.0f);
}

TEST(PaperConfigTest, ValidChoices) {
  Json j = Golden();
  j["slstm_at"] = "all";
  j["mlstm_block"] = nullptr;  // not needed without mLSTM blocks
  j["slstm_block"]["slstm"]["conv1d_kernel_size"] = 0;
  j["slstm_block"]["slstm"]["backend"] = "vanilla";
  j.erase("slstm_weight_layout");
  j["slstm_block"]["feedforward"]["act_fn"] = "relu^2";
  j["slstm_block"]["feedforward"]["round_proj_up_dim_up"] = false;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->paper.slstm, std::vector<bool>(4, true));
  EXPECT_FALSE(c->paper.has_mlstm());
  EXPECT_TRUE(c->paper.s_vanilla_layout);
  EXPECT_EQ(c->paper.ff_dim(64), 64);  // floor(1.3 * 64 / 64) * 64
  Json m = Golden();
  m["slstm_at"] = Json::array();
  m["slstm_block"] = nullptr;
  m["mlstm_block"]["mlstm"]["conv1d_kernel_size"] = 0;
  c = Parse(m);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->paper.has_slstm());
  EXPECT_EQ(c->paper.m_conv, 0);
  // Upstream: no mLSTM config makes every block sLSTM; no feed-forward config, no FFN; each
  // part's bias follows its own config.
  Json s = Golden();
  s["mlstm_block"] = nullptr;
  s["slstm_block"]["feedforward"] = nullptr;
  c = Parse(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->paper.slstm, std::vector<bool>(4, true));
  EXPECT_FALSE(c->paper.s_ffn);
  Json b = Golden();
  b["bias"] = false;
  b["mlstm_block"]["mlstm"]["bias"] = true;
  b["slstm_block"]["feedforward"]["bias"] = false;
  c = Parse(b);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->paper.m_bias);
  EXPECT_FALSE(c->paper.ff_bias);
}

TEST(PaperConfigTest, MalformedConfigsNameTheField) {
  struct Case {
    const char* what;
    void (*edit)(Json&);
    const char* field;
  };
  const Case cases[] = {
      {"slstm_at out of range", [](Json& j) { j["slstm_at"] = {1, 4}; }, "slstm_at"},
      {"slstm_at twice", [](Json& j) { j["slstm_at"] = {1, 1}; }, "slstm_at"},
      {"slstm_at a string", [](Json& j) { j["slstm_at"] = "some"; }, "slstm_at"},
      {"mlstm heads", [](Json& j) { j["mlstm_block"]["mlstm"]["num_heads"] = 3; }, "num_heads"},
      {"slstm heads", [](Json& j) { j["slstm_block"]["slstm"]["num_heads"] = 5; }, "num_heads"},
      {"blocksize", [](Json& j) { j["mlstm_block"]["mlstm"]["qkv_proj_blocksize"] = 3; },
       "qkv_proj_blocksize"},
      {"negative conv", [](Json& j) { j["slstm_block"]["slstm"]["conv1d_kernel_size"] = -1; },
       "conv1d_kernel_size"},
      {"activation", [](Json& j) { j["slstm_block"]["feedforward"]["act_fn"] = "tanh"; }, "act_fn"},
      {"ff_type", [](Json& j) { j["slstm_block"]["feedforward"]["ff_type"] = "ffn"; }, "ff_type"},
      {"layout", [](Json& j) { j["slstm_weight_layout"] = "triton"; }, "slstm_weight_layout"},
      {"missing slstm block", [](Json& j) { j["slstm_block"] = nullptr; }, "slstm_block"},
      {"missing E", [](Json& j) { j.erase("embedding_dim"); }, "embedding_dim"},
      {"bool as string", [](Json& j) { j["tie_weights"] = "yes"; }, "tie_weights"},
      {"proj factor", [](Json& j) { j["mlstm_block"]["mlstm"]["proj_factor"] = 0; }, "proj_factor"},
  };
  for (const Case& c : cases) {
    Json j = Golden();
    c.edit(j);
    EXPECT_THAT(Parse(j).status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                            MessageHas("test/config.json", c.field)))
        << c.what;
  }
}

// Rewrites the golden checkpoint into `dir` with `config`, leaving out tensors `drop` rejects.
template <typename Drop>
void RewriteGolden(const std::filesystem::path& dir, const Json& config, Drop drop) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> src =
      SafetensorsFile::Open(kGolden / "model.safetensors");
  ASSERT_TRUE(src.ok()) << src.status();
  WriteFile(dir / "config.json", config.dump());
  std::vector<TensorToWrite> out;
  for (const TensorView& t : (*src)->tensors()) {
    if (!drop(t.name)) out.push_back({t.name, t.dtype, t.shape, t.data});
  }
  ASSERT_TRUE(WriteSafetensors(dir / "model.safetensors", out).ok());
}

// Checkpoints upstream can write that the golden one does not cover: sLSTM blocks without a
// feed-forward part, and a tied head saved under lm_head.weight only (safetensors'
// save_model keeps one name of a tied pair).
TEST(PaperConfigTest, NoFfnAndHeadOnlyTiedCheckpointsLoadAndRun) {
  kernels::BackendOptions opts;
  opts.threads = 1;
  opts.weight_dtype = kernels::DType::kF32;
  auto be = kernels::CreateBackend("cpu", opts);
  ASSERT_TRUE(be.ok()) << be.status();
  struct Case {
    const char* what;
    void (*edit)(Json&);
    bool (*drop)(const std::string&);
  };
  const Case cases[] = {
      {"no ffn", [](Json& j) { j["slstm_block"]["feedforward"] = nullptr; },
       [](const std::string& n) { return n.find("ffn") != std::string::npos; }},
      {"tied head only", [](Json& j) { j["tie_weights"] = true; },
       [](const std::string& n) { return n == "token_embedding.weight"; }},
  };
  for (const Case& c : cases) {
    ScopedTempDir dir;
    Json j = Golden();
    c.edit(j);
    RewriteGolden(dir.path(), j, c.drop);
    auto m = XlstmModel::Load(dir.path(), be->get());
    ASSERT_TRUE(m.ok()) << c.what << ": " << m.status();
    ASSERT_TRUE((*m)->AllocateSlots(1).ok());
    const std::vector<int32_t> toks = {5, 17, 250, 3};
    std::vector<float> logits;
    const PrefillSequence seq{toks, 0};
    ASSERT_TRUE((*m)->Prefill({&seq, 1}, PrefillOptions{}, &logits).ok()) << c.what;
    ASSERT_EQ(logits.size(), 300u);
    for (float v : logits) ASSERT_TRUE(std::isfinite(v)) << c.what;
  }
}

// The golden checkpoint rewritten with one tensor dropped or reshaped: the loader names the
// tensor, its file and both shapes.
TEST(PaperConfigTest, MalformedWeightsNameTheTensor) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> src =
      SafetensorsFile::Open(kGolden / "model.safetensors");
  ASSERT_TRUE(src.ok()) << src.status();
  const absl::StatusOr<ModelConfig> config = LoadModelConfig(kGolden);
  ASSERT_TRUE(config.ok());
  struct Case {
    std::string tensor;
    bool drop;
    absl::StatusCode code;
  };
  for (const Case& c : {Case{"xlstm_block_stack.blocks.1.xlstm.slstm_cell._recurrent_kernel_",
                             false, absl::StatusCode::kInvalidArgument},
                        Case{"xlstm_block_stack.blocks.0.xlstm.q_proj.weight", false,
                             absl::StatusCode::kInvalidArgument},
                        Case{"xlstm_block_stack.blocks.2.xlstm.learnable_skip", true,
                             absl::StatusCode::kNotFound},
                        Case{"xlstm_block_stack.blocks.3.xlstm.conv1d.conv.weight", true,
                             absl::StatusCode::kNotFound}}) {
    ScopedTempDir dir;
    WriteFile(dir.path() / "config.json", ReadFile(kGolden / "config.json"));
    std::vector<TensorToWrite> out;
    for (const TensorView& t : (*src)->tensors()) {
      if (t.name != c.tensor) {
        out.push_back({t.name, t.dtype, t.shape, t.data});
      } else if (!c.drop) {  // the same bytes as a flat vector
        int64_t n = 1;
        for (int64_t d : t.shape) n *= d;
        out.push_back({t.name, t.dtype, {n}, t.data});
      }
    }
    ASSERT_TRUE(WriteSafetensors(dir.path() / "model.safetensors", out).ok());
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir.path());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    const absl::Status s = ResolvePaperTensors(**ckpt, *config).status();
    EXPECT_EQ(s.code(), c.code) << s;
    EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr(c.tensor));
    if (!c.drop) {
      EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("expected ["));
    }
  }
}

}  // namespace
}  // namespace xlstmd::core
