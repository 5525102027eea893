// The portable paper-family loops (paper_portable.inc) compiled for the Avx2 ISA setting.
// Entered only after run-time dispatch; everything but the entry points has internal linkage.
#include <immintrin.h>

#include <cstdint>

namespace xlstmd::kernels::cpu {
namespace {
#include "kernels/cpu/paper_portable.inc"

// Blocksize 4 (upstream's default qkv_proj_blocksize), two blocks per ymm: lanes 0-3 are block
// p's outputs, 4-7 block p+1's. Input i of each block is broadcast within its half by one
// permute of the 8 loaded inputs; the weights [p, i, 0..3] are 4 contiguous floats. Each
// output is the FMA chain over i from 0 that the portable loop computes (compiled here with
// FMA), so the vector and scalar parts of a row agree.
void Narrow4(const float* x, int64_t ldx, int64_t rows, const float* w, int64_t blocks,
             const float* b, float alpha, float* y, int64_t ldy) {
  const __m256 va = _mm256_set1_ps(alpha);
  __m256i idx[4];
  for (int i = 0; i < 4; ++i) idx[i] = _mm256_setr_epi32(i, i, i, i, 4 + i, 4 + i, 4 + i, 4 + i);
  const int64_t pairs = blocks / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    for (int64_t q = 0; q < pairs; ++q) {
      const __m256 xv = _mm256_loadu_ps(xr + 8 * q);
      const float* w0 = w + 32 * q;  // block 2q: 16 floats, then block 2q + 1
      __m256 acc = _mm256_setzero_ps();
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const __m256 wv = _mm256_set_m128(_mm_loadu_ps(w0 + 16 + 4 * i), _mm_loadu_ps(w0 + 4 * i));
        acc = _mm256_fmadd_ps(wv, _mm256_permutevar8x32_ps(xv, idx[i]), acc);
      }
      if (b != nullptr) acc = _mm256_add_ps(acc, _mm256_loadu_ps(b + 8 * q));
      _mm256_storeu_ps(yr + 8 * q, _mm256_mul_ps(va, acc));
    }
  }
  if (blocks % 2 != 0) {
    const int64_t p = blocks - 1;
    HeadwiseNarrowPortable(x + 4 * p, ldx, rows, w + 16 * p, 1, 4, 4,
                           b != nullptr ? b + 4 * p : nullptr, alpha, y + 4 * p, ldy);
  }
}

}  // namespace

void HeadwiseNarrowAvx2(const float* x, int64_t ldx, int64_t rows, const float* w,
                        int64_t blocks, int64_t out, int64_t in, const float* b, float alpha,
                        float* y, int64_t ldy) {
  if (in == 4 && out == 4) {
    Narrow4(x, ldx, rows, w, blocks, b, alpha, y, ldy);
  } else {
    HeadwiseNarrowPortable(x, ldx, rows, w, blocks, out, in, b, alpha, y, ldy);
  }
}

void ConvSeqAvx2(const float* x, int64_t ldx, int64_t len, const float* w, int64_t ldw,
                const float* b, float* win, int64_t ldwin, int64_t ks, int64_t n, float* y,
                int64_t ldy) {
  ConvSeqPortable(x, ldx, len, w, ldw, b, win, ldwin, ks, n, y, ldy);
}

}  // namespace xlstmd::kernels::cpu
