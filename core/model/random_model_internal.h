// The model-directory writer shared by the family-A (random_model.cc) and family-B
// (random_model_paper.cc) random-model generators. Not for use outside core/model.
//
// A family describes its checkpoint as a list of TensorPlans (name, shape, distribution) and
// its config.json text; WriteModelDir does the rest: shard packing, counter-based generation
// in parallel straight to file offsets, temp files + rename, the shard index, and config.json
// last (so a directory with a config.json always holds a complete model). The values of a
// tensor depend only on (seed, the tensor's position in the list, element index), never on
// the thread count or shard layout.
#ifndef XLSTMD_CORE_MODEL_RANDOM_MODEL_INTERNAL_H_
#define XLSTMD_CORE_MODEL_RANDOM_MODEL_INTERNAL_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kernels/op_params.h"

namespace xlstmd::core::random_model_internal {

enum class Dist { kNormal, kUniform };

struct Draw {
  Dist dist;
  double a;  // kNormal: std; kUniform: low
  double b;  // kUniform: high
};

inline Draw Normal(double std_dev) { return {Dist::kNormal, std_dev, 0.0}; }
inline Draw Uniform(double lo, double hi) { return {Dist::kUniform, lo, hi}; }

// Values are drawn for a *logical* tensor and may be stored permuted: viewing the logical
// tensor as [outer, a, b, inner], the file holds [outer, b, a, inner] (axes a and b swapped).
// This lets one seed give the same logical weights in two storage layouts. a = b = 1 is the
// identity.
struct Relayout {
  int64_t outer = 1, a = 1, b = 1, inner = 1;
  bool identity() const { return a == 1 || b == 1; }
};

// One tensor of the checkpoint and where it lands on disk.
struct TensorPlan {
  std::string name;
  std::vector<int64_t> shape;  // as stored
  // Logical element L draws from draws[(L / segment) % draws.size()]: per-gate ranges inside
  // one fused tensor. One entry (any segment) = the whole tensor.
  std::vector<Draw> draws;
  int64_t segment = 1;
  Relayout relayout;
  // Filled in by WriteModelDir.
  int64_t elements = 0;
  int shard = 0;
  uint64_t begin = 0;  // byte offset inside the shard's data section
};

inline TensorPlan MakePlan(std::string name, std::vector<int64_t> shape, std::vector<Draw> draws) {
  TensorPlan p;
  p.name = std::move(name);
  p.shape = std::move(shape);
  p.draws = std::move(draws);
  return p;
}

struct WriteOptions {
  kernels::DType dtype = kernels::DType::kF32;  // kF32 or kBF16
  uint64_t seed = 0;
  uint64_t max_shard_bytes = uint64_t{2} << 30;
  int threads = 0;  // <= 0: hardware concurrency
  bool overwrite = false;
  // Bytes of tensor data written so far of the total, after each chunk; may be called from
  // several threads at once. Unset = no reports.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// Creates `dir` if missing, removes a previous model there (ALREADY_EXISTS when
// dir/config.json exists and !options.overwrite), writes the tensors of `plans` and then
// `config_json` as dir/config.json. I/O errors carry the path.
absl::Status WriteModelDir(std::vector<TensorPlan> plans, const WriteOptions& options,
                           const std::string& config_json, const std::filesystem::path& dir);

}  // namespace xlstmd::core::random_model_internal

#endif  // XLSTMD_CORE_MODEL_RANDOM_MODEL_INTERNAL_H_
