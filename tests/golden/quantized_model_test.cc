// Quantized weights through the whole model, on the golden checkpoints.
//
// 1. Exactness of the quantized path: a model loaded with --weight-dtype int8/q4 must compute
//    what the float model computes with the dequantized weights (each projection replaced by
//    q * scale in f32, written to a checkpoint of its own). The two differ only in where the
//    scale is multiplied in (per group vs per element), so a broken kernel, a wrong packing or
//    a mixed-up scale shows as an O(1) difference while a correct path stays at rounding level.
// 2. Quality, pinned loosely (docs/runtime.md has the measured figures): the share of
//    positions whose greedy next token matches the f32 model, and the mean |logit difference|.
#include <algorithm>
#include <cstring>
#include <cmath>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/model/checkpoint.h"
#include "core/model/config.h"
#include "core/model/safetensors.h"
#include "core/model/weight_upload.h"
#include "core/model/xlstm_model.h"
#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "kernels/quant.h"
#include "tests/testing/golden.h"
#include "tests/testing/isa.h"

namespace xlstmd {
namespace {

namespace fs = std::filesystem;
using core::LogitsMode;
using core::PrefillOptions;
using core::PrefillSequence;
using core::XlstmModel;
using kernels::DType;

constexpr const char* kModel = "xlstm-large-a1";

struct Loaded {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<XlstmModel> model;
};

Loaded Load(const fs::path& dir, std::optional<DType> matrices) {
  Loaded l;
  kernels::BackendOptions opts;
  opts.threads = 2;
  opts.weight_dtype = DType::kF32;
  auto be = kernels::CreateBackend("cpu", opts);
  EXPECT_TRUE(be.ok()) << be.status();
  l.backend = std::move(*be);
  core::LoadOptions lo;
  lo.matrix_dtype = matrices;
  auto m = XlstmModel::Load(dir, l.backend.get(), lo);
  EXPECT_TRUE(m.ok()) << m.status();
  if (m.ok()) l.model = std::move(*m);
  return l;
}

std::vector<float> Logits(XlstmModel& m, const std::vector<int32_t>& tokens) {
  EXPECT_TRUE(m.AllocateSlots(1).ok());
  PrefillOptions o;
  o.chunk_size = 16;
  o.logits = LogitsMode::kAll;
  const PrefillSequence s{tokens, 0};
  std::vector<float> logits;
  EXPECT_TRUE(m.Prefill({&s, 1}, o, &logits).ok());
  return logits;
}

std::vector<int32_t> Tokens(int64_t n, int64_t vocab) {
  std::vector<int32_t> t;
  uint64_t x = 88172645463325252ULL;
  for (int64_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    t.push_back(static_cast<int32_t>(x % static_cast<uint64_t>(vocab)));
  }
  return t;
}

// Writes `src` with every projection matrix and the LM head replaced by its dequantized f32
// twin (q * scale per element) into `dst`.
void WriteDequantized(const fs::path& src, DType dt, const fs::path& dst) {
  auto config = core::LoadModelConfig(src);
  ASSERT_TRUE(config.ok()) << config.status();
  auto ckpt = core::Checkpoint::Open(src);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto tensors = core::ResolveXlstmTensors(**ckpt, *config);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  ASSERT_NE(tensors->lm_head.tensor, tensors->embedding.tensor) << "tied heads not handled here";
  std::set<const core::TensorView*> quantized{tensors->lm_head.tensor};
  for (const core::XlstmBlockTensors& b : tensors->blocks) {
    for (const core::TensorSlice* s : {&b.q, &b.k, &b.v, &b.ogate, &b.igate_w, &b.fgate_w,
                                       &b.out_proj, &b.ffn_gate, &b.ffn_up, &b.ffn_down}) {
      quantized.insert(s->tensor);
    }
  }
  std::vector<std::vector<float>> buffers;
  std::vector<core::TensorToWrite> out;
  buffers.reserve(quantized.size());
  for (const std::string& name : (*ckpt)->Names()) {
    const core::TensorView* t = (*ckpt)->Find(name);
    if (quantized.count(t) == 0) {
      out.push_back({name, t->dtype, t->shape, t->data});
      continue;
    }
    const int64_t rows = t->shape[0], cols = t->shape[1];
    std::vector<float> row(cols);
    std::vector<uint8_t> codes(kernels::QuantCodeBytesPerRow(dt, cols));
    std::vector<uint8_t> scales(kernels::QuantScaleBytesPerRow(dt, cols));
    std::vector<float>& deq = buffers.emplace_back(rows * cols);
    const size_t src_row = cols * core::TensorDTypeSize(t->dtype);
    for (int64_t r = 0; r < rows; ++r) {
      core::ConvertToF32(static_cast<const char*>(t->data) + r * src_row, t->dtype, cols,
                         row.data());
      ASSERT_TRUE(kernels::QuantizeRow(dt, row.data(), cols, codes.data(), scales.data()).ok());
      const kernels::QuantizedMatrixView v{dt, 1, cols, codes.data(), scales.data()};
      for (int64_t c = 0; c < cols; ++c) {
        deq[r * cols + c] = static_cast<float>(kernels::QuantCodeAt(v, 0, c)) *
                            kernels::QuantScaleAt(v, 0, c);
      }
    }
    out.push_back({name, core::TensorDType::kF32, t->shape, deq.data()});
  }
  fs::create_directories(dst);
  fs::copy_file(src / "config.json", dst / "config.json", fs::copy_options::overwrite_existing);
  ASSERT_TRUE(core::WriteSafetensors(dst / "model.safetensors", out).ok());
}

class QuantizedModelTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (const std::string why = testing::IsaSkipReason(); !why.empty()) GTEST_SKIP() << why;
  }
};

TEST_P(QuantizedModelTest, EqualsFloatModelOfDequantizedWeights) {
  const DType dt = GetParam();
  const fs::path tmp = fs::path(::testing::TempDir()) /
                       absl::StrCat("xlstmd_dequant_", kernels::DTypeName(dt), "_", getpid());
  WriteDequantized(testing::GoldenDir(kModel), dt, tmp);
  Loaded q = Load(testing::GoldenDir(kModel), dt);
  Loaded d = Load(tmp, DType::kF32);
  ASSERT_NE(q.model, nullptr);
  ASSERT_NE(d.model, nullptr);
  EXPECT_EQ(q.model->matrix_dtype(), dt);
  EXPECT_EQ(q.model->lm_head_dtype(), dt);
  const std::vector<int32_t> tokens = Tokens(200, q.model->vocab_size());
  const std::vector<float> lq = Logits(*q.model, tokens), ld = Logits(*d.model, tokens);
  ASSERT_EQ(lq.size(), ld.size());
  // Rounding level: the logits are O(10); 2e-3 absolute is ~1e-4 relative.
  const double diff = testing::MaxAbsDiff(lq, ld);
  RecordProperty("max_abs_diff", std::to_string(diff));
  EXPECT_LE(diff, 2e-3) << kernels::DTypeName(dt);
  fs::remove_all(tmp);
}

TEST_P(QuantizedModelTest, QualityAgainstF32IsPinnedLoosely) {
  const DType dt = GetParam();
  Loaded f = Load(testing::GoldenDir(kModel), DType::kF32);
  Loaded q = Load(testing::GoldenDir(kModel), dt);
  ASSERT_NE(q.model, nullptr);
  const int64_t vocab = f.model->vocab_size();
  const std::vector<int32_t> tokens = Tokens(500, vocab);
  const std::vector<float> lf = Logits(*f.model, tokens), lq = Logits(*q.model, tokens);
  int64_t agree = 0;
  double sum_abs = 0;
  for (size_t p = 0; p < tokens.size(); ++p) {
    const float* a = lf.data() + p * vocab;
    const float* b = lq.data() + p * vocab;
    agree += std::max_element(a, a + vocab) - a == std::max_element(b, b + vocab) - b;
    for (int64_t v = 0; v < vocab; ++v) sum_abs += std::fabs(a[v] - b[v]);
  }
  const double agreement = static_cast<double>(agree) / tokens.size();
  const double mean_abs = sum_abs / static_cast<double>(lf.size());
  // Measured (xlstm quality, 500 random positions): int8 0.968 / 0.147, q4 0.50 / 1.70.
  if (dt == DType::kI8) {
    EXPECT_GE(agreement, 0.9);
    EXPECT_LE(mean_abs, 0.3);
  } else {
    EXPECT_GE(agreement, 0.35);
    EXPECT_LE(mean_abs, 2.5);
  }
  EXPECT_GT(mean_abs, 0.0) << "quantization changed nothing: was the model really quantized?";
}

// A checkpoint in which `quantized` names are replaced by int8 codes (all zero) plus unit
// scales, written to `dst`.
void WriteWithInt8(const fs::path& src, const std::vector<std::string>& quantized,
                   const fs::path& dst, std::vector<std::vector<char>>* keep) {
  auto ckpt = core::Checkpoint::Open(src);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  std::vector<core::TensorToWrite> out;
  for (const std::string& name : (*ckpt)->Names()) {
    const core::TensorView* t = (*ckpt)->Find(name);
    if (std::find(quantized.begin(), quantized.end(), name) == quantized.end()) {
      out.push_back({name, t->dtype, t->shape, t->data});
      continue;
    }
    keep->emplace_back(static_cast<size_t>(t->shape[0] * t->shape[1]), 0);
    out.push_back({name, core::TensorDType::kI8, t->shape, keep->back().data()});
    std::vector<char>& sc = keep->emplace_back(static_cast<size_t>(t->shape[0]) * 4, 0);
    for (int64_t r = 0; r < t->shape[0]; ++r) {
      const float one = 1.0f;
      std::memcpy(sc.data() + r * 4, &one, 4);
    }
    out.push_back({name + "_scale", core::TensorDType::kF32, {t->shape[0]}, sc.data()});
  }
  fs::create_directories(dst);
  fs::copy_file(src / "config.json", dst / "config.json", fs::copy_options::overwrite_existing);
  ASSERT_TRUE(core::WriteSafetensors(dst / "model.safetensors", out).ok());
}

TEST(QuantizedCheckpointTest, QuantizedEmbeddingAndMixedPartsAreRefused) {
  if (const std::string why = testing::IsaSkipReason(); !why.empty()) GTEST_SKIP() << why;
  const fs::path src = testing::GoldenDir(kModel);
  const fs::path tmp = fs::path(::testing::TempDir()) / absl::StrCat("xlstmd_qckpt_", getpid());
  std::vector<std::vector<char>> keep;
  kernels::BackendOptions opts;
  opts.threads = 1;
  opts.weight_dtype = DType::kF32;
  auto be = kernels::CreateBackend("cpu", opts);
  ASSERT_TRUE(be.ok());

  WriteWithInt8(src, {"backbone.embeddings.weight"}, tmp / "emb", &keep);
  auto m = XlstmModel::Load(tmp / "emb", be->get());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("embedding"), std::string::npos) << m.status();

  // One part of the fused input projection quantized, the others float.
  WriteWithInt8(src, {"backbone.blocks.0.mlstm_layer.q.weight"}, tmp / "mixed", &keep);
  m = XlstmModel::Load(tmp / "mixed", be->get());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("different formats"), std::string::npos) << m.status();

  // Every part of it quantized loads, and reports its format.
  WriteWithInt8(src,
                {"backbone.blocks.0.mlstm_layer.q.weight", "backbone.blocks.0.mlstm_layer.k.weight",
                 "backbone.blocks.0.mlstm_layer.v.weight",
                 "backbone.blocks.0.mlstm_layer.ogate_preact.weight",
                 "backbone.blocks.0.mlstm_layer.igate_preact.weight",
                 "backbone.blocks.0.mlstm_layer.fgate_preact.weight"},
                tmp / "block0", &keep);
  m = XlstmModel::Load(tmp / "block0", be->get());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->matrix_dtype(), DType::kI8);
  EXPECT_EQ((*m)->lm_head_dtype(), DType::kF32);
  m->reset();
  fs::remove_all(tmp);
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizedModelTest, ::testing::Values(DType::kI8, DType::kQ4),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(kernels::DTypeName(i.param));
                         });

}  // namespace
}  // namespace xlstmd
