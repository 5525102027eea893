// The mLSTM cell on the GPU (xlstm-spec.md 2.1 recurrent step, 2.3 chunkwise form), the same
// arithmetic as kernels/cpu/mlstm_cpu.cc.
//
// Both kernels give one CTA to each (row or sequence, head) pair: it reads and writes that
// head's slice of the session's state slot in place (found by slot index, never copied), so
// no two CTAs touch the same state and a pair's arithmetic does not depend on the batch.
// Threads own columns of C [dqk, dv]: the loops over dqk read C a row at a time, coalesced.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace xlstmd::kernels::cuda {
namespace {

struct HeadState {
  float* C;  // [dqk, dv]
  float* n;  // [dqk]
  float* m;  // scalar
};

__device__ inline HeadState StateOf(const MlstmStateRef& s, int32_t slot, int64_t head,
                                    const MlstmDims& d) {
  float* base = s.arena + static_cast<int64_t>(slot) * s.slot_stride;
  return {base + s.c_offset + head * d.dqk * d.dv, base + s.n_offset + head * d.dqk,
          base + s.m_offset + head};
}

// grid (batch, heads); dynamic smem: qs [dqk], ks [dqk], scratch [blockDim.x].
__global__ void MlstmStepKernel(MlstmStepParams p) {
  extern __shared__ float smem[];
  const MlstmDims d = p.dims;
  const int64_t b = blockIdx.x, j = blockIdx.y;
  float* h = p.h + b * p.ldh + j * d.dv;
  const int32_t slot = p.slots[b];
  if (slot < 0) {  // padding row: no state, h = 0
    for (int64_t c = threadIdx.x; c < d.dv; c += blockDim.x) h[c] = 0.0f;
    return;
  }
  float* qs = smem;
  float* ks = qs + d.dqk;
  float* scratch = ks + d.dqk;
  const HeadState st = StateOf(p.state, slot, j, d);
  const float* q = p.q + b * p.ldq + j * d.dqk;
  const float* k = p.k + b * p.ldk + j * d.dqk;
  for (int64_t a = threadIdx.x; a < d.dqk; a += blockDim.x) {
    qs[a] = q[a] * d.q_scale;
    ks[a] = k[a];
  }
  const float it = p.i[b * p.ldi + j], ft = p.f[b * p.ldf + j];
  const float lf = LogSigmoid(ft);
  const float m_old = *st.m;
  const float m_new = fmaxf(lf + m_old, it);
  const float fa = expf(lf + m_old - m_new);
  const float ia = expf(it - m_new);
  __syncthreads();
  float part = 0.0f;
  for (int64_t a = threadIdx.x; a < d.dqk; a += blockDim.x) {
    const float na = fa * st.n[a] + ia * ks[a];
    st.n[a] = na;
    part += qs[a] * na;
  }
  const float qn = BlockSum(part, scratch);  // also orders every read of m before its write
  const float inv = 1.0f / (fmaxf(fabsf(qn), expf(-m_new)) + d.eps);
  const float* v = p.v + b * p.ldv + j * d.dv;
  for (int64_t c = threadIdx.x; c < d.dv; c += blockDim.x) {
    const float vc = v[c];
    float hc = 0.0f;
    float* col = st.C + c;
    for (int64_t a = 0; a < d.dqk; ++a) {
      const float cv = fa * col[a * d.dv] + (ia * ks[a]) * vc;
      col[a * d.dv] = cv;
      hc += qs[a] * cv;
    }
    h[c] = hc * inv;
  }
  if (threadIdx.x == 0) *st.m = m_new;
}

// grid (sequences, heads); dynamic smem (PlanMlstmChunkwise): qs [L, dqk], ks [L, dqk],
// dec [L, L], sp [L, L], bcum, aw, mrow, winter, den [L], nsm [dqk], scratch [blockDim.x],
// scalars [8]. Each chunk: decay weights and scores for its rows, outputs from the boundary
// state plus the chunk's own rows, then the boundary state moves past the chunk.
// Chunks are at most L rows and never cross a multiple of the requested chunk size, so a
// sequence split between calls at such a multiple (the model's windows) runs the same chunks.
__global__ void __launch_bounds__(1024) MlstmChunkKernel(MlstmChunkParams p, int64_t L) {
  extern __shared__ float smem[];
  const MlstmDims d = p.dims;
  const int64_t s = blockIdx.x, j = blockIdx.y;
  const int64_t boundary = p.chunk_size > 0 ? p.chunk_size : L;
  const int64_t len = p.length[s], r0 = p.row_begin[s];
  if (len <= 0) return;
  const int64_t dqk = d.dqk, dv = d.dv;
  float* qs = smem;
  float* ks = qs + L * dqk;
  float* dec = ks + L * dqk;
  float* sp = dec + L * L;
  float* bcum = sp + L * L;
  float* aw = bcum + L;
  float* mrow = aw + L;
  float* winter = mrow + L;
  float* den = winter + L;
  float* nsm = den + L;
  float* scratch = nsm + dqk;
  float* scal = scratch + blockDim.x;  // [0] m, [1] decay, [2] next m
  const int tid = static_cast<int>(threadIdx.x);
  const HeadState st = StateOf(p.state, p.slots[s], j, d);
  for (int64_t a = tid; a < dqk; a += blockDim.x) nsm[a] = st.n[a];
  if (tid == 0) scal[0] = *st.m;
  __syncthreads();

  for (int64_t t0 = 0, Lc = 0; t0 < len; t0 += Lc) {
    Lc = len - t0 < L ? len - t0 : L;
    const int64_t to_boundary = boundary - t0 % boundary;
    if (Lc > to_boundary) Lc = to_boundary;
    const int64_t row0 = r0 + t0;
    for (int64_t x = tid; x < Lc * dqk; x += blockDim.x) {
      const int64_t r = x / dqk, a = x % dqk;
      qs[r * dqk + a] = p.q[(row0 + r) * p.ldq + j * dqk + a] * d.q_scale;
      ks[r * dqk + a] = p.k[(row0 + r) * p.ldk + j * dqk + a];
    }
    if (tid == 0) {  // local cumulative log forget gates, in row order
      float acc = 0.0f;
      for (int64_t r = 0; r < Lc; ++r) {
        acc += LogSigmoid(p.f[(row0 + r) * p.ldf + j]);
        bcum[r] = acc;
      }
    }
    __syncthreads();
    const float m_k = scal[0];
    const float g = bcum[Lc - 1];
    if (tid < Lc) {  // row stabiliser and causal decay weights of row r
      const int64_t r = tid;
      float mi = -INFINITY;
      for (int64_t c = 0; c <= r; ++c) {
        const float ld = bcum[r] - bcum[c] + p.i[(row0 + c) * p.ldi + j];
        dec[r * L + c] = ld;
        mi = fmaxf(mi, ld);
      }
      const float m_inter = bcum[r] + m_k;
      mrow[r] = fmaxf(m_inter, mi);
      winter[r] = expf(m_inter - mrow[r]);
      for (int64_t c = 0; c <= r; ++c) dec[r * L + c] = expf(dec[r * L + c] - mrow[r]);
    }
    __syncthreads();
    for (int64_t x = tid; x < Lc * Lc; x += blockDim.x) {  // P = decay * (q_r . k_c), c <= r
      const int64_t r = x / Lc, c = x % Lc;
      float sc = 0.0f;
      if (c <= r) {
        for (int64_t a = 0; a < dqk; ++a) sc = fmaf(qs[r * dqk + a], ks[c * dqk + a], sc);
        sc *= dec[r * L + c];
      }
      sp[r * L + c] = sc;
    }
    __syncthreads();
    if (tid < Lc) {  // normaliser of row r (from the boundary n)
      const int64_t r = tid;
      float dsum = 0.0f;
      for (int64_t c = 0; c <= r; ++c) dsum += sp[r * L + c];
      float qn = 0.0f;
      for (int64_t a = 0; a < dqk; ++a) qn = fmaf(qs[r * dqk + a], nsm[a], qn);
      den[r] = winter[r] * qn + dsum;
    }
    if (tid == 0) {  // state-update weights
      float m_next = g + m_k;
      for (int64_t r = 0; r < Lc; ++r) {
        aw[r] = g - bcum[r] + p.i[(row0 + r) * p.ldi + j];
        m_next = fmaxf(m_next, aw[r]);
      }
      for (int64_t r = 0; r < Lc; ++r) aw[r] = expf(aw[r] - m_next);
      scal[1] = expf(g + m_k - m_next);
      scal[2] = m_next;
    }
    __syncthreads();
    const float decay = scal[1];
    for (int64_t c = tid; c < dv; c += blockDim.x) {
      float num[kMaxChunk], vv[kMaxChunk];
#pragma unroll
      for (int r = 0; r < kMaxChunk; ++r) {
        num[r] = 0.0f;
        vv[r] = r < Lc ? p.v[(row0 + r) * p.ldv + j * dv + c] : 0.0f;
      }
      float* col = st.C + c;
      for (int64_t a = 0; a < dqk; ++a) {
        const float cv = col[a * dv];
        float upd = 0.0f;
#pragma unroll
        for (int r = 0; r < kMaxChunk; ++r) {
          if (r < Lc) {
            num[r] = fmaf(qs[r * dqk + a], cv, num[r]);
            upd = fmaf(aw[r] * ks[r * dqk + a], vv[r], upd);
          }
        }
        col[a * dv] = decay * cv + upd;
      }
#pragma unroll
      for (int r = 0; r < kMaxChunk; ++r) {
        if (r < Lc) {
          float intra = 0.0f;
          for (int cc = 0; cc <= r; ++cc) intra = fmaf(sp[r * L + cc], vv[cc], intra);
          const float nr = num[r] * winter[r] + intra;
          const float inv = 1.0f / (fmaxf(fabsf(den[r]), expf(-mrow[r])) + d.eps);
          p.h[(row0 + r) * p.ldh + j * dv + c] = nr * inv;
        }
      }
    }
    for (int64_t a = tid; a < dqk; a += blockDim.x) {
      float na = nsm[a] * decay;
      for (int64_t r = 0; r < Lc; ++r) na = fmaf(aw[r], ks[r * dqk + a], na);
      nsm[a] = na;
    }
    __syncthreads();
    if (tid == 0) scal[0] = scal[2];
    __syncthreads();
  }
  for (int64_t a = tid; a < dqk; a += blockDim.x) st.n[a] = nsm[a];
  if (tid == 0) *st.m = scal[0];
}

}  // namespace

cudaError_t LaunchMlstmStep(const MlstmStepParams& p, const MlstmPlan& plan, cudaStream_t stream) {
  if (p.batch <= 0 || p.dims.heads <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(plan.grid.x), static_cast<unsigned>(plan.grid.y));
  MlstmStepKernel<<<grid, static_cast<unsigned>(plan.threads), plan.smem_bytes, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchMlstmChunkwise(const MlstmChunkParams& p, const MlstmPlan& plan,
                                 cudaStream_t stream) {
  if (p.num_seqs <= 0 || p.dims.heads <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(plan.grid.x), static_cast<unsigned>(plan.grid.y));
  MlstmChunkKernel<<<grid, static_cast<unsigned>(plan.threads), plan.smem_bytes, stream>>>(
      p, plan.chunk);
  return cudaGetLastError();
}

cudaError_t AllowMlstmSharedMemory(size_t bytes) {
  static std::mutex mu;
  static std::map<int, size_t> given;
  return RaiseSharedMemoryOptIn(mu, given, bytes, [](int b) {
    cudaError_t e = cudaFuncSetAttribute(MlstmChunkKernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, b);
    if (e != cudaSuccess) return e;
    return cudaFuncSetAttribute(MlstmStepKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, b);
  });
}

}  // namespace xlstmd::kernels::cuda
