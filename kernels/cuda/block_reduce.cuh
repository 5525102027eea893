// A block-wide sum whose order depends only on blockDim.x (not on timing or the grid): every
// thread's partial goes to shared memory, lanes past the largest power of two fold onto the
// lower ones, then a fixed halving tree. `scratch` holds blockDim.x floats.
#ifndef XLSTMD_KERNELS_CUDA_BLOCK_REDUCE_CUH_
#define XLSTMD_KERNELS_CUDA_BLOCK_REDUCE_CUH_

namespace xlstmd::kernels::cuda {

__device__ inline float BlockSum(float v, float* scratch) {
  const int tid = static_cast<int>(threadIdx.x);
  const int n = static_cast<int>(blockDim.x);
  int pow2 = 1;
  while (pow2 * 2 <= n) pow2 *= 2;
  scratch[tid] = v;
  __syncthreads();
  if (tid < n - pow2) scratch[tid] += scratch[tid + pow2];
  __syncthreads();
  for (int s = pow2 / 2; s > 0; s /= 2) {
    if (tid < s) scratch[tid] += scratch[tid + s];
    __syncthreads();
  }
  const float total = scratch[0];
  __syncthreads();  // scratch may be reused right away
  return total;
}

__device__ inline float LogSigmoid(float x) {
  return fminf(x, 0.0f) - log1pf(expf(-fabsf(x)));
}

}  // namespace xlstmd::kernels::cuda

#endif  // XLSTMD_KERNELS_CUDA_BLOCK_REDUCE_CUH_
