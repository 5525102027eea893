// Quantized checkpoints (`xlstm quantize`): matrices stored as NAME (I8/U8 codes) plus
// NAME_scale resolve as quantized slices, fused ones split into row slices whose codes and
// scales start at the slice's rows, and malformed pairs are errors naming the tensor.
#include <cstdint>
#include <string>
#include <vector>

#include "core/model/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/quant.h"
#include "tests/core/checkpoint_fixture.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using checkpoint_testing::CheckpointTest;
using ::xlstmd::testing::MessageHas;
using ::xlstmd::testing::StatusIs;

// Quantized matrices (`xlstm quantize`): codes in NAME (I8 [rows, cols] or U8 [rows,
// Q4RowBytes(cols)]) with scales in NAME_scale; fused ones split into row slices whose codes
// and scales start at the slice's rows.
TEST_F(CheckpointTest, QuantizedMatricesResolve) {
  const std::string down = "backbone.blocks.0.ffn.proj_down.weight";
  const std::vector<int64_t> shape = FindTensor(down)->shape;  // [E, F]
  const int64_t rows = shape[0], cols = shape[1];
  Drop(down);
  storage_.push_back(std::string(static_cast<size_t>(rows * kernels::Q4RowBytes(cols)), '\x11'));
  tensors_.push_back({down, TensorDType::kU8, {rows, kernels::Q4RowBytes(cols)},
                      storage_.back().data()});
  storage_.push_back(std::string(static_cast<size_t>(rows * kernels::Q4Groups(cols) * 2), '\0'));
  tensors_.push_back({down + "_scale", TensorDType::kF16, {rows, kernels::Q4Groups(cols)},
                      storage_.back().data()});
  absl::StatusOr<XlstmTensors> t = WriteAndResolve(config_);
  ASSERT_TRUE(t.ok()) << t.status();
  const TensorSlice& d = t->blocks[0].ffn_down;
  EXPECT_EQ(d.quant, kernels::DType::kQ4);
  EXPECT_EQ(d.cols, cols);
  EXPECT_EQ(d.bytes(), static_cast<size_t>(rows * kernels::Q4RowBytes(cols)));
  ASSERT_NE(d.scale, nullptr);
  EXPECT_EQ(d.scale->name, down + "_scale");
  EXPECT_EQ(t->blocks[0].ffn_up.quant, kernels::DType::kF32);
}

TEST_F(CheckpointTest, FusedQuantizedMatrixSplitsCodesAndScalesByRow) {
  ModelConfig fused = config_;
  fused.weight_mode = "fused";
  const int64_t e = config_.embedding_dim, nh = config_.num_heads;
  for (int b = 0; b < 2; ++b) {
    const std::string ml = "backbone.blocks." + std::to_string(b) + ".mlstm_layer.";
    // ifgate as int8 codes + f32 scales; qkvo and the FFN up/gate fused as floats.
    Drop(ml + "igate_preact.weight");
    Drop(ml + "fgate_preact.weight");
    std::string codes(static_cast<size_t>(2 * nh * e), '\0');
    for (int64_t r = 0; r < 2 * nh; ++r) codes[static_cast<size_t>(r * e)] = static_cast<char>(r);
    storage_.push_back(codes);
    tensors_.push_back({ml + "ifgate_preact.weight", TensorDType::kI8, {2 * nh, e},
                        storage_.back().data()});
    std::vector<float> scales(static_cast<size_t>(2 * nh));
    for (int64_t r = 0; r < 2 * nh; ++r) scales[static_cast<size_t>(r)] = 0.5f * static_cast<float>(r);
    storage_.push_back(std::string(reinterpret_cast<const char*>(scales.data()), scales.size() * 4));
    tensors_.push_back({ml + "ifgate_preact.weight_scale", TensorDType::kF32, {2 * nh},
                        storage_.back().data()});
    auto concat = [&](const std::vector<std::string>& names, const std::string& to) {
      std::string out;
      int64_t n = 0;
      std::vector<int64_t> shp;
      for (const std::string& name : names) {
        const TensorView* t = golden_->Find(name);
        out.append(static_cast<const char*>(t->data), t->bytes);
        n += t->shape[0];
        shp = t->shape;
        Drop(name);
      }
      shp[0] = n;
      storage_.push_back(out);
      tensors_.push_back({to, TensorDType::kF32, shp, storage_.back().data()});
    };
    concat({ml + "q.weight", ml + "k.weight", ml + "v.weight", ml + "ogate_preact.weight"},
           ml + "qkv_opreact.weight");
    concat({ml + "igate_preact.bias", ml + "fgate_preact.bias"}, ml + "ifgate_preact.bias");
    const std::string ffn = "backbone.blocks." + std::to_string(b) + ".ffn.";
    concat({ffn + "proj_up_gate.weight", ffn + "proj_up.weight"}, ffn + "proj_up_gate_z.weight");
  }
  absl::StatusOr<XlstmTensors> t = WriteAndResolve(fused);
  ASSERT_TRUE(t.ok()) << t.status();
  const XlstmBlockTensors& b1 = t->blocks[1];
  EXPECT_EQ(b1.fgate_w.quant, kernels::DType::kI8);
  EXPECT_EQ(b1.fgate_w.row_begin, nh);
  EXPECT_EQ(static_cast<const char*>(b1.fgate_w.data())[0], static_cast<char>(nh));
  EXPECT_EQ(*static_cast<const float*>(b1.fgate_w.scale_data()), 0.5f * static_cast<float>(nh));
  EXPECT_EQ(*static_cast<const float*>(b1.igate_w.scale_data()), 0.0f);
}

TEST_F(CheckpointTest, QuantizedMatrixErrorsNameTheTensor) {
  const std::string down = "backbone.blocks.0.ffn.proj_down.weight";
  const int64_t rows = FindTensor(down)->shape[0], cols = FindTensor(down)->shape[1];
  Drop(down);
  storage_.push_back(std::string(static_cast<size_t>(rows * cols), '\0'));
  tensors_.push_back({down, TensorDType::kI8, {rows, cols}, storage_.back().data()});
  EXPECT_THAT(WriteAndResolve(config_).status(),
              StatusIs(absl::StatusCode::kNotFound, MessageHas(down + "_scale")));
  storage_.push_back(std::string(static_cast<size_t>(rows * 2), '\0'));
  tensors_.push_back({down + "_scale", TensorDType::kF16, {rows}, storage_.back().data()});
  EXPECT_THAT(WriteAndResolve(config_).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas(down + "_scale", "F32")));
  FindTensor(down + "_scale")->dtype = TensorDType::kF32;
  FindTensor(down + "_scale")->shape = {rows / 2};  // same bytes, wrong shape
  EXPECT_THAT(WriteAndResolve(config_).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas(down + "_scale")));
  FindTensor(down + "_scale")->shape = {rows};
  storage_.push_back(std::string(static_cast<size_t>(rows * 4), '\0'));
  FindTensor(down + "_scale")->data = storage_.back().data();
  FindTensor(down)->shape = {rows, cols / 2};  // codes of the wrong width
  FindTensor(down)->dtype = TensorDType::kI8;
  EXPECT_THAT(WriteAndResolve(config_).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, MessageHas("quantized (int8)", down)));
}

}  // namespace
}  // namespace xlstmd::core
