// Prefill projections of the CUDA backend through cuBLASLt (see PrefillGemmKey in
// launch_plan.h for the arithmetic). Only kernels/cuda includes this header.
#ifndef XLSTMD_KERNELS_CUDA_CUDA_GEMM_LT_H_
#define XLSTMD_KERNELS_CUDA_CUDA_GEMM_LT_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch_plan.h"

namespace xlstmd::kernels::cuda {

class PrefillGemm {
 public:
  // Bound to the backend's device (the caller has set it) and stream.
  static absl::StatusOr<std::unique_ptr<PrefillGemm>> Create(cudaStream_t stream);
  ~PrefillGemm();
  PrefillGemm(const PrefillGemm&) = delete;
  PrefillGemm& operator=(const PrefillGemm&) = delete;

  // Staging for `rows` rows of width up to `max_k` (bf16 weights' x); replaces the previous
  // staging once the stream has drained. Pinned algorithms are kept: they do not depend on M.
  absl::Status Reserve(int64_t rows, int64_t max_k);
  int64_t rows() const { return rows_; }

  // y[m, n] (+)= x[m, k] W[n, k]^T, enqueued on the stream in windows of rows(). False when
  // cuBLASLt has no algorithm for this key that is safe to pin (then nothing was enqueued and
  // the caller multiplies with the decode kernel; that too depends on the key alone).
  // `bf16_x` (--cuda-math bf16): x rounded to bf16, one product instead of hi + lo; f32
  // weights do not occur then (the backend stores bf16).
  absl::StatusOr<bool> Run(const float* x, int64_t ldx, const DeviceWeights& w, float* y,
                           int64_t ldy, int64_t m, bool accumulate, bool bf16_x);

 private:
  struct Pinned {
    cublasLtMatmulAlgo_t algo;
  };
  PrefillGemm(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cudaStream_t stream)
      : handle_(handle), desc_(desc), stream_(stream) {}
  // The pinned algorithm of `key`, or null when none is safe to pin.
  absl::StatusOr<const Pinned*> Resolve(const PrefillGemmKey& key, cudaDataType_t ab_type);
  absl::Status Matmul(const PrefillGemmKey& key, cudaDataType_t ab_type, const Pinned& algo,
                      const void* a, const void* b, int64_t m, float beta, float* y);

  cublasLtHandle_t handle_;
  cublasLtMatmulDesc_t desc_;  // every call's: f32 compute, W transposed (made once)
  cudaStream_t stream_;
  int64_t rows_ = 0, max_k_ = 0;
  uint16_t* hi_ = nullptr;  // [rows_, StagedCols(max_k_)] each
  uint16_t* lo_ = nullptr;
  std::map<PrefillGemmKey, Pinned> pinned_;
  std::set<PrefillGemmKey> unsupported_;
};

}  // namespace xlstmd::kernels::cuda

#endif  // XLSTMD_KERNELS_CUDA_CUDA_GEMM_LT_H_
