// Family B's (xLSTM paper) building blocks on the GPU, spec 4.2: the headwise (block-diagonal)
// linear map and the causal depthwise convolution with its per-session window.
//
// Both give each output element to one thread that sums its terms in a fixed order (over the
// block's inputs; over the kernel taps, oldest first), so a row's result is the same whatever
// else is in the batch and however the grid is cut.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_ops.h"

namespace xlstmd::kernels::cuda {
namespace {

constexpr int kThreads = 128;

unsigned CeilDiv(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

// grid (rows, ceil(blocks*out / kThreads)): thread = one output column of one row.
__global__ void HeadwiseKernel(HeadwiseParams p) {
  const int64_t r = blockIdx.x;
  const int64_t col = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (col >= p.blocks * p.out) return;
  const int64_t block = col / p.out, o = col % p.out;
  const float* x = p.x + r * p.ldx + block * p.in;
  // [blocks, in, out]: adjacent threads read adjacent weights (coalesced).
  const float* w = p.w + block * p.in * p.out + o;
  float acc = 0.0f;
  for (int64_t i = 0; i < p.in; ++i) acc = fmaf(w[i * p.out], x[i], acc);
  if (p.b != nullptr) acc += p.b[col];
  p.y[r * p.ldy + col] = p.alpha * acc;
}

// grid (num_seqs, ceil(dim / kThreads)): thread = one channel of one sequence, walking its
// rows in time order. The slot's window holds the ks-1 inputs before this call, oldest first
// (window row k at win[k * dim]); it is only read while the outputs are computed and advanced
// once at the end, so every output sees the window as the call found it.
__global__ void CausalConvKernel(CausalConvParams p) {
  const int64_t s = blockIdx.x;
  const int64_t d = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (d >= p.dim) return;
  const bool step = p.seqs.row_begin == nullptr;
  const int64_t row0 = step ? s : p.seqs.row_begin[s];
  const int64_t len = step ? 1 : p.seqs.length[s];
  const int32_t slot = p.seqs.slots[s];
  if (slot < 0) {  // padding: no state, zero output
    for (int64_t t = 0; t < len; ++t) p.y[(row0 + t) * p.ldy + d] = 0.0f;
    return;
  }
  const int64_t hist = p.ks - 1;
  float* win = p.arena + static_cast<int64_t>(slot) * p.slot_stride + p.window_offset + d;
  const float* x = p.x + row0 * p.ldx + d;
  const float bias = p.b != nullptr ? p.b[d] : 0.0f;
  for (int64_t t = 0; t < len; ++t) {
    float acc = bias;
    for (int64_t j = 0; j < p.ks; ++j) {
      const int64_t u = t - hist + j;  // input index relative to this call's first row
      const float xv = u >= 0 ? x[u * p.ldx] : win[(hist + u) * p.dim];
      acc = fmaf(p.w[j * p.dim + d], xv, acc);
    }
    if (p.silu) acc = acc / (1.0f + expf(-acc));
    p.y[(row0 + t) * p.ldy + d] = acc;
  }
  // The new window is the last hist inputs of (old window ++ this call's rows): row k is
  // input u = len - hist + k. When len < hist the head comes from the old window at len + k,
  // which is ahead of k, so filling k in ascending order reads each old row before it is
  // overwritten.
  for (int64_t k = 0; k < hist; ++k) {
    const int64_t u = len - hist + k;
    win[k * p.dim] = u >= 0 ? x[u * p.ldx] : win[(len + k) * p.dim];
  }
}

}  // namespace

cudaError_t LaunchHeadwise(const HeadwiseParams& p, cudaStream_t stream) {
  const int64_t cols = p.blocks * p.out;
  if (p.rows <= 0 || cols <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(p.rows), CeilDiv(cols, kThreads));
  HeadwiseKernel<<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchCausalConv(const CausalConvParams& p, cudaStream_t stream) {
  if (p.seqs.num_seqs <= 0 || p.dim <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(p.seqs.num_seqs), CeilDiv(p.dim, kThreads));
  CausalConvKernel<<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace xlstmd::kernels::cuda
