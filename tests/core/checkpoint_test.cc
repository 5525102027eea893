// Checkpoint::Open and ResolveXlstmTensors: the golden checkpoints, checkpoints rewritten by
// the test in every accepted layout (sharded, renamed, unprefixed, fused, biased, tied) that
// must resolve to byte-identical slices, and one test per malformed checkpoint.
#include "core/model/checkpoint.h"

#include <cstdint>
#include <deque>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/model/config.h"
#include "core/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/checkpoint_fixture.h"
#include "tests/core/model_files_testutil.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using checkpoint_testing::AllSliceBytes;
using checkpoint_testing::Bytes;
using checkpoint_testing::CheckpointTest;
using checkpoint_testing::kGoldenDir;
using checkpoint_testing::kGoldenBf16;
using checkpoint_testing::kGoldenF32;
using checkpoint_testing::kQ0;
using ::xlstmd::testing::MessageHas;
using ::xlstmd::testing::StatusIs;
using ::xlstmd::testing::WriteFile;
using Json = nlohmann::json;

TEST_F(CheckpointTest, ResolvesGoldenF32) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(kGoldenF32);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->Names().size(), 33u);
  EXPECT_EQ((*ckpt)->files().size(), 1u);
  EXPECT_EQ((*ckpt)->Names().front(), "backbone.blocks.0.ffn.proj_down.weight");
  absl::StatusOr<XlstmTensors> t = ResolveXlstmTensors(**ckpt, config_);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->blocks.size(), 2u);
  const XlstmBlockTensors& b0 = t->blocks[0];
  EXPECT_EQ(b0.q.tensor, (*ckpt)->Find(kQ0));
  EXPECT_EQ(b0.q.data(), (*ckpt)->Find(kQ0)->data);
  EXPECT_EQ(b0.q.rows, 64);
  EXPECT_EQ(b0.q.cols, 128);
  EXPECT_EQ(b0.v.rows, 128);
  EXPECT_EQ(b0.igate_b.rows, 4);
  EXPECT_EQ(b0.igate_b.cols, 1);
  EXPECT_EQ(b0.ffn_gate.tensor->name, "backbone.blocks.0.ffn.proj_up_gate.weight");
  EXPECT_EQ(b0.ffn_up.tensor->name, "backbone.blocks.0.ffn.proj_up.weight");
  EXPECT_EQ(b0.ffn_down.rows, 128);
  EXPECT_EQ(b0.ffn_down.cols, 384);
  EXPECT_EQ(b0.out_proj.tensor->name, "backbone.blocks.0.mlstm_layer.out_proj.weight");
  EXPECT_EQ(b0.q_b.tensor, nullptr);
  EXPECT_EQ(b0.q_b.data(), nullptr);
  EXPECT_EQ(b0.norm_mlstm_b.tensor, nullptr);
  EXPECT_EQ(t->embedding.rows, 300);
  EXPECT_EQ(t->lm_head.tensor->name, "lm_head.weight");
  EXPECT_EQ(t->out_norm_w.rows, 128);
  EXPECT_EQ(t->out_norm_b.tensor, nullptr);
}

TEST_F(CheckpointTest, ResolvesGoldenBf16) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(kGoldenBf16);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<ModelConfig> c = LoadModelConfig(kGoldenBf16);
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<XlstmTensors> t = ResolveXlstmTensors(**ckpt, *c);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->blocks[1].k.tensor->dtype, TensorDType::kBF16);
  EXPECT_EQ(t->embedding.tensor->dtype, TensorDType::kBF16);
}

TEST_F(CheckpointTest, ShardedCheckpointResolvesToSameData) {
  WriteTwoShards(tensors_.size() / 2);
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->files().size(), 2u);
  EXPECT_EQ((*ckpt)->Names().size(), 33u);
  EXPECT_NE((*ckpt)->Find("lm_head.weight")->file.find("00002-of-00002"), std::string::npos);
  absl::StatusOr<XlstmTensors> t = ResolveXlstmTensors(**ckpt, config_);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(AllSliceBytes(*t), GoldenSlices());
}

TEST_F(CheckpointTest, IndexTakesPrecedenceOverSingleFile) {
  WriteTwoShards(5);
  ASSERT_TRUE(WriteSafetensors(dir_.path() / "model.safetensors", {}).ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->files().size(), 2u);
}

TEST_F(CheckpointTest, RenamedSchemeResolves) {
  Rename("backbone.embeddings.weight", "embedding.weight");
  for (int b = 0; b < 2; ++b) {
    const std::string ml = "backbone.blocks." + std::to_string(b) + ".mlstm_layer.";
    Rename(ml + "q.weight", ml + "query.weight");
    Rename(ml + "k.weight", ml + "key.weight");
    Rename(ml + "v.weight", ml + "value.weight");
  }
  absl::StatusOr<XlstmTensors> t = WriteAndResolve(config_);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->blocks[0].q.tensor->name, "backbone.blocks.0.mlstm_layer.query.weight");
  EXPECT_EQ(AllSliceBytes(*t), GoldenSlices());
}

TEST_F(CheckpointTest, UnprefixedUpstreamNamesResolve) {
  for (TensorToWrite& t : tensors_) {
    if (t.name == "backbone.embeddings.weight") {
      t.name = "embedding.weight";
    } else if (t.name.rfind("backbone.", 0) == 0) {
      t.name = t.name.substr(9);
    }
  }
  absl::StatusOr<XlstmTensors> t = WriteAndResolve(config_);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->out_norm_w.tensor->name, "out_norm.weight");
  EXPECT_EQ(AllSliceBytes(*t), GoldenSlices());
}

// weight_mode "fused": the same weights stacked into qkv_opreact / ifgate_preact /
// proj_up_gate_z must come back as row slices with identical bytes.
TEST_F(CheckpointTest, FusedCheckpointResolvesToSlices) {
  auto concat = [&](const std::vector<std::string>& names) {
    std::string out;
    for (const std::string& n : names) {
      const TensorView* t = golden_->Find(n);
      out.append(static_cast<const char*>(t->data), t->bytes);
    }
    return out;
  };
  for (int b = 0; b < 2; ++b) {
    const std::string p = "backbone.blocks." + std::to_string(b) + ".";
    const std::string ml = p + "mlstm_layer.";
    const std::vector<std::pair<std::string, std::vector<std::string>>> fused = {
        {ml + "qkv_opreact.weight",
         {ml + "q.weight", ml + "k.weight", ml + "v.weight", ml + "ogate_preact.weight"}},
        {ml + "ifgate_preact.weight", {ml + "igate_preact.weight", ml + "fgate_preact.weight"}},
        {ml + "ifgate_preact.bias", {ml + "igate_preact.bias", ml + "fgate_preact.bias"}},
        {p + "ffn.proj_up_gate_z.weight",
         {p + "ffn.proj_up_gate.weight", p + "ffn.proj_up.weight"}},
    };
    for (const auto& [name, parts] : fused) {
      storage_.push_back(concat(parts));
      int64_t rows = 0;
      for (const std::string& part : parts) rows += golden_->Find(part)->shape[0];
      std::vector<int64_t> shape = golden_->Find(parts[0])->shape;
      shape[0] = rows;
      tensors_.push_back({name, TensorDType::kF32, shape, storage_.back().data()});
      for (const std::string& part : parts) Drop(part);
    }
  }
  ModelConfig fused_config = config_;
  fused_config.weight_mode = "fused";
  absl::StatusOr<XlstmTensors> t = WriteAndResolve(fused_config);
  ASSERT_TRUE(t.ok()) << t.status();
  const XlstmBlockTensors& b1 = t->blocks[1];
  EXPECT_EQ(b1.q.tensor, b1.ogate.tensor);
  EXPECT_EQ(b1.k.row_begin, 64);
  EXPECT_EQ(b1.v.row_begin, 128);
  EXPECT_EQ(b1.ogate.row_begin, 256);
  EXPECT_EQ(b1.fgate_b.row_begin, 4);
  EXPECT_EQ(b1.ffn_up.row_begin, 384);
  EXPECT_EQ(AllSliceBytes(*t), GoldenSlices());
  // The single-mode config must not accept the fused layout.
  EXPECT_THAT(ResolveXlstmTensors(*ckpt_, config_).status(),
              StatusIs(absl::StatusCode::kNotFound, MessageHas("q.weight")));
}

// use_bias: every linear and norm (not the embedding or lm_head) gets a `.bias`.
TEST_F(CheckpointTest, BiasedCheckpointResolves) {
  const size_t n = tensors_.size();
  for (size_t i = 0; i < n; ++i) {
    const std::string name = tensors_[i].name;
    const bool is_weight = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    if (!is_weight || name == "backbone.embeddings.weight" || name == "lm_head.weight" ||
        name.find("igate_preact.") != std::string::npos ||
        name.find("fgate_preact.") != std::string::npos) {
      continue;  // no bias, or (i/f gates) a bias that is always stored
    }
    const int64_t rows = tensors_[i].shape[0];
    AddZeros(name.substr(0, name.size() - 7) + ".bias", {rows}, static_cast<size_t>(rows) * 4);
  }
  ModelConfig c = config_;
  c.use_bias = true;
  absl::StatusOr<XlstmTensors> t = WriteAndResolve(c);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->blocks[0].q_b.rows, 64);
  EXPECT_EQ(t->blocks[1].ffn_down_b.rows, 128);
  EXPECT_NE(t->out_norm_b.tensor, nullptr);
  // Without use_bias the same file has extra tensors.
  EXPECT_THAT(
      ResolveXlstmTensors(*ckpt_, config_).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("not part of the model", ".bias")));
}

TEST_F(CheckpointTest, UseBiasWithoutBiasesIsMissingTensor) {
  ModelConfig c = config_;
  c.use_bias = true;
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(kGoldenF32);
  ASSERT_TRUE(ckpt.ok());
  EXPECT_THAT(ResolveXlstmTensors(**ckpt, c).status(),
              StatusIs(absl::StatusCode::kNotFound, MessageHas(".bias", kGoldenF32.string())));
}

TEST_F(CheckpointTest, TiedEmbeddingsReuseTheEmbedding) {
  Drop("lm_head.weight");
  ModelConfig c = config_;
  c.tie_word_embeddings = true;
  absl::StatusOr<XlstmTensors> t = WriteAndResolve(c);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->lm_head.tensor, t->embedding.tensor);
  EXPECT_EQ(t->lm_head.rows, 300);
  EXPECT_THAT(ResolveXlstmTensors(*ckpt_, config_).status(),
              StatusIs(absl::StatusCode::kNotFound, MessageHas("lm_head.weight")));
}

TEST_F(CheckpointTest, MissingDirIsNotFound) {
  EXPECT_THAT(Checkpoint::Open(dir_.path() / "nope").status(),
              StatusIs(absl::StatusCode::kNotFound, MessageHas("nope")));
}

TEST_F(CheckpointTest, DirWithoutWeightsIsNotFound) {
  EXPECT_THAT(OpenStatus(),
              StatusIs(absl::StatusCode::kNotFound,
                       MessageHas("no model.safetensors or model.safetensors.index.json in",
                                  dir_.path().string())));
}

TEST_F(CheckpointTest, MissingTensor) {
  Drop("backbone.blocks.1.mlstm_layer.k.weight");
  EXPECT_THAT(WriteAndResolve(config_).status(),
              StatusIs(absl::StatusCode::kNotFound,
                       MessageHas("backbone.blocks.1.mlstm_layer.k.weight", dir_.path().string())));
}

TEST_F(CheckpointTest, MissingEmbedding) {
  Drop("backbone.embeddings.weight");
  EXPECT_THAT(WriteAndResolve(config_).status(),
              StatusIs(absl::StatusCode::kNotFound,
                       MessageHas("backbone.embeddings.weight", "embedding.weight")));
}

TEST_F(CheckpointTest, ExtraTensor) {
  AddZeros("backbone.blocks.0.mlstm_layer.conv1d.weight", {4}, 16);
  AddZeros("backbone.blocks.2.norm_ffn.weight", {128}, 512);
  EXPECT_THAT(WriteAndResolve(config_).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas("2 tensor(s) that are not part of the model",
                                  "backbone.blocks.0.mlstm_layer.conv1d.weight",
                                  "backbone.blocks.2.norm_ffn.weight")));
}

TEST_F(CheckpointTest, ExtraTensorListIsCapped) {
  for (int i = 0; i < 8; ++i) AddZeros("junk." + std::to_string(i), {1}, 4);
  absl::Status s = WriteAndResolve(config_).status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          MessageHas("8 tensor(s)", "junk.4", ", ...")));
  EXPECT_EQ(std::string(s.message()).find("junk.5"), std::string::npos) << s;
}

TEST_F(CheckpointTest, BothEmbeddingNamesAreAmbiguous) {
  const TensorView* e = golden_->Find("backbone.embeddings.weight");
  tensors_.push_back({"embedding.weight", e->dtype, e->shape, e->data});
  EXPECT_THAT(WriteAndResolve(config_).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("both", "embedding.weight")));
}

TEST_F(CheckpointTest, MisShapedTensor) {
  FindTensor(kQ0)->shape = {128, 64};  // same bytes, transposed shape
  EXPECT_THAT(WriteAndResolve(config_).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas(kQ0, "model.safetensors", "[128, 64]", "expected [64, 128]")));
}

TEST_F(CheckpointTest, ConfigDimsMustMatchWeights) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(kGoldenF32);
  ASSERT_TRUE(ckpt.ok());
  ModelConfig c = config_;
  c.vocab_size = 301;
  EXPECT_THAT(ResolveXlstmTensors(**ckpt, c).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas("backbone.embeddings.weight", "expected [301, 128]")));
  c = config_;
  c.qk_dim_factor = 0.25;
  EXPECT_THAT(ResolveXlstmTensors(**ckpt, c).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas(kQ0, "expected [32, 128]")));
  c = config_;
  c.num_blocks = 3;
  EXPECT_THAT(ResolveXlstmTensors(**ckpt, c).status(),
              StatusIs(absl::StatusCode::kNotFound, MessageHas("backbone.blocks.2.")));
  c = config_;
  c.num_blocks = 1;
  EXPECT_THAT(ResolveXlstmTensors(**ckpt, c).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas("not part of the model", "backbone.blocks.1.")));
}

TEST_F(CheckpointTest, UnsupportedDtype) {
  auto it = FindTensor("backbone.blocks.0.norm_ffn.weight");
  it->dtype = TensorDType::kI64;
  it->shape = {64};  // 512 bytes either way
  EXPECT_THAT(
      WriteAndResolve(config_).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               MessageHas("unsupported dtype I64 for tensor backbone.blocks.0.norm_ffn.weight in",
                          "model.safetensors")));
}

TEST_F(CheckpointTest, DuplicateTensorAcrossShards) {
  WriteTwoShards(10);
  // Shard 2 gets a copy of a shard-1 tensor.
  std::vector<TensorToWrite> b(tensors_.begin() + 10, tensors_.end());
  b.push_back(tensors_[0]);
  ASSERT_TRUE(WriteSafetensors(dir_.path() / "model-00002-of-00002.safetensors", b).ok());
  EXPECT_THAT(OpenStatus(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas(tensors_[0].name, "model-00001-of-00002.safetensors",
                                  "model-00002-of-00002.safetensors")));
}

TEST_F(CheckpointTest, IndexPointsAtMissingShard) {
  WriteTwoShards(10, {{"lm_head.weight", "model-00003-of-00003.safetensors"}});
  EXPECT_THAT(OpenStatus(),
              StatusIs(absl::StatusCode::kNotFound, MessageHas("model-00003-of-00003.safetensors",
                                                               "model.safetensors.index.json")));
}

TEST_F(CheckpointTest, IndexNamesTensorTheShardLacks) {
  WriteTwoShards(10, {{"lm_head.weight", "model-00001-of-00002.safetensors"}});
  EXPECT_THAT(OpenStatus(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       MessageHas("lm_head.weight", "model-00001-of-00002.safetensors",
                                  "does not contain it")));
  WriteTwoShards(10, {{"not.in.any.shard", "model-00001-of-00002.safetensors"}});
  EXPECT_THAT(OpenStatus(),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("not.in.any.shard")));
}

TEST_F(CheckpointTest, ShardTensorMissingFromIndex) {
  WriteTwoShards(10);
  Json index = {{"weight_map", Json::object()}};
  for (size_t i = 1; i < tensors_.size(); ++i) {
    index["weight_map"][tensors_[i].name] =
        i < 10 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  WriteIndex(index);
  EXPECT_THAT(OpenStatus(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     MessageHas(tensors_[0].name, "not listed in the weight_map")));
}

TEST_F(CheckpointTest, MalformedIndex) {
  WriteTwoShards(10);
  for (const char* bad : {"../model-00001-of-00002.safetensors", "/etc/passwd", "", "."}) {
    WriteTwoShards(10, {{"lm_head.weight", bad}});
    EXPECT_THAT(OpenStatus(),
                StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("not a plain file name")))
        << bad;
  }
  const std::pair<const char*, const char*> cases[] = {
      {"[]", "object"},
      {R"({"weight_map": []})", "weight_map"},
      {R"({"weight_map": {}})", "empty"},
      {R"({"weight_map": {"lm_head.weight": 3}})", "must be a string"},
      {R"({"metadata": 5, "weight_map": {"a": "b"}})", "metadata"},
      {R"({"weight_map": {"a": "b", "a": "b"}})", "duplicate key"},
  };
  for (const auto& [index, says] : cases) {
    WriteFile(dir_.path() / "model.safetensors.index.json", index);
    EXPECT_THAT(OpenStatus(), StatusIs(absl::StatusCode::kInvalidArgument,
                                       MessageHas("model.safetensors.index.json", says)))
        << index;
  }
  WriteFile(dir_.path() / "model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_THAT(OpenStatus(),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("not valid JSON")));
}

}  // namespace
}  // namespace xlstmd::core
