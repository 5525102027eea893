// AVX-512 pieces of the mLSTM cell (mlstm_cpu.cc holds the algorithm and the portable
// versions).
//
// MatAccAvx512, the small dense products of the chunkwise form:
// out[r, j] += sum_{kk < kdim} a[r, kk] * b[kk, j], all f32, row-major with strides.
// (Every small loop over a register array carries `#pragma GCC unroll`: left rolled, GCC 12
// kept the array in memory and stored every accumulator on each kk step.)
//
// Register tiles of up to 4 rows x 64 columns (16 zmm accumulators): per kk, up to 4
// vector loads of b, 4 broadcasts of a and 16 FMAs. Every output element is one FMA chain
// over kk = 0, 1, ... in order starting from +0, then added to its value in `out`, whatever
// tile it falls in, so the result does not depend on the shapes around it. Column tails use
// masked loads and stores.
//
// Compiled with AVX-512 flags and only entered after run-time dispatch: everything except
// the entry point is in an anonymous namespace (see kernels/CMakeLists.txt).

#include <cstdint>

#include "kernels/cpu/simd.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {
namespace {

constexpr int kLanes = 16;
constexpr int kTileRows = 4;
constexpr int kTileVecs = 4;

template <int R, int NV>
void Tile(const float* a, int64_t lda, int64_t kdim, const float* b, int64_t ldb, float* out,
          int64_t ldo, const __mmask16* mask_in) {
  __mmask16 masks[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) masks[v] = mask_in[v];
  __m512 acc[R][NV];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t kk = 0; kk < kdim; ++kk) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_maskz_loadu_ps(masks[v], b + kk * ldb + v * kLanes);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + kk]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* o = out + r * ldo + v * kLanes;
      _mm512_mask_storeu_ps(o, masks[v], _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], o), acc[r][v]));
    }
  }
}

using TileFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t,
                        const __mmask16*);

template <int R>
TileFn PickVecs(int nv) {
  switch (nv) {
    case 1:
      return &Tile<R, 1>;
    case 2:
      return &Tile<R, 2>;
    case 3:
      return &Tile<R, 3>;
    default:
      return &Tile<R, 4>;
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

// StepCoreAvx512 for up to 64 value columns starting at j0: the v block stays in
// registers, every C row of the block is loaded, updated, stored and folded into h in one go.
template <int NV>
void StepBlock(const float* q, const float* k, const float* v, float fa, float ia, float* C,
               float* h, const MlstmDims& d, int64_t j0, const __mmask16* masks) {
  __m512 vv[NV], hacc[NV];
#pragma GCC unroll 4
  for (int x = 0; x < NV; ++x) {
    vv[x] = _mm512_maskz_loadu_ps(masks[x], v + j0 + x * kLanes);
    hacc[x] = _mm512_setzero_ps();
  }
  const __m512 fav = _mm512_set1_ps(fa);
  for (int64_t a = 0; a < d.dqk; ++a) {
    const __m512 ka = _mm512_set1_ps(ia * k[a]);
    const __m512 qa = _mm512_set1_ps(q[a] * d.q_scale);
    float* row = C + a * d.dv + j0;
  #pragma GCC unroll 4
  for (int x = 0; x < NV; ++x) {
      const __m512 c = _mm512_fmadd_ps(fav, _mm512_maskz_loadu_ps(masks[x], row + x * kLanes),
                                       _mm512_mul_ps(ka, vv[x]));
      _mm512_mask_storeu_ps(row + x * kLanes, masks[x], c);
      hacc[x] = _mm512_fmadd_ps(qa, c, hacc[x]);
    }
  }
#pragma GCC unroll 4
  for (int x = 0; x < NV; ++x) _mm512_mask_storeu_ps(h + j0 + x * kLanes, masks[x], hacc[x]);
}

}  // namespace

// One recurrent step of one head without its normaliser (mlstm_cpu.cc StepHead):
// C = fa C + ia k v^T, n = fa n + ia k, h = C^T (q q_scale); returns (q q_scale) . n.
float StepCoreAvx512(const float* q, const float* k, const float* v, float fa, float ia, float* C,
                     float* n, float* h, const MlstmDims& d) {
  constexpr int64_t kBlock = kTileVecs * kLanes;
  for (int64_t j0 = 0; j0 < d.dv; j0 += kBlock) {
    const int64_t cols = d.dv - j0 < kBlock ? d.dv - j0 : kBlock;
    const int nv = static_cast<int>((cols + kLanes - 1) / kLanes);
    __mmask16 masks[kTileVecs];
    for (int x = 0; x < nv; ++x) masks[x] = TailMask(cols - x * kLanes);
    switch (nv) {
      case 1:
        StepBlock<1>(q, k, v, fa, ia, C, h, d, j0, masks);
        break;
      case 2:
        StepBlock<2>(q, k, v, fa, ia, C, h, d, j0, masks);
        break;
      case 3:
        StepBlock<3>(q, k, v, fa, ia, C, h, d, j0, masks);
        break;
      default:
        StepBlock<4>(q, k, v, fa, ia, C, h, d, j0, masks);
        break;
    }
  }
  float qn = 0.0f;
  for (int64_t a = 0; a < d.dqk; ++a) {
    n[a] = fa * n[a] + ia * k[a];
    qn += q[a] * d.q_scale * n[a];
  }
  return qn;
}

void MatAccAvx512(const float* a, int64_t lda, int64_t rows, int64_t kdim, const float* b,
                  int64_t ldb, int64_t n, float* out, int64_t ldo) {
  constexpr int64_t kTileCols = kTileVecs * kLanes;
  for (int64_t j0 = 0; j0 < n; j0 += kTileCols) {
    const int64_t cols = n - j0 < kTileCols ? n - j0 : kTileCols;
    const int nv = static_cast<int>((cols + kLanes - 1) / kLanes);
    __mmask16 masks[kTileVecs];
    for (int v = 0; v < nv; ++v) masks[v] = TailMask(cols - v * kLanes);
    for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
      const int rr = static_cast<int>(rows - r0 < kTileRows ? rows - r0 : kTileRows);
      PickTile(rr, nv)(a + r0 * lda, lda, kdim, b + j0, ldb, out + r0 * ldo + j0, ldo, masks);
    }
  }
}

}  // namespace xlstmd::kernels::cpu
