// AVX2 + FMA GEMM on the packed weight layout (see PackGemmWeights in gemm.cc), the AVX2
// twin of gemm_packed_avx512.cc: y[m, n] = (acc ? y : 0) + sum_k x[m, k] * W[n, k].
//
// Same layout ([pair][k][32], bf16 pairs interleaved per 32-bit word: low half row j, high
// half row 16 + j) and the same arithmetic: per output element one FMA chain
// c = fma(x[k], W[n, k], c) over k = 0..K-1 in order from +0, then y = c or y = y + c. So this
// kernel's results are bit-identical to the AVX-512 kernel's (FMA rounds once on both ISAs),
// and batch invariant for the same reason.
//
// Register tiles are sized for 16 ymm registers:
// - streamed path (M <= 3, decode: W read once from DRAM): MR rows x NP pairs with
//   4 * MR * NP accumulators, one W vector and MR broadcasts live at a time (MR = 1: NP = 3,
//   12 chains; MR = 2: 8 chains; MR = 3: 12 chains), with software prefetch ahead;
// - blocked path (M >= 4): x packed into 6-row strips [k][6]; each 128-step K block of a W
//   pair is widened once into an L1-resident f32 sub-panel, and every strip runs 6 x 16 tiles
//   (12 accumulators, two W vectors, one broadcast) over its two 16-column halves. Pairs are
//   claimed dynamically across threads as on AVX-512.
//
// Compiled with -mavx2 -mfma and entered only after run-time dispatch: everything but the
// entry points is in an anonymous namespace.

#include <cstdint>

#include "kernels/cpu/gemm_packed_driver.h"
#include "kernels/cpu/simd.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {
namespace {

// The tag gemm_packed_driver.h dispatches on.
struct Avx2Packed {
  using Vec = Avx2Vec;
  static constexpr int kStrip = 6;  // x rows per register tile on the blocked path
  static int64_t StreamPairs(int mr) { return mr == 1 ? 3 : 1; }
};

// Widens pair row k into its four 8-column quarters q[0..3] (columns 0-7, 8-15, 16-23,
// 24-31). bf16: words 0-7 hold columns 0-7 (low halves) and 16-23 (high halves), words
// 8-15 hold 8-15 and 24-31.
inline void LoadRow(const uint16_t* p, __m256 q[4]) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16));
  const __m256i hi_mask = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  q[0] = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
  q[1] = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
  q[2] = _mm256_castsi256_ps(_mm256_and_si256(a, hi_mask));
  q[3] = _mm256_castsi256_ps(_mm256_and_si256(b, hi_mask));
}
inline __m256 LoadQuarter(const uint16_t* p, int q) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16 * (q & 1)));
  return q < 2 ? _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
               : _mm256_castsi256_ps(
                     _mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
}
inline __m256 LoadQuarter(const float* p, int q) { return _mm256_loadu_ps(p + 8 * q); }

// Lanes of an 8-column group starting at global column c0 that fall in [lo, hi).
inline __m256i GroupMask(int64_t c0, int64_t lo, int64_t hi, bool* any) {
  const int64_t b = Max(lo - c0, 0), e = Min(hi - c0, 8);
  *any = e > b;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i ge = _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(static_cast<int>(b) - 1));
  const __m256i lt = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(e)), lane);
  return _mm256_and_si256(ge, lt);
}

// Stores (or adds into) 8 columns of y under the column range.
inline void StoreGroup(float* y, __m256 v, int64_t c0, int64_t lo, int64_t hi, bool accumulate) {
  bool any = false;
  if (c0 >= lo && c0 + 8 <= hi) {
    if (accumulate) v = _mm256_add_ps(_mm256_loadu_ps(y), v);
    _mm256_storeu_ps(y, v);
    return;
  }
  const __m256i m = GroupMask(c0, lo, hi, &any);
  if (!any) return;
  if (accumulate) v = _mm256_add_ps(_mm256_maskload_ps(y, m), v);
  _mm256_maskstore_ps(y, m, v);
}

// --- Streamed path (M <= 3) -------------------------------------------------------------------

template <int MR, int NP, typename WT>
void Micro(const MicroArgs& a) {
  const WT* w = static_cast<const WT*>(a.w);
  const int64_t pair_stride = a.k * kPairCols;
  __m256 c[MR][4 * NP];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 16
    for (int j = 0; j < 4 * NP; ++j) c[r][j] = _mm256_setzero_ps();
  }
  const float* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = a.x + r * a.ldx;
  const WT* wp = w;
  for (int64_t kk = 0; kk < a.k; ++kk) {
    __m256 xb[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) xb[r] = _mm256_broadcast_ss(xr[r] + kk);
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) {
      const WT* wj = wp + j * pair_stride;
      const char* pf = reinterpret_cast<const char*>(wj + kPrefetchK * kPairCols);
      for (int off = 0; off < kPairCols * static_cast<int>(sizeof(WT)); off += 64) {
        _mm_prefetch(pf + off, _MM_HINT_T0);
      }
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        const __m256 wv = LoadQuarter(wj, q);
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) c[r][4 * j + q] = _mm256_fmadd_ps(xb[r], wv, c[r][4 * j + q]);
      }
    }
    wp += kPairCols;
  }
#pragma GCC unroll 16
  for (int j = 0; j < 4 * NP; ++j) {
    // Quarter q of pair p holds columns 8q..8q+7 of that pair.
    const int64_t c0 = a.col0 + (j / 4) * kPairCols + 8 * (j % 4);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      StoreGroup(a.y + r * a.ldy + (c0 - a.col0), c[r][j], c0, a.n_lo, a.n_hi, a.accumulate);
    }
  }
}

template <typename WT>
MicroFn PickMicro(Avx2Packed, const WT*, int mr, int np) {
  switch (mr * 4 + np) {
    case 1 * 4 + 1: return &Micro<1, 1, WT>;
    case 1 * 4 + 2: return &Micro<1, 2, WT>;
    case 1 * 4 + 3: return &Micro<1, 3, WT>;
    case 2 * 4 + 1: return &Micro<2, 1, WT>;
    case 3 * 4 + 1: return &Micro<3, 1, WT>;
    default: return nullptr;
  }
}

// --- Blocked path (M >= 4) --------------------------------------------------------------------

// Copies x rows [0, mr) (mr <= 8) into a [k][mr] strip with one masked gather per k.
void PackStrip(Avx2Packed, const float* x, int64_t ldx, int mr, int64_t k, float* dst) {
  if ((mr - 1) * ldx > (int64_t{1} << 30)) {
    for (int r = 0; r < mr; ++r) {
      const float* src = x + r * ldx;
      for (int64_t kk = 0; kk < k; ++kk) dst[kk * mr + r] = src[kk];
    }
    return;
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(mr), lane);
  const __m256i idx = _mm256_mullo_epi32(lane, _mm256_set1_epi32(static_cast<int>(ldx)));
  for (int64_t kk = 0; kk < k; ++kk) {
    const __m256 v =
        _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x + kk, idx, _mm256_castsi256_ps(m), 4);
    _mm256_maskstore_ps(dst + kk * mr, m, v);
  }
}

// Finishes an MR x 16 tile into y (y0 = its first row at column col0): accumulator j holds
// columns [col0 + 8 j, col0 + 8 j + 8). Fully unrolled, like every loop over c: a run-time
// index would keep the accumulators in memory (measured: a store per FMA pair, ~0.6x).
template <int MR>
void StoreTile(Avx2Packed, const __m256 (&c)[MR][2], float* y0, int64_t ldy, int64_t col0,
               int64_t n_lo, int64_t n_hi, bool accumulate) {
#pragma GCC unroll 2
  for (int j = 0; j < 2; ++j) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      StoreGroup(y0 + r * ldy + 8 * j, c[r][j], col0 + 8 * j, n_lo, n_hi, accumulate);
    }
  }
}

// The f32 sub-panel of pair rows [k0, k0 + kc): bf16 widened into `buf`; f32 read in place.
inline const float* Panel(Avx2Packed, const uint16_t* pair, int64_t k0, int64_t kc, float* buf) {
  const uint16_t* src = pair + k0 * kPairCols;
  for (int64_t kk = 0; kk < kc; ++kk) {
    __m256 q[4];
    LoadRow(src + kk * kPairCols, q);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) _mm256_store_ps(buf + kk * kPairCols + 8 * i, q[i]);
  }
  return buf;
}
inline const float* Panel(Avx2Packed, const float* pair, int64_t k0, int64_t, float*) {
  return pair + k0 * kPairCols;
}

// A strip's tile covers 16 of a pair's 32 columns, so a strip runs it over both halves
// (sub-panel, parked accumulators, y and columns shifted by 16); the prefetch share goes with
// the first half.
void RunPanel(Avx2Packed, const PanelArgs& a, int mr, bool prefetch) {
  (prefetch ? PickPanel<Avx2Packed, true>(mr) : PickPanel<Avx2Packed, false>(mr))(a);
  PanelArgs b = a;
  b.w += 16;
  b.part += 16;
  b.y += 16;
  b.col0 += 16;
  PickPanel<Avx2Packed, false>(mr)(b);
}

}  // namespace

int64_t GemmPackedAvx2MinScratchFloats(int64_t k) { return PackedMinScratchFloats<Avx2Packed>(k); }

void GemmPackedAvx2(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
                    int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  RunPacked<Avx2Packed>(p, n_begin, n_end, scratch, scratch_floats, next_pair, grab);
}

}  // namespace xlstmd::kernels::cpu
