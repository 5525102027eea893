// The portable mLSTM loops (mlstm_portable.inc) compiled with AVX2 + FMA flags, for the AVX2
// ISA setting. Entered only after run-time dispatch picked AVX2: everything but the two entry
// points has internal linkage (tests/layering/check_isa_objects.py checks).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/mlstm_cpu.h"

namespace xlstmd::kernels::cpu {
namespace {
#include "kernels/cpu/mlstm_portable.inc"

// MatAcc's register tiles on 16 ymm registers: up to 4 rows x 3 vectors of 8 columns (12
// accumulators, 3 loads of b, one broadcast of a). Each output element is one FMA chain over
// kk = 0, 1, ... from +0, then added to `out`, whatever tile it falls in, as in the AVX-512
// version. The auto-vectorised portable loop kept its accumulators in memory (a load and a
// store per FMA) and ran the mLSTM chunk products and the sLSTM's recurrent and gate
// products at a fraction of the GEMM's rate.
constexpr int kLanes = 8;
constexpr int kTileRows = 4;
constexpr int kTileVecs = 3;

__m256i TailMask(int64_t cols) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(cols, 8))), lane);
}

template <int R, int NV>
void Tile(const float* a, int64_t lda, int64_t kdim, const float* b, int64_t ldb, float* out,
          int64_t ldo, const __m256i* mask_in) {
  __m256i masks[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) masks[v] = mask_in[v];
  __m256 acc[R][NV];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  for (int64_t kk = 0; kk < kdim; ++kk) {
    __m256 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm256_maskload_ps(b + kk * ldb + v * kLanes, masks[v]);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + kk);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* o = out + r * ldo + v * kLanes;
      _mm256_maskstore_ps(o, masks[v], _mm256_add_ps(_mm256_maskload_ps(o, masks[v]), acc[r][v]));
    }
  }
}

using TileFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t,
                        const __m256i*);

template <int R>
TileFn PickVecs(int nv) {
  switch (nv) {
    case 1:
      return &Tile<R, 1>;
    case 2:
      return &Tile<R, 2>;
    default:
      return &Tile<R, 3>;
  }
}

TileFn PickTile(int rows, int nv) {
  switch (rows) {
    case 1:
      return PickVecs<1>(nv);
    case 2:
      return PickVecs<2>(nv);
    case 3:
      return PickVecs<3>(nv);
    default:
      return PickVecs<4>(nv);
  }
}

}  // namespace

float StepCoreAvx2(const float* q, const float* k, const float* v, float fa, float ia, float* C,
                   float* n, float* h, const MlstmDims& d) {
  return StepCorePortable(q, k, v, fa, ia, C, n, h, d);
}

void MatAccAvx2(const float* a, int64_t lda, int64_t rows, int64_t kdim, const float* b,
                int64_t ldb, int64_t n, float* out, int64_t ldo, float* /*row_acc*/) {
  constexpr int64_t kTileCols = kTileVecs * kLanes;
  for (int64_t j0 = 0; j0 < n; j0 += kTileCols) {
    const int64_t cols = std::min(n - j0, kTileCols);
    const int nv = static_cast<int>((cols + kLanes - 1) / kLanes);
    __m256i masks[kTileVecs];
    for (int v = 0; v < nv; ++v) masks[v] = TailMask(cols - v * kLanes);
    for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
      const int rr = static_cast<int>(std::min<int64_t>(rows - r0, kTileRows));
      PickTile(rr, nv)(a + r0 * lda, lda, kdim, b + j0, ldb, out + r0 * ldo + j0, ldo, masks);
    }
  }
}

}  // namespace xlstmd::kernels::cpu
