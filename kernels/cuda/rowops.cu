// Row-wise ops on the GPU: one CTA per row (per row and head for the head norm), with the
// block size a function of the width only (launch_plan.h), so every reduction's order is the
// same whatever the batch.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace xlstmd::kernels::cuda {
namespace {

__device__ inline float Bf16ToFloat(uint16_t b) {
  return __uint_as_float(static_cast<unsigned int>(b) << 16);
}

__global__ void RmsNormKernel(RmsNormParams p) {
  extern __shared__ float scratch[];
  const int64_t r = blockIdx.x;
  const float* x = p.x + r * p.ldx;
  float* y = p.y + r * p.ldy;
  const float n = static_cast<float>(p.dim);
  float mean = 0.0f, part = 0.0f;
  // LayerNorm: the mean first, then squares of deviations (no E[x^2] - mean^2 cancellation).
  if (p.center) {
    for (int64_t c = threadIdx.x; c < p.dim; c += blockDim.x) part += x[c];
    mean = BlockSum(part, scratch) / n;
    part = 0.0f;
  }
  for (int64_t c = threadIdx.x; c < p.dim; c += blockDim.x) {
    const float d = x[c] - mean;
    part = fmaf(d, d, part);
  }
  const float inv = 1.0f / sqrtf(BlockSum(part, scratch) / n + p.eps);
  // Every read of x happened before BlockSum returned, so y may alias x.
  for (int64_t c = threadIdx.x; c < p.dim; c += blockDim.x) {
    float v = (x[c] - mean) * inv * p.w[c];
    if (p.b != nullptr) v += p.b[c];
    y[c] = v;
  }
}

__global__ void EmbedKernel(DeviceWeights t, const int32_t* ids, float* y, int64_t ldy) {
  const int64_t r = blockIdx.x;
  const int32_t id = ids[r];
  float* out = y + r * ldy;
  for (int64_t c = threadIdx.x; c < t.cols; c += blockDim.x) {
    float v = 0.0f;  // id -1: a padding row
    if (id >= 0) {
      v = t.bf16 ? Bf16ToFloat(static_cast<const uint16_t*>(t.data)[id * t.ld + c])
                 : static_cast<const float*>(t.data)[id * t.ld + c];
    }
    out[c] = v;
  }
}

__global__ void BiasSoftCapKernel(BiasSoftCapParams p) {
  float* x = p.x + static_cast<int64_t>(blockIdx.x) * p.ldx;
  for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
    float v = x[c];
    if (p.b != nullptr) v += p.b[c];
    if (p.cap > 0.0f) v = p.cap * tanhf(v / p.cap);
    x[c] = v;
  }
}

__device__ inline float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ inline float GluActivation(GluAct act, float x) {
  switch (act) {
    case GluAct::kSilu:
      return x / (1.0f + expf(-x));
    case GluAct::kGelu:  // the exact erf form (PyTorch's default), not the tanh approximation
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case GluAct::kRelu:
      return fmaxf(x, 0.0f);
    case GluAct::kReluSq: {
      const float r = fmaxf(x, 0.0f);
      return r * r;
    }
    case GluAct::kSigmoid:
      return Sigmoid(x);
    case GluAct::kSelu:  // PyTorch's constants; expm1 keeps small negative inputs accurate
      return 1.0507009873554805f * (x > 0.0f ? x : 1.6732632423543772f * expm1f(x));
  }
  return 0.0f;
}

__global__ void SwiGluKernel(SwiGluParams p) {
  const int64_t r = blockIdx.x;
  const float* g = p.gate + r * p.ld_in;
  const float* u = p.up + r * p.ld_in;
  float* y = p.y + r * p.ldy;
  for (int64_t c = threadIdx.x; c < p.dim; c += blockDim.x) {
    y[c] = GluActivation(p.act, g[c]) * u[c];
  }
}

__global__ void HeadNormGateKernel(HeadNormGateParams p) {
  extern __shared__ float scratch[];
  const int64_t r = blockIdx.x, c0 = static_cast<int64_t>(blockIdx.y) * p.dh;
  const float* h = p.h + r * p.ldh + c0;
  // o and xs may be null (kNone, no skip): offset them only when used.
  const float* o = p.gate != GateAct::kNone ? p.o + r * p.ldo + c0 : nullptr;
  const float* xs = p.skip != nullptr ? p.xs + r * p.ldxs + c0 : nullptr;
  float* y = p.y + r * p.ldy + c0;
  const float n = static_cast<float>(p.dh);
  float part = 0.0f;
  for (int64_t c = threadIdx.x; c < p.dh; c += blockDim.x) part += h[c];
  const float mean = BlockSum(part, scratch) / n;
  part = 0.0f;
  for (int64_t c = threadIdx.x; c < p.dh; c += blockDim.x) {
    const float d = h[c] - mean;
    part = fmaf(d, d, part);
  }
  const float var = BlockSum(part, scratch) / n;  // biased, as LayerNorm
  const float inv = 1.0f / sqrtf(var + p.eps);
  for (int64_t c = threadIdx.x; c < p.dh; c += blockDim.x) {
    float v = (h[c] - mean) * inv * p.w[c0 + c];
    if (p.b != nullptr) v += p.b[c0 + c];
    if (xs != nullptr) v += p.skip[c0 + c] * xs[c];
    if (p.gate == GateAct::kSigmoid) {
      v *= Sigmoid(o[c]);
    } else if (p.gate == GateAct::kSilu) {
      v *= o[c] / (1.0f + expf(-o[c]));
    }
    y[c] = p.accumulate ? y[c] + v : v;
  }
}

__global__ void GatherRowsKernel(GatherRowsParams p) {
  const int64_t r = blockIdx.x;
  const float* x = p.x + static_cast<int64_t>(p.rows[r]) * p.ldx;
  float* y = p.y + r * p.ldy;
  for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) y[c] = x[c];
}

dim3 Threads(int64_t width) { return dim3(static_cast<unsigned>(RowThreads(width))); }
size_t Scratch(int64_t width) { return static_cast<size_t>(RowThreads(width)) * sizeof(float); }

}  // namespace

cudaError_t LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  RmsNormKernel<<<static_cast<unsigned>(p.rows), Threads(p.dim), Scratch(p.dim), stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchEmbed(const DeviceWeights& table, const int32_t* ids, float* y, int64_t rows,
                        int64_t ldy, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  EmbedKernel<<<static_cast<unsigned>(rows), Threads(table.cols), 0, stream>>>(table, ids, y,
                                                                               ldy);
  return cudaGetLastError();
}

cudaError_t LaunchBiasSoftCap(const BiasSoftCapParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  BiasSoftCapKernel<<<static_cast<unsigned>(p.rows), Threads(p.cols), 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchSwiGlu(const SwiGluParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  SwiGluKernel<<<static_cast<unsigned>(p.rows), Threads(p.dim), 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchHeadNormGate(const HeadNormGateParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.heads <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(p.rows), static_cast<unsigned>(p.heads));
  HeadNormGateKernel<<<grid, Threads(p.dh), Scratch(p.dh), stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const GatherRowsParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  GatherRowsKernel<<<static_cast<unsigned>(p.n), Threads(p.cols), 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace xlstmd::kernels::cuda
