// The sLSTM cell on the GPU (xlstm-spec.md 4.4): stabilised exponential gating with a
// head-wise recurrent matvec, run over each sequence's rows in order.
//
// One CTA per (sequence, head) (per (row, head) in a decode step) owns that head's slice of the
// session's slot for the whole call, so no two CTAs touch the same state and the order of
// every sum depends only on dh (PlanSlstm), never on the batch. Per time step the threads
// first split the 4*dh gate columns of h_prev x R_j (R_j [dh, 4*dh] is read a row at a time,
// coalesced, from L2; h_prev sits in shared memory), then split the dh units for the cell
// update, which writes the new h back into shared memory for the next step.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace xlstmd::kernels::cuda {
namespace {

// dynamic smem: hs [dh] (h_prev), gates [4*dh] (raw i | f | z | o of this head). Bounded for
// 1024 threads (PlanSlstm's maximum), so a launch never asks for more registers than an SM has.
__global__ void __launch_bounds__(1024) SlstmKernel(SlstmParams p) {
  extern __shared__ float smem[];
  const int64_t s = blockIdx.x, j = blockIdx.y;
  const int64_t dh = p.dh, dim = p.heads * dh, cols = 4 * dh;
  const int64_t tid = threadIdx.x, nthreads = blockDim.x;
  const bool step = p.seqs.row_begin == nullptr;
  const int64_t row0 = step ? s : p.seqs.row_begin[s];
  const int64_t len = step ? 1 : p.seqs.length[s];
  const int32_t slot = p.seqs.slots[s];
  if (slot < 0) {  // padding: no state, zero output
    for (int64_t t = 0; t < len; ++t) {
      for (int64_t u = tid; u < dh; u += nthreads) p.h[(row0 + t) * p.ldh + j * dh + u] = 0.0f;
    }
    return;
  }
  float* hs = smem;
  float* gates = hs + dh;
  float* base = p.arena + static_cast<int64_t>(slot) * p.slot_stride + j * dh;
  float* st_h = base + p.h_offset;
  float* st_c = base + p.c_offset;
  float* st_n = base + p.n_offset;
  float* st_m = base + p.m_offset;
  const float* r = p.r + j * dh * cols;
  const float* bias = p.b != nullptr ? p.b + j * cols : nullptr;  // [4, dh] of head j
  for (int64_t u = tid; u < dh; u += nthreads) hs[u] = st_h[u];
  __syncthreads();

  for (int64_t t = 0; t < len; ++t) {
    const int64_t row = row0 + t;
    const float* gx = p.gx + row * p.ldg + j * dh;  // gate g of unit u at gx[g * dim + u]
    for (int64_t col = tid; col < cols; col += nthreads) {
      float acc = 0.0f;
      for (int64_t d = 0; d < dh; ++d) acc = fmaf(hs[d], r[d * cols + col], acc);
      const int64_t g = col / dh, u = col - g * dh;
      float raw = gx[g * dim + u] + acc;
      if (bias != nullptr) raw += bias[col];
      gates[col] = raw;
    }
    __syncthreads();  // all of h_prev is read: the update may overwrite hs
    for (int64_t u = tid; u < dh; u += nthreads) {
      const float i_raw = gates[u], f_raw = gates[dh + u];
      const float z_raw = gates[2 * dh + u], o_raw = gates[3 * dh + u];
      const float c_prev = st_c[u], n_prev = st_n[u];
      const float lfm = st_m[u] + LogSigmoid(f_raw);
      // A fresh unit (n == 0) takes m = i; tested per unit, never across the batch.
      const float m = n_prev == 0.0f ? i_raw : fmaxf(i_raw, lfm);
      const float ia = fminf(expf(i_raw - m), 1.0f);
      const float fa = fminf(expf(lfm - m), 1.0f);
      const float c = fa * c_prev + ia * tanhf(z_raw);
      const float n = fa * n_prev + ia;
      const float h = 1.0f / (1.0f + expf(-o_raw)) * c / n;  // no eps (spec 4.4)
      st_c[u] = c;
      st_n[u] = n;
      st_m[u] = m;
      st_h[u] = h;
      hs[u] = h;
      p.h[row * p.ldh + j * dh + u] = h;
    }
    __syncthreads();  // the new h is complete before the next step's matvec; gates reusable
  }
}

}  // namespace

cudaError_t LaunchSlstm(const SlstmParams& p, const SlstmPlan& plan, cudaStream_t stream) {
  if (p.seqs.num_seqs <= 0 || p.heads <= 0 || p.dh <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(plan.grid.x), static_cast<unsigned>(plan.grid.y));
  SlstmKernel<<<grid, static_cast<unsigned>(plan.threads), plan.smem_bytes, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t AllowSlstmSharedMemory(size_t bytes) {
  static std::mutex mu;
  static std::map<int, size_t> given;
  return RaiseSharedMemoryOptIn(mu, given, bytes, [](int b) {
    return cudaFuncSetAttribute(SlstmKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, b);
  });
}

}  // namespace xlstmd::kernels::cuda
