// WritePaperRandomModel: writes a family-B model directory (the xLSTM paper's xLSTMLMModel,
// xlstm-spec.md section 4) with random weights, in the layout of a real checkpoint: config.json
// is upstream's xLSTMLMModelConfig dataclass tree (derived `_` fields included, like
// shared/golden/xlstm-paper-b1) plus our "model_type": "xlstm-paper" and
// "slstm_weight_layout"; model.safetensors holds the tensors of spec 4.6 under upstream's
// module names. Generation, sharding and determinism are family A's (random_model.h): the
// bytes are a function of the spec alone, whatever the thread count.
//
// The sLSTM recurrent kernel and bias are drawn as the logical R[j, d_in, g, d_out] and
// B[j, g, u] (gate order i, f, z, o) and stored in the chosen backend layout (spec 4.4), so one
// seed gives the same logical model, hence bit-identical logits, in the cuda and vanilla
// layouts.
//
// Scales keep activations realistic (upstream's own init would leave norms at exactly 1 and
// the recurrent kernel at 0, which exercises too little): linear and headwise weights
// ~ N(0, 1/in_features) (mLSTM gates: in = 3 * Din); proj_down and ffn.proj_down further scaled
// by 1/sqrt(2 * num_blocks), as in family A, so the residual stream grows slowly with depth;
// norm weights are offsets (scale 1 + w) ~ U(-0.1, 0.1); learnable_skip ~ U(0.9, 1.1); conv
// weights ~ N(0, 1/kernel_size) (unit gain over the window); conv and linear biases
// ~ U(-0.05, 0.05). Gates: mLSTM igate bias ~ U(-3, 0), fgate bias ~ U(3, 6) (forget gates near
// 1, as trained models have); sLSTM bias i ~ U(-3, 0), f ~ U(3, 6), z and o ~ U(-0.05, 0.05);
// sLSTM recurrent kernel ~ N(0, 1/DH) (h is bounded by 1, so gate pre-activations stay O(1)).
// The embedding is N(0, 1) like family A's, except with tie_weights: there it is also the LM
// head, and N(0, 1/E) keeps logits O(1) instead of O(sqrt(E)). "Normal" draws are bounded
// Irwin–Hall sums (random_model.h).
#ifndef XLSTMD_CORE_MODEL_RANDOM_MODEL_PAPER_H_
#define XLSTMD_CORE_MODEL_RANDOM_MODEL_PAPER_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/op_params.h"

namespace xlstmd::core {

// How the sLSTM cell's _recurrent_kernel_ and _bias_ are stored (spec 4.4).
enum class SlstmWeightLayout { kCuda, kVanilla };

struct PaperModelSpec {
  int64_t embedding_dim = 0;  // E
  int64_t num_blocks = 0;
  int64_t vocab = 0;  // >= 3: the config's default bos/pad/eos ids are 0, 1, 2
  // Indices of the sLSTM blocks (any order, no repeats); the others are mLSTM blocks.
  std::vector<int64_t> slstm_at;
  int64_t context_length = 2048;  // upstream sizes a mask buffer with it; unused here
  bool bias = false;              // proj_up/proj_down, q/k/v and FFN biases (never norm biases)
  bool tie_weights = false;       // no lm_head.weight: the embedding is the LM head
  // mlstm_block.mlstm (ignored when every block is sLSTM)
  int64_t mlstm_heads = 4;
  int64_t mlstm_conv = 4;  // conv1d_kernel_size; 0 = no convolution
  int64_t qkv_proj_blocksize = 4;
  double mlstm_proj_factor = 2.0;  // Din = ceil(factor * E / 64) * 64
  // slstm_block.slstm and .feedforward (ignored when slstm_at is empty)
  int64_t slstm_heads = 4;
  int64_t slstm_conv = 4;         // 0 = no convolution
  bool group_norm_weight = true;  // false: no group_norm.weight tensor (scale 1)
  SlstmWeightLayout slstm_layout = SlstmWeightLayout::kCuda;
  double ffn_proj_factor = 1.3;  // F = ceil(factor * E / 64) * 64
  std::string ffn_act = "gelu";  // gelu, swish, relu, relu^2, sigmoid, selu
  // Output, as RandomModelSpec.
  kernels::DType dtype = kernels::DType::kF32;  // kF32 or kBF16
  uint64_t seed = 0;
  uint64_t max_shard_bytes = uint64_t{2} << 30;
  int threads = 0;  // <= 0: hardware concurrency; never changes the bytes written
  bool overwrite = false;
  // Bytes of tensor data written so far of the total, after each chunk; may be called from
  // several threads at once. Unset = no reports.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// INVALID_ARGUMENT naming the spec field when a value is out of range or a derived dimension
// does not divide (mlstm_heads and qkv_proj_blocksize must divide Din, slstm_heads must divide
// E; only the block kinds the model has are checked).
absl::Status ValidatePaperModelSpec(const PaperModelSpec& spec);

// Number of weights (elements of all tensors) the spec's checkpoint holds; spec must be valid.
int64_t PaperModelParameterCount(const PaperModelSpec& spec);

// As WriteRandomModel (random_model.h): creates `out_dir` if missing; ALREADY_EXISTS when
// out_dir/config.json exists and !spec.overwrite; INVALID_ARGUMENT for a bad spec; I/O errors
// carry the path.
absl::Status WritePaperRandomModel(const PaperModelSpec& spec,
                                   const std::filesystem::path& out_dir);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_RANDOM_MODEL_PAPER_H_
