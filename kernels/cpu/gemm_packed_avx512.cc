// AVX-512 GEMM on the packed weight layout (see PackGemmWeights in gemm.cc):
// y[m, n] = (acc ? y : 0) + sum_k x[m, k] * W[n, k].
//
// W is stored in pairs of 16-row panels, 32 output rows per pair, laid out [pair][k][32]:
// one 64-byte line (bf16) or two (f32) per k. For bf16 the two panels are interleaved per
// 32-bit word (low half: row j, high half: row 16 + j), so one load plus a shift and an
// AND widens both halves exactly.
//
// Outer-product microkernel: an MR x 32*NP register tile, per k broadcast MR x values and
// FMA them into the widened W vectors. Per output element the arithmetic is one FMA chain
// c = fma(x[k], W[n, k], c) over k = 0..K-1 in order starting from +0, then y = c or
// y = y + c. Every tile shape, path and thread split below does exactly that, so results are
// batch invariant. Padding rows of the last pair are zero and never stored (masked stores).
//
// Paths: M <= 3 streams W from DRAM (NP = 4 pairs at once for 8+ independent chains, with
// software prefetch); M >= 4 packs blocks of x into 12-row strips [k][12] (one contiguous
// stream of broadcasts) and runs 12 x 32 tiles (24 accumulators) K block by K block: each
// block of a W pair is widened to f32 once into an L1-resident sub-panel that every strip of
// the x block then reuses (RunBlocked), while the next block is prefetched into L2.
//
// Compiled with AVX-512 flags and only entered after run-time dispatch: everything except
// the entry points is in an anonymous namespace.

#include <cstdint>

#include "kernels/cpu/gemm_packed_driver.h"
#include "kernels/cpu/simd.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {
namespace {

constexpr int kStrip = 12;       // x rows per register tile on the blocked path
constexpr int kStreamPairs = 4;  // W pairs per register tile on the streamed path

// The tag gemm_packed_driver.h dispatches on.
struct Avx512Packed {
  using Vec = Avx512Vec;
  static constexpr int kStrip = ::xlstmd::kernels::cpu::kStrip;
  static int64_t StreamPairs(int) { return kStreamPairs; }
};

// Widens pair row k into its two 16-column halves.
inline void LoadPair(const uint16_t* p, __m512& lo, __m512& hi) {
  const __m512i v = _mm512_loadu_si512(p);
  lo = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  hi = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}
inline void LoadPair(const float* p, __m512& lo, __m512& hi) {
  lo = _mm512_loadu_ps(p);
  hi = _mm512_loadu_ps(p + 16);
}

inline __mmask16 HalfMask(int64_t c0, int64_t lo, int64_t hi) {
  const int64_t b = Max(lo - c0, 0), e = Min(hi - c0, 16);
  if (e <= b) return 0;
  const uint32_t ones = e - b >= 16 ? 0xFFFFu : ((1u << (e - b)) - 1u);
  return static_cast<__mmask16>(ones << b);
}

// Finishes an MR-row register tile into y (y0 = its first row at column col0): accumulator
// column block j holds output columns [col0 + 16 j, col0 + 16 j + 16), of which those in
// [n_lo, n_hi) are written (or added to y when `accumulate`); padding columns never are.
template <int MR, int NC>
inline void StoreTile(Avx512Packed, const __m512 (&c)[MR][NC], float* y0, int64_t ldy,
                      int64_t col0, int64_t n_lo, int64_t n_hi, bool accumulate) {
#pragma GCC unroll 8
  for (int j = 0; j < NC; ++j) {
    const __mmask16 m = HalfMask(col0 + 16 * j, n_lo, n_hi);
    if (m == 0) continue;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      float* y = y0 + r * ldy + 16 * j;
      __m512 v = c[r][j];
      if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y), v);
      _mm512_mask_storeu_ps(y, m, v);
    }
  }
}

template <int MR, int NP, typename WT>
void Micro(const MicroArgs& a) {
  const WT* w = static_cast<const WT*>(a.w);
  const int64_t pair_stride = a.k * kPairCols;
  __m512 c[MR][2 * NP];
  ZeroTile<Avx512Vec>(c);
  // Pointers advanced per k (one base register each) rather than indexed by k.
  const float* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = a.x + r * a.ldx;
  const WT* wp = w;
  for (int64_t kk = 0; kk < a.k; ++kk) {
    __m512 wv[2 * NP];
    for (int j = 0; j < NP; ++j) {
      const WT* wj = wp + j * pair_stride;
      const char* pf = reinterpret_cast<const char*>(wj + kPrefetchK * kPairCols);
      for (int off = 0; off < kPairCols * static_cast<int>(sizeof(WT)); off += 64) {
        _mm_prefetch(pf + off, _MM_HINT_T0);
      }
      LoadPair(wj, wv[2 * j], wv[2 * j + 1]);
    }
    wp += kPairCols;
    for (int r = 0; r < MR; ++r) {
      const __m512 xb = _mm512_set1_ps(xr[r][kk]);
      for (int j = 0; j < 2 * NP; ++j) c[r][j] = _mm512_fmadd_ps(xb, wv[j], c[r][j]);
    }
  }
  StoreTile(Avx512Packed{}, c, a.y, a.ldy, a.col0, a.n_lo, a.n_hi, a.accumulate);
}

// Micro<mr, np> for run-time mr in [1, MaxMR], np in [1, MaxNP].
template <typename WT, int MaxMR, int MaxNP, int MR = 1, int NP = 1>
MicroFn PickMicro(int mr, int np) {
  if (mr == MR && np == NP) return &Micro<MR, NP, WT>;
  if constexpr (NP < MaxNP) {
    if (mr == MR) return PickMicro<WT, MaxMR, MaxNP, MR, NP + 1>(mr, np);
  }
  if constexpr (MR < MaxMR) {
    return PickMicro<WT, MaxMR, MaxNP, MR + 1, 1>(mr, np);
  }
  return nullptr;
}

// Copies x rows [0, mr) (mr <= 16) into a [k][mr] strip: per k, one gather of the mr
// values (lane r at x + r * ldx + kk) and one masked store, ~4x faster than the scalar
// transpose it replaces, which was ~3% of a batch-64 decode step (both threads pack every
// x block they use). Scalar when the row offsets do not fit the gather's 32-bit indices.
void PackStrip(Avx512Packed, const float* x, int64_t ldx, int mr, int64_t k, float* dst) {
  if ((mr - 1) * ldx > (int64_t{1} << 30)) {
    for (int r = 0; r < mr; ++r) {
      const float* src = x + r * ldx;
      for (int64_t kk = 0; kk < k; ++kk) dst[kk * mr + r] = src[kk];
    }
    return;
  }
  const __mmask16 m = static_cast<__mmask16>((1u << mr) - 1u);
  const __m512i idx = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(static_cast<int>(ldx)));
  for (int64_t kk = 0; kk < k; ++kk) {
    const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, x + kk, 4);
    _mm512_mask_storeu_ps(dst + kk * mr, m, v);
  }
}

// The f32 sub-panel of pair rows [k0, k0 + kc): bf16 widened into `buf`; f32 read in place.
inline const float* Panel(Avx512Packed, const uint16_t* pair, int64_t k0, int64_t kc,
                          float* buf) {
  const uint16_t* src = pair + k0 * kPairCols;
  for (int64_t kk = 0; kk < kc; ++kk) {
    __m512 lo, hi;
    LoadPair(src + kk * kPairCols, lo, hi);
    _mm512_store_ps(buf + kk * kPairCols, lo);
    _mm512_store_ps(buf + kk * kPairCols + 16, hi);
  }
  return buf;
}
inline const float* Panel(Avx512Packed, const float* pair, int64_t k0, int64_t, float*) {
  return pair + k0 * kPairCols;
}

template <typename WT>
MicroFn PickMicro(Avx512Packed, const WT*, int mr, int np) {
  return PickMicro<WT, 3, kStreamPairs>(mr, np);
}

void RunPanel(Avx512Packed, const PanelArgs& a, int mr, bool prefetch) {
  (prefetch ? PickPanel<Avx512Packed, true>(mr) : PickPanel<Avx512Packed, false>(mr))(a);
}

}  // namespace

int64_t GemmPackedMinScratchFloats(int64_t k) { return PackedMinScratchFloats<Avx512Packed>(k); }

void GemmPackedAvx512(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
                      int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  RunPacked<Avx512Packed>(p, n_begin, n_end, scratch, scratch_floats, next_pair, grab);
}

}  // namespace xlstmd::kernels::cpu
