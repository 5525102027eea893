// WeightUploader: turns resolved checkpoint tensors into backend weights, in parallel.
//
// Matrices made of several row slices (e.g. q | k | v | o | i | f) are concatenated on the
// host first; a single slice is handed to the backend straight from the memory mapping.
// Vectors (norm weights, biases) become float32 backend buffers (rounded to bf16 values when
// the backend stores weights as bf16). While converting, every
// slice's bytes are hashed (XXH3-64) so the model gets a weights digest for free.
//
// Use from one thread: Add* everything, then Run() once. Outputs are written only by Run().
#ifndef XLSTMD_CORE_MODEL_WEIGHT_UPLOAD_H_
#define XLSTMD_CORE_MODEL_WEIGHT_UPLOAD_H_

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/model/checkpoint.h"
#include "core/model/config.h"
#include "core/model/load_progress.h"
#include "kernels/backend.h"

namespace xlstmd::core {

class WeightUploader {
 public:
  WeightUploader(kernels::Backend* backend, int threads);

  // All parts must be present and have the same number of columns. The matrix is stored as
  // `storage` (a float dtype, or kI8/kQ4 to quantize it), unless its parts are stored
  // quantized already, in which case they are uploaded as they are (all parts in one format).
  void AddMatrix(std::vector<TensorSlice> parts, kernels::WeightMatrixPtr* out,
                 kernels::DType storage);
  // Concatenation of `parts` as float32, `total` floats; an absent part (tensor == nullptr)
  // contributes `rows` zeros. `transform`, if set, rewrites the host copy (after bf16
  // rounding) before it is uploaded: layout changes, the paper family's 1 + w norm scales.
  void AddVector(std::vector<TensorSlice> parts, int64_t total, float** out,
                 std::function<void(std::vector<float>&)> transform = nullptr);

  // Reports progress from Run() (see LoadProgressFn).
  void set_progress(LoadProgressFn progress) { progress_ = std::move(progress); }
  absl::Status Run();
  size_t matrix_bytes() const { return matrix_bytes_; }
  size_t vector_bytes() const { return vector_bytes_; }  // float32 vectors made by Run()
  // Backend buffers made for vectors (their owners).
  std::vector<kernels::DeviceBuffer> TakeVectors() { return std::move(vectors_); }
  // 32 hex chars: XXH3-128 of a canonical string of the config's dims and, per slice, its
  // tensor name, row range, shape, dtype and the XXH3-64 of its bytes (hashed by Run()).
  std::string Digest(const ModelConfig& config) const;

 private:
  struct MatrixJob {
    std::vector<TensorSlice> parts;
    kernels::WeightMatrixPtr* out;
    kernels::DType storage;
  };
  struct VectorJob {
    std::vector<TensorSlice> parts;
    int64_t total;
    float** out;
    std::function<void(std::vector<float>&)> transform;
  };
  absl::Status RunMatrix(const MatrixJob& job);
  absl::StatusOr<kernels::WeightMatrix*> UploadQuantizedParts(const MatrixJob& job);
  // Counts `parts` as uploaded and reports (under progress_mu_).
  void Progress(const std::vector<TensorSlice>& parts);

  kernels::Backend* backend_;
  int threads_;
  std::vector<MatrixJob> matrices_;
  std::vector<VectorJob> vector_jobs_;
  std::vector<kernels::DeviceBuffer> vectors_;
  std::vector<std::pair<std::string, uint64_t>> part_hashes_;  // filled by Run()
  size_t matrix_bytes_ = 0;
  size_t vector_bytes_ = 0;
  LoadProgressFn progress_;
  std::mutex progress_mu_;
  std::map<std::string, std::pair<uint64_t, uint64_t>> file_bytes_;  // file -> left, total
  LoadProgress report_;
};

// Converts `n` elements of F32/BF16/F16 data to float32.
void ConvertToF32(const void* src, TensorDType dtype, int64_t n, float* dst);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_WEIGHT_UPLOAD_H_
