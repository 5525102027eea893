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
#include <utility>

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

// StepCoreAvx512 for heads of up to 128 value columns, in 256-bit vectors (AVX-512VL
// gives 32 of them): h of the block stays in registers while every C row of the block is
// loaded, updated, stored and folded into h in one pass. Why ymm on an AVX-512 machine: in
// decode the step streams each session's state from DRAM, and on AMD EPYC (Zen 4) 512-bit
// stores to a DRAM-bound stream ran at 35-40 GB/s against 54-59 GB/s for 256-bit ones (one
// thread, 3072 heads of 64 x 128: /tmp microbenchmark, docs/runtime.md); zmm won only
// while the states fit in L2 (+10-35% on a step that is then ~3% of the decode). Masked
// loads and stores only for a ragged last vector (masked stores are slow on AMD too). Every
// element's operations are those of the 512-bit form it replaced, so results are unchanged.
constexpr int kStepLanes = 8;
constexpr int kStepVecs = 16;  // 128 value columns per block

__mmask8 StepTailMask(int64_t cols) {
  return static_cast<__mmask8>(cols >= kStepLanes ? 0xff : (1u << cols) - 1u);
}

template <int NV, bool kMasked>
void StepBlock(const float* q, const float* k, const float* v, float fa, float ia, float* C,
               float* h, const MlstmDims& d, __mmask8 tail) {
  __m256 hacc[NV];
#pragma GCC unroll 16
  for (int x = 0; x < NV; ++x) hacc[x] = _mm256_setzero_ps();
  const __m256 fav = _mm256_set1_ps(fa);
  for (int64_t a = 0; a < d.dqk; ++a) {
    const __m256 ka = _mm256_set1_ps(ia * k[a]);
    const __m256 qa = _mm256_set1_ps(q[a] * d.q_scale);
    float* row = C + a * d.dv;
#pragma GCC unroll 16
    for (int x = 0; x < NV; ++x) {
      float* p = row + x * kStepLanes;
      const float* vp = v + x * kStepLanes;
      const bool masked = kMasked && x == NV - 1;  // only the ragged last vector
      const __m256 old = masked ? _mm256_maskz_loadu_ps(tail, p) : _mm256_loadu_ps(p);
      const __m256 vx = masked ? _mm256_maskz_loadu_ps(tail, vp) : _mm256_loadu_ps(vp);
      const __m256 c = _mm256_fmadd_ps(fav, old, _mm256_mul_ps(ka, vx));
      if (masked) {
        _mm256_mask_storeu_ps(p, tail, c);
      } else {
        _mm256_storeu_ps(p, c);
      }
      hacc[x] = _mm256_fmadd_ps(qa, c, hacc[x]);
    }
  }
#pragma GCC unroll 16
  for (int x = 0; x < NV; ++x) {
    float* p = h + x * kStepLanes;
    if (kMasked && x == NV - 1) {
      _mm256_mask_storeu_ps(p, tail, hacc[x]);
    } else {
      _mm256_storeu_ps(p, hacc[x]);
    }
  }
}

// Heads wider than one block: C row by row in one sequential stream, h accumulated in
// memory (L1). Blocks of 128 columns walked C with a stride of dv floats and ran at half the
// DRAM rate (26 against 46 GB/s at 256 x 512). The same operations per element as StepBlock
// (h starts at +0 and takes one FMA per row), so the two forms agree bit for bit.
void StepRows(const float* q, const float* k, const float* v, float fa, float ia, float* C,
              float* h, const MlstmDims& d) {
  const int64_t full = d.dv / kStepLanes * kStepLanes;
  const __mmask8 tail = StepTailMask(d.dv - full);
  for (int64_t c = 0; c < d.dv; ++c) h[c] = 0.0f;
  const __m256 fav = _mm256_set1_ps(fa);
  for (int64_t a = 0; a < d.dqk; ++a) {
    const __m256 ka = _mm256_set1_ps(ia * k[a]);
    const __m256 qa = _mm256_set1_ps(q[a] * d.q_scale);
    float* row = C + a * d.dv;
    for (int64_t c = 0; c < full; c += kStepLanes) {
      const __m256 x = _mm256_fmadd_ps(fav, _mm256_loadu_ps(row + c),
                                       _mm256_mul_ps(ka, _mm256_loadu_ps(v + c)));
      _mm256_storeu_ps(row + c, x);
      _mm256_storeu_ps(h + c, _mm256_fmadd_ps(qa, x, _mm256_loadu_ps(h + c)));
    }
    if (full < d.dv) {
      const __m256 x =
          _mm256_fmadd_ps(fav, _mm256_maskz_loadu_ps(tail, row + full),
                          _mm256_mul_ps(ka, _mm256_maskz_loadu_ps(tail, v + full)));
      _mm256_mask_storeu_ps(row + full, tail, x);
      _mm256_mask_storeu_ps(h + full, tail,
                            _mm256_fmadd_ps(qa, x, _mm256_maskz_loadu_ps(tail, h + full)));
    }
  }
}

using StepFn = void (*)(const float*, const float*, const float*, float, float, float*, float*,
                        const MlstmDims&, __mmask8);

template <int... NV>
StepFn PickStep(int nv, bool masked, std::integer_sequence<int, NV...>) {
  static constexpr StepFn kFull[] = {&StepBlock<NV + 1, false>...};
  static constexpr StepFn kMasked[] = {&StepBlock<NV + 1, true>...};
  return masked ? kMasked[nv - 1] : kFull[nv - 1];
}

}  // namespace

// One recurrent step of one head without its normaliser (mlstm_cpu.cc StepHead):
// C = fa C + ia k v^T, n = fa n + ia k, h = C^T (q q_scale); returns (q q_scale) . n.
float StepCoreAvx512(const float* q, const float* k, const float* v, float fa, float ia, float* C,
                     float* n, float* h, const MlstmDims& d) {
  constexpr int64_t kBlock = kStepVecs * kStepLanes;
  if (d.dv > kBlock) {
    StepRows(q, k, v, fa, ia, C, h, d);
  } else {
    const int nv = static_cast<int>((d.dv + kStepLanes - 1) / kStepLanes);
    const bool ragged = d.dv % kStepLanes != 0;
    PickStep(nv, ragged, std::make_integer_sequence<int, kStepVecs>())(
        q, k, v, fa, ia, C, h, d, StepTailMask(d.dv - (nv - 1) * kStepLanes));
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
