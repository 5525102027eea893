// The fixture of the checkpoint tests: the golden f32 checkpoint's tensors as an editable list
// that a test rewrites (renames, drops, replaces) and writes as a fresh checkpoint to resolve.
// Test-only, header-only.
#ifndef XLSTMD_TESTS_CORE_CHECKPOINT_FIXTURE_H_
#define XLSTMD_TESTS_CORE_CHECKPOINT_FIXTURE_H_

#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/model/checkpoint.h"
#include "core/model/config.h"
#include "core/model/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/model_files_testutil.h"

namespace xlstmd::core::checkpoint_testing {

using ::xlstmd::testing::ScopedTempDir;
using ::xlstmd::testing::WriteFile;
using Json = nlohmann::json;

const std::filesystem::path kGoldenDir = XLSTMD_SHARED_DIR "/golden";
const std::filesystem::path kGoldenF32 = kGoldenDir / "xlstm-large-a1";
const std::filesystem::path kGoldenBf16 = kGoldenDir / "xlstm-large-a1-bf16";
constexpr const char* kQ0 = "backbone.blocks.0.mlstm_layer.q.weight";

inline std::string Bytes(const TensorSlice& s) {
  if (s.tensor == nullptr) return "<absent>";
  const size_t n = static_cast<size_t>(s.rows * s.cols) * TensorDTypeSize(s.tensor->dtype);
  return std::string(static_cast<const char*>(s.data()), n);
}

// Every slice of `t` as (label, bytes), in a fixed order, so two resolutions of the same
// weights stored differently can be compared field by field.
inline std::vector<std::pair<std::string, std::string>> AllSliceBytes(const XlstmTensors& t) {
  using B = XlstmBlockTensors;
  static constexpr std::pair<const char*, TensorSlice B::*> kFields[] = {
      {"norm_mlstm_w", &B::norm_mlstm_w},
      {"norm_mlstm_b", &B::norm_mlstm_b},
      {"q", &B::q},
      {"k", &B::k},
      {"v", &B::v},
      {"ogate", &B::ogate},
      {"igate_w", &B::igate_w},
      {"fgate_w", &B::fgate_w},
      {"igate_b", &B::igate_b},
      {"fgate_b", &B::fgate_b},
      {"q_b", &B::q_b},
      {"k_b", &B::k_b},
      {"v_b", &B::v_b},
      {"ogate_b", &B::ogate_b},
      {"mh_norm_w", &B::mh_norm_w},
      {"mh_norm_b", &B::mh_norm_b},
      {"out_proj", &B::out_proj},
      {"out_proj_b", &B::out_proj_b},
      {"norm_ffn_w", &B::norm_ffn_w},
      {"norm_ffn_b", &B::norm_ffn_b},
      {"ffn_gate", &B::ffn_gate},
      {"ffn_up", &B::ffn_up},
      {"ffn_gate_b", &B::ffn_gate_b},
      {"ffn_up_b", &B::ffn_up_b},
      {"ffn_down", &B::ffn_down},
      {"ffn_down_b", &B::ffn_down_b},
  };
  std::vector<std::pair<std::string, std::string>> out = {{"embedding", Bytes(t.embedding)},
                                                          {"out_norm_w", Bytes(t.out_norm_w)},
                                                          {"out_norm_b", Bytes(t.out_norm_b)},
                                                          {"lm_head", Bytes(t.lm_head)}};
  for (size_t b = 0; b < t.blocks.size(); ++b) {
    for (const auto& [label, field] : kFields) {
      out.emplace_back(std::to_string(b) + "." + label, Bytes(t.blocks[b].*field));
    }
  }
  return out;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
        SafetensorsFile::Open(kGoldenF32 / "model.safetensors");
    ASSERT_TRUE(f.ok()) << f.status();
    golden_ = *std::move(f);
    absl::StatusOr<ModelConfig> c = LoadModelConfig(kGoldenF32);
    ASSERT_TRUE(c.ok()) << c.status();
    config_ = *c;
    for (const TensorView& t : golden_->tensors()) {
      tensors_.push_back({t.name, t.dtype, t.shape, t.data});
    }
  }

  // The golden checkpoint resolved directly, as (label, bytes).
  std::vector<std::pair<std::string, std::string>> GoldenSlices() {
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(kGoldenF32);
    EXPECT_TRUE(ckpt.ok()) << ckpt.status();
    absl::StatusOr<XlstmTensors> t = ResolveXlstmTensors(**ckpt, config_);
    EXPECT_TRUE(t.ok()) << t.status();
    return AllSliceBytes(*t);
  }

  std::vector<TensorToWrite>::iterator FindTensor(const std::string& name) {
    for (auto it = tensors_.begin(); it != tensors_.end(); ++it) {
      if (it->name == name) return it;
    }
    ADD_FAILURE() << "no golden tensor " << name;
    return tensors_.end();
  }
  void Rename(const std::string& from, const std::string& to) { FindTensor(from)->name = to; }
  void Drop(const std::string& name) { tensors_.erase(FindTensor(name)); }
  // Adds an F32 tensor of zeros (storage owned by the fixture).
  void AddZeros(const std::string& name, std::vector<int64_t> shape, size_t bytes) {
    storage_.push_back(std::string(bytes, '\0'));
    tensors_.push_back({name, TensorDType::kF32, std::move(shape), storage_.back().data()});
  }

  // Writes tensors_ as a single-file checkpoint in a fresh dir and resolves it.
  absl::StatusOr<XlstmTensors> WriteAndResolve(const ModelConfig& config) {
    absl::Status w = WriteSafetensors(dir_.path() / "model.safetensors", tensors_);
    if (!w.ok()) return w;
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_.path());
    if (!ckpt.ok()) return ckpt.status();
    ckpt_ = *std::move(ckpt);
    return ResolveXlstmTensors(*ckpt_, config);
  }

  // Writes tensors_ [0, split) and [split, end) as two shards plus an index.
  void WriteTwoShards(size_t split, const Json& extra_weight_map = Json::object()) {
    const std::vector<TensorToWrite> a(tensors_.begin(), tensors_.begin() + split);
    const std::vector<TensorToWrite> b(tensors_.begin() + split, tensors_.end());
    const char* kA = "model-00001-of-00002.safetensors";
    const char* kB = "model-00002-of-00002.safetensors";
    ASSERT_TRUE(WriteSafetensors(dir_.path() / kA, a).ok());
    ASSERT_TRUE(WriteSafetensors(dir_.path() / kB, b).ok());
    Json index = {{"metadata", {{"total_size", 2022976}}}, {"weight_map", Json::object()}};
    for (const TensorToWrite& t : a) index["weight_map"][t.name] = kA;
    for (const TensorToWrite& t : b) index["weight_map"][t.name] = kB;
    for (auto it = extra_weight_map.begin(); it != extra_weight_map.end(); ++it) {
      index["weight_map"][it.key()] = *it;
    }
    WriteIndex(index);
  }
  void WriteIndex(const Json& index) {
    WriteFile(dir_.path() / "model.safetensors.index.json", index.dump(2));
  }

  absl::Status OpenStatus() { return Checkpoint::Open(dir_.path()).status(); }

  std::unique_ptr<SafetensorsFile> golden_;
  ModelConfig config_;
  std::vector<TensorToWrite> tensors_;
  std::deque<std::string> storage_;  // deque: element addresses stay valid on growth
  ScopedTempDir dir_;
  std::unique_ptr<Checkpoint> ckpt_;
};

}  // namespace xlstmd::core::checkpoint_testing

#endif  // XLSTMD_TESTS_CORE_CHECKPOINT_FIXTURE_H_
