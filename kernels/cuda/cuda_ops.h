// Kernel launchers of the CUDA backend (the .cu files). Each enqueues its kernel on `stream`
// and returns the launch error, if any. Shapes and strides follow op_params.h; weights are
// bf16 (uint16_t) or f32 with rows padded to PaddedWeightCols (launch_plan.h). Only
// kernels/cuda includes this header (it needs the CUDA runtime's types).
#ifndef XLSTMD_KERNELS_CUDA_CUDA_OPS_H_
#define XLSTMD_KERNELS_CUDA_CUDA_OPS_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

#include "kernels/cuda/launch_plan.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cuda {

// What the kernels need of a weight matrix (CudaMatrix keeps it).
struct DeviceWeights {
  const void* data;
  bool bf16;       // else f32
  int64_t rows;
  int64_t cols;
  int64_t ld;      // padded row stride, elements
};

// The decode-shaped GEMM y[m, n] (+)= x[m, k] W^T. `bf16_x` rounds each x to bf16 before its
// product (--cuda-math bf16); the summation order is the same either way.
cudaError_t LaunchGemm(const float* x, int64_t ldx, const DeviceWeights& w, float* y,
                       int64_t ldy, int64_t m, bool accumulate, bool bf16_x,
                       cudaStream_t stream);
// Stages the f32 rows x[m, k] (stride ldx) as bf16 hi and lo parts (stride ld) for the
// prefill GEMM (launch_plan.h, PrefillGemmKey); lo may be null (bf16 math: hi alone).
cudaError_t LaunchSplitBf16(const float* x, int64_t ldx, int64_t m, int64_t k, uint16_t* hi,
                            uint16_t* lo, int64_t ld, cudaStream_t stream);
cudaError_t LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream);
cudaError_t LaunchEmbed(const DeviceWeights& table, const int32_t* ids, float* y, int64_t rows,
                        int64_t ldy, cudaStream_t stream);
cudaError_t LaunchBiasSoftCap(const BiasSoftCapParams& p, cudaStream_t stream);
cudaError_t LaunchSwiGlu(const SwiGluParams& p, cudaStream_t stream);
cudaError_t LaunchHeadNormGate(const HeadNormGateParams& p, cudaStream_t stream);
cudaError_t LaunchGatherRows(const GatherRowsParams& p, cudaStream_t stream);
cudaError_t LaunchMlstmStep(const MlstmStepParams& p, const MlstmPlan& plan, cudaStream_t stream);
cudaError_t LaunchMlstmChunkwise(const MlstmChunkParams& p, const MlstmPlan& plan,
                                 cudaStream_t stream);
// Lets the mLSTM kernels use up to `bytes` of dynamic shared memory per block. The opt-in is
// a property of the kernel function on the current device, shared by every backend in the
// process, so these only ever raise it: a second backend needing less must not lower the
// limit a first one's launches rely on.
cudaError_t AllowMlstmSharedMemory(size_t bytes);
// Family B (paper.cu, slstm.cu).
cudaError_t LaunchHeadwise(const HeadwiseParams& p, cudaStream_t stream);
cudaError_t LaunchCausalConv(const CausalConvParams& p, cudaStream_t stream);
cudaError_t LaunchSlstm(const SlstmParams& p, const SlstmPlan& plan, cudaStream_t stream);
cudaError_t AllowSlstmSharedMemory(size_t bytes);

// The opt-in bookkeeping behind the Allow* functions: `set(bytes)` runs only when `bytes` is
// above what this kernel family was given on the current device before.
template <class Set>
cudaError_t RaiseSharedMemoryOptIn(std::mutex& mu, std::map<int, size_t>& given, size_t bytes,
                                   Set set) {
  int device = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  std::lock_guard<std::mutex> lock(mu);
  size_t& now = given[device];
  if (bytes <= now) return cudaSuccess;
  const cudaError_t e = set(static_cast<int>(bytes));
  if (e == cudaSuccess) now = bytes;
  return e;
}

}  // namespace xlstmd::kernels::cuda

#endif  // XLSTMD_KERNELS_CUDA_CUDA_OPS_H_
