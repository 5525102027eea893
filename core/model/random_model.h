// WriteRandomModel: writes a family-A (xLSTM-Large) model directory with random weights —
// config.json plus safetensors under the Hugging Face names (xlstm-spec.md 3.3) — so tests and
// benchmarks can create models of any size without downloading a checkpoint.
//
// The output is a pure function of the spec (thread count does not matter): every tensor is
// cut into fixed chunks of elements, and each chunk draws from its own counter-based stream
// seeded from (seed, tensor index, chunk index). Chunks are generated in parallel and written
// straight to their file offsets, so memory stays at one chunk per thread whatever the model
// size. Files are written under temporary names and renamed when complete. (The writer is
// shared with family B: random_model_paper.h.)
//
// Scales keep activations and gates realistic: linear weights ~ N(0, 1/in_features),
// out_proj and proj_down further scaled by 1/sqrt(2 * num_blocks); norms ~ U(0.9, 1.1);
// embedding ~ N(0, 1); input-gate bias ~ U(-3, 0); forget-gate bias ~ U(3, 6) (forget gates
// near 1). "Normal" draws are a scaled Irwin–Hall sum of four uniforms (fast, bounded tails).
#ifndef XLSTMD_CORE_MODEL_RANDOM_MODEL_H_
#define XLSTMD_CORE_MODEL_RANDOM_MODEL_H_

#include <cstdint>
#include <filesystem>
#include <functional>

#include "absl/status/status.h"
#include "kernels/op_params.h"

namespace xlstmd::core {

struct RandomModelSpec {
  int64_t embedding_dim = 0;
  int64_t num_blocks = 0;
  int64_t num_heads = 0;
  int64_t vocab = 0;
  double qk_dim_factor = 0.5;
  double v_dim_factor = 1.0;
  double ffn_proj_factor = 2.667;
  kernels::DType dtype = kernels::DType::kF32;  // kF32 or kBF16 (the on-disk dtype)
  uint64_t seed = 0;
  // File size limit: one model.safetensors when all fits, else model-0000i-of-0000N shards
  // + model.safetensors.index.json. A tensor larger than the limit gets a shard of its own.
  uint64_t max_shard_bytes = uint64_t{2} << 30;
  int threads = 0;         // <= 0: hardware concurrency; never changes the bytes written
  bool overwrite = false;  // replace an existing config.json in out_dir
  // Bytes of tensor data written so far of the total, after each chunk; may be called from
  // several threads at once. Unset = no reports.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// INVALID_ARGUMENT naming the field when a dimension is out of range or the derived head
// dims are not whole (num_heads must divide int(E * qk_dim_factor) and int(E * v_dim_factor)).
absl::Status ValidateRandomModelSpec(const RandomModelSpec& spec);

// config.json key that marks weights written by mkmodel (random, not trained): the daemon
// says so at startup and clients warn, so a screen of noise is never mistaken for a bug.
inline constexpr const char* kRandomWeightsKey = "xlstmd_random_weights";

// True when `model_dir`/config.json carries kRandomWeightsKey = true (false when the file
// is missing or unreadable: loading reports those).
bool HasRandomWeights(const std::filesystem::path& model_dir);

// Creates `out_dir` if missing and writes the model into it. ALREADY_EXISTS when
// out_dir/config.json exists and !spec.overwrite; INVALID_ARGUMENT for a bad spec; I/O errors
// carry the path.
absl::Status WriteRandomModel(const RandomModelSpec& spec, const std::filesystem::path& out_dir);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_RANDOM_MODEL_H_
