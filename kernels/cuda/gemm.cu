// The decode GEMM: weights streamed once per x tile, f32 FMA on f32 activations, so bf16
// weights stay exact and nothing is rounded below f32 (--cuda-math exact); under
// --cuda-math bf16 each x is rounded to bf16 first (the products stay f32, as on tensor cores).
//
// One warp per output row; lane l chains the products of the 16-byte weight vectors at
// k = vec * (l + 32 j) in order, then the lanes meet in a fixed butterfly. That order depends
// on K alone (launch_plan.h), so a row's result never depends on M or on the other rows.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_ops.h"

namespace xlstmd::kernels::cuda {
namespace {

// 8 bf16 weights: a bf16 is the high half of the f32 of the same value.
__device__ inline void LoadWeights(const uint16_t* w, float out[8]) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(w));
  const unsigned int words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(words[i] << 16);
    out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
}

__device__ inline void LoadWeights(const float* w, float out[4]) {
  const float4 f = __ldg(reinterpret_cast<const float4*>(w));
  out[0] = f.x;
  out[1] = f.y;
  out[2] = f.z;
  out[3] = f.w;
}

__device__ inline float RoundBf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

template <bool kBf16X>
__device__ inline float LoadX(const float* p) {
  const float v = __ldg(p);
  if constexpr (kBf16X) return RoundBf16(v);
  return v;
}

template <typename WT, int kVec, int kMTile, bool kBf16X>
__global__ void __launch_bounds__(32 * kGemmWarps)
    GemmStreamKernel(const float* __restrict__ x, int64_t ldx, const WT* __restrict__ w,
                     int64_t ldw, float* __restrict__ y, int64_t ldy, int64_t m, int64_t n,
                     int64_t k, bool accumulate) {
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kGemmWarps + warp;
  if (row >= n) return;  // whole warps leave together
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kMTile;
  float acc[kMTile];
#pragma unroll
  for (int i = 0; i < kMTile; ++i) acc[i] = 0.0f;
  const WT* wr = w + row * ldw;
  for (int64_t kb = static_cast<int64_t>(lane) * kVec; kb < k; kb += 32 * kVec) {
    float wv[kVec];
    LoadWeights(wr + kb, wv);  // rows are padded to whole vectors
    const bool full = kb + kVec <= k;
#pragma unroll
    for (int i = 0; i < kMTile; ++i) {
      if (m0 + i >= m) break;
      const float* xr = x + (m0 + i) * ldx + kb;
      float a = acc[i];
      if (full) {
#pragma unroll
        for (int v = 0; v < kVec; ++v) a = fmaf(wv[v], LoadX<kBf16X>(xr + v), a);
      } else {
        for (int v = 0; kb + v < k; ++v) a = fmaf(wv[v], LoadX<kBf16X>(xr + v), a);
      }
      acc[i] = a;
    }
  }
#pragma unroll
  for (int i = 0; i < kMTile; ++i) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], off);
  }
  if (lane != 0) return;
#pragma unroll
  for (int i = 0; i < kMTile; ++i) {
    if (m0 + i >= m) break;
    float* out = y + (m0 + i) * ldy + row;
    *out = accumulate ? *out + acc[i] : acc[i];
  }
}

template <typename WT, int kVec, bool kBf16X>
cudaError_t Launch(const float* x, int64_t ldx, const DeviceWeights& w, float* y, int64_t ldy,
                   int64_t m, bool accumulate, cudaStream_t stream) {
  const DecodeGemmPlan plan = PlanDecodeGemm(m, w.rows, w.cols, sizeof(WT));
  const dim3 grid(static_cast<unsigned>(plan.grid.x), static_cast<unsigned>(plan.grid.y));
  const dim3 block(static_cast<unsigned>(plan.threads));
  const WT* wd = static_cast<const WT*>(w.data);
  auto kernel = plan.m_tile == 1   ? GemmStreamKernel<WT, kVec, 1, kBf16X>
                : plan.m_tile == 8 ? GemmStreamKernel<WT, kVec, 8, kBf16X>
                                   : GemmStreamKernel<WT, kVec, 32, kBf16X>;
  kernel<<<grid, block, 0, stream>>>(x, ldx, wd, w.ld, y, ldy, m, w.rows, w.cols, accumulate);
  return cudaGetLastError();
}

// x = hi + lo + r with hi = bf16(x), lo = bf16(x - hi), |r| <= 2^-16 |x|: both parts round
// to nearest even. Columns k..ld of the staged rows are left as they are (the GEMM reads k).
__global__ void SplitBf16Kernel(const float* __restrict__ x, int64_t ldx, int64_t m, int64_t k,
                                uint16_t* __restrict__ hi, uint16_t* __restrict__ lo,
                                int64_t ld) {
  const int64_t total = m * k;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / k, c = i % k;
    const float v = x[r * ldx + c];
    const __nv_bfloat16 hb = __float2bfloat16_rn(v);
    const float h = __bfloat162float(hb);
    hi[r * ld + c] = __bfloat16_as_ushort(hb);
    if (lo == nullptr) continue;
    // An infinite or NaN x is carried by hi alone (inf - inf would make lo a NaN).
    lo[r * ld + c] = __bfloat16_as_ushort(__float2bfloat16_rn(isfinite(h) ? v - h : 0.0f));
  }
}

}  // namespace

cudaError_t LaunchSplitBf16(const float* x, int64_t ldx, int64_t m, int64_t k, uint16_t* hi,
                            uint16_t* lo, int64_t ld, cudaStream_t stream) {
  if (m <= 0 || k <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((m * k + kThreads - 1) / kThreads, 8192);
  SplitBf16Kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, ldx, m, k, hi, lo,
                                                                           ld);
  return cudaGetLastError();
}

cudaError_t LaunchGemm(const float* x, int64_t ldx, const DeviceWeights& w, float* y,
                       int64_t ldy, int64_t m, bool accumulate, bool bf16_x,
                       cudaStream_t stream) {
  if (m <= 0 || w.rows <= 0) return cudaSuccess;
  if (bf16_x) {
    if (w.bf16) return Launch<uint16_t, 8, true>(x, ldx, w, y, ldy, m, accumulate, stream);
    return Launch<float, 4, true>(x, ldx, w, y, ldy, m, accumulate, stream);
  }
  if (w.bf16) return Launch<uint16_t, 8, false>(x, ldx, w, y, ldy, m, accumulate, stream);
  return Launch<float, 4, false>(x, ldx, w, y, ldy, m, accumulate, stream);
}

}  // namespace xlstmd::kernels::cuda
