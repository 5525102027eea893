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
// stream of broadcasts) and runs 12 x 32 tiles (24 accumulators), each W pair reused over
// every strip of the block while it sits in L2 (the next pair is prefetched meanwhile).
//
// Compiled with AVX-512 flags and only entered after run-time dispatch: everything except
// the entry point is in an anonymous namespace.

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {
namespace {

constexpr int kPairCols = 32;
constexpr int kStrip = 12;       // x rows per register tile on the blocked path
constexpr int kStreamPairs = 4;  // W pairs per register tile on the streamed path
constexpr int kPrefetchK = 24;   // streamed path: prefetch this many k steps ahead

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t Max(int64_t a, int64_t b) { return a > b ? a : b; }

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

struct MicroArgs {
  const float* x;  // kPackedX: [k][MR] strip; else MR rows with stride ldx
  int64_t ldx;
  const void* w;   // first pair of the tile
  const void* next;  // blocked path: the pair to fetch into L2 meanwhile (one k row per k)
  int64_t k;
  float* y;        // y of the tile's first row, column of the first pair's column 0
  int64_t ldy;
  int64_t col0;    // global column of the first pair's column 0
  int64_t n_lo;    // columns [n_lo, n_hi) are stored
  int64_t n_hi;
  bool accumulate;
};

inline __mmask16 HalfMask(int64_t c0, int64_t lo, int64_t hi) {
  const int64_t b = Max(lo - c0, 0), e = Min(hi - c0, 16);
  if (e <= b) return 0;
  const uint32_t ones = e - b >= 16 ? 0xFFFFu : ((1u << (e - b)) - 1u);
  return static_cast<__mmask16>(ones << b);
}

template <int MR, int NP, typename WT, bool kPackedX, bool kPrefetch>
void Micro(const MicroArgs& a) {
  const WT* w = static_cast<const WT*>(a.w);
  const int64_t pair_stride = a.k * kPairCols;
  __m512 c[MR][2 * NP];
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < 2 * NP; ++j) c[r][j] = _mm512_setzero_ps();
  }
  // Pointers advanced per k (one base register each) rather than indexed by k.
  const float* xr[kPackedX ? 1 : MR];
  if constexpr (kPackedX) {
    xr[0] = a.x;
  } else {
    for (int r = 0; r < MR; ++r) xr[r] = a.x + r * a.ldx;
  }
  const WT* wp = w;
  for (int64_t kk = 0; kk < a.k; ++kk) {
    __m512 wv[2 * NP];
    for (int j = 0; j < NP; ++j) {
      const WT* wj = wp + j * pair_stride;
      if constexpr (kPrefetch) {
        const char* pf = reinterpret_cast<const char*>(wj + kPrefetchK * kPairCols);
        for (int off = 0; off < kPairCols * static_cast<int>(sizeof(WT)); off += 64) {
          _mm_prefetch(pf + off, _MM_HINT_T0);
        }
      }
      LoadPair(wj, wv[2 * j], wv[2 * j + 1]);
    }
    if constexpr (kPackedX) {
      // Spreads the next pair's DRAM traffic over every strip of this one, instead of
      // leaving the first strip of each pair waiting on DRAM.
      const char* pf = reinterpret_cast<const char*>(static_cast<const WT*>(a.next) +
                                                     kk * kPairCols);
      for (int off = 0; off < kPairCols * static_cast<int>(sizeof(WT)); off += 64) {
        _mm_prefetch(pf + off, _MM_HINT_T1);
      }
    }
    wp += kPairCols;
    for (int r = 0; r < MR; ++r) {
      const __m512 xb = _mm512_set1_ps(kPackedX ? xr[0][r] : xr[r][kk]);
      for (int j = 0; j < 2 * NP; ++j) c[r][j] = _mm512_fmadd_ps(xb, wv[j], c[r][j]);
    }
    if constexpr (kPackedX) xr[0] += MR;
  }
  for (int j = 0; j < 2 * NP; ++j) {
    const int64_t c0 = a.col0 + 16 * j;
    const __mmask16 m = HalfMask(c0, a.n_lo, a.n_hi);
    if (m == 0) continue;
    for (int r = 0; r < MR; ++r) {
      float* y = a.y + r * a.ldy + 16 * j;
      __m512 v = c[r][j];
      if (a.accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y), v);
      _mm512_mask_storeu_ps(y, m, v);
    }
  }
}

using MicroFn = void (*)(const MicroArgs&);

// Micro<mr, np> for run-time mr in [1, MaxMR], np in [1, MaxNP].
template <typename WT, bool kPackedX, bool kPrefetch, int MaxMR, int MaxNP, int MR = 1,
          int NP = 1>
MicroFn PickMicro(int mr, int np) {
  if (mr == MR && np == NP) return &Micro<MR, NP, WT, kPackedX, kPrefetch>;
  if constexpr (NP < MaxNP) {
    if (mr == MR) return PickMicro<WT, kPackedX, kPrefetch, MaxMR, MaxNP, MR, NP + 1>(mr, np);
  }
  if constexpr (MR < MaxMR) {
    return PickMicro<WT, kPackedX, kPrefetch, MaxMR, MaxNP, MR + 1, 1>(mr, np);
  }
  return nullptr;
}

// Decode: up to 3 x rows against kStreamPairs W pairs at a time, W read exactly once.
template <typename WT>
void RunStreamed(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end) {
  const int64_t k = p.w->cols;
  const int64_t p_end = (n_end + kPairCols - 1) / kPairCols;
  MicroArgs a{p.x, p.ldx, nullptr, nullptr, k, nullptr, p.ldy, 0, n_begin, n_end, p.accumulate};
  const int mr = static_cast<int>(p.m);
  for (int64_t pi = n_begin / kPairCols; pi < p_end; pi += kStreamPairs) {
    const int np = static_cast<int>(Min(kStreamPairs, p_end - pi));
    a.w = w + pi * k * kPairCols;
    a.col0 = pi * kPairCols;
    a.y = p.y + a.col0;
    PickMicro<WT, false, true, 3, kStreamPairs>(mr, np)(a);
  }
}

// Copies x rows [0, mr) into a [k][mr] strip.
void PackStrip(const float* x, int64_t ldx, int mr, int64_t k, float* dst) {
  for (int r = 0; r < mr; ++r) {
    const float* src = x + r * ldx;
    for (int64_t kk = 0; kk < k; ++kk) dst[kk * mr + r] = src[kk];
  }
}

// Prefill / batched decode: x blocks that fit the scratch (L2-sized), packed into strips;
// each W pair of the range is then multiplied with every strip of the block.
//
// With `next_pair` set, the W pairs of [n_begin, n_end) are not all taken by this thread:
// every thread of the call packs the same x block, then claims `grab` pairs at a time from
// the block's shared counter next_pair[block] until none are left. Which thread computes a
// column never changes its arithmetic; it only keeps a thread that a noisy neighbour slowed
// down from holding up the whole op (a static split waits for the slowest half).
template <typename WT>
void RunBlocked(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end,
                float* scratch, int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  const int64_t k = p.w->cols;
  const int64_t p_end = (n_end + kPairCols - 1) / kPairCols;
  // Rows per M block: as many as the scratch holds, then evened out over the blocks so the
  // last one is not a sliver that re-streams all of W for a few rows.
  int64_t mc = Max(scratch_floats / Max(k, 1), kStrip);
  const int64_t blocks = (p.m + mc - 1) / mc;
  mc = (p.m + blocks - 1) / blocks;
  MicroArgs a{nullptr, 0, nullptr, nullptr, k, nullptr, p.ldy, 0, n_begin, n_end, p.accumulate};
  for (int64_t mb = 0; mb < p.m; mb += mc) {
    const int64_t rows = Min(p.m, mb + mc) - mb;
    // Strips of near-equal height (<= kStrip): fewer underfilled tail tiles. Strip i covers
    // block rows [i * rows / ns, (i + 1) * rows / ns).
    const int64_t ns = (rows + kStrip - 1) / kStrip;
    for (int64_t i = 0; i < ns; ++i) {
      const int64_t r0 = i * rows / ns, r1 = (i + 1) * rows / ns;
      PackStrip(p.x + (mb + r0) * p.ldx, p.ldx, static_cast<int>(r1 - r0), k, scratch + r0 * k);
    }
    const int64_t p_begin = n_begin / kPairCols;
    int64_t* counter = next_pair != nullptr ? next_pair + mb / mc : nullptr;
    for (;;) {
      int64_t g_begin = p_begin, g_end = p_end;
      if (counter != nullptr) {
        g_begin = p_begin + __atomic_fetch_add(counter, grab, __ATOMIC_RELAXED);
        if (g_begin >= p_end) break;
        g_end = Min(p_end, g_begin + grab);
      }
      for (int64_t pi = g_begin; pi < g_end; ++pi) {
        a.w = w + pi * k * kPairCols;
        a.next = w + (pi + 1 < g_end ? pi + 1 : pi) * k * kPairCols;
        a.col0 = pi * kPairCols;
        for (int64_t i = 0; i < ns; ++i) {
          const int64_t r0 = i * rows / ns, r1 = (i + 1) * rows / ns;
          a.x = scratch + r0 * k;
          a.y = p.y + (mb + r0) * p.ldy + a.col0;
          PickMicro<WT, true, false, kStrip, 1>(static_cast<int>(r1 - r0), 1)(a);
        }
      }
      if (counter == nullptr) break;
    }
  }
}

template <typename WT>
void Run(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end, float* scratch,
         int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  if (p.m <= 3) {
    RunStreamed(p, w, n_begin, n_end);
  } else {
    RunBlocked(p, w, n_begin, n_end, scratch, scratch_floats, next_pair, grab);
  }
}

}  // namespace

void GemmPackedAvx512(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
                      int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  if (p.w->dtype == DType::kBF16) {
    Run(p, static_cast<const uint16_t*>(p.w->packed), n_begin, n_end, scratch, scratch_floats,
        next_pair, grab);
  } else {
    Run(p, static_cast<const float*>(p.w->packed), n_begin, n_end, scratch, scratch_floats,
        next_pair, grab);
  }
}

}  // namespace xlstmd::kernels::cpu
