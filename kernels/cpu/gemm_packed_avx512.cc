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

#include "kernels/cpu/simd.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {
namespace {

constexpr int kPairCols = 32;
constexpr int kStrip = 12;       // x rows per register tile on the blocked path
constexpr int kStreamPairs = 4;  // W pairs per register tile on the streamed path
constexpr int kPrefetchK = 24;   // streamed path: prefetch this many k steps ahead

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

// Streamed path (M <= 3).
struct MicroArgs {
  const float* x;  // MR rows with stride ldx
  int64_t ldx;
  const void* w;   // first pair of the tile
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

// Finishes an MR-row register tile into y (y0 = its first row at column col0): accumulator
// column block j holds output columns [col0 + 16 j, col0 + 16 j + 16), of which those in
// [n_lo, n_hi) are written (or added to y when `accumulate`); padding columns never are.
template <int MR, int NC>
inline void StoreTile(const __m512 (&c)[MR][NC], float* y0, int64_t ldy, int64_t col0, int64_t n_lo,
                      int64_t n_hi, bool accumulate) {
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
  StoreTile(c, a.y, a.ldy, a.col0, a.n_lo, a.n_hi, a.accumulate);
}

using MicroFn = void (*)(const MicroArgs&);

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

// Decode: up to 3 x rows against kStreamPairs W pairs at a time, W read exactly once.
template <typename WT>
void RunStreamed(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end) {
  const int64_t k = p.w->cols;
  const int64_t p_end = (n_end + kPairCols - 1) / kPairCols;
  MicroArgs a{p.x, p.ldx, nullptr, k, nullptr, p.ldy, 0, n_begin, n_end, p.accumulate};
  const int mr = static_cast<int>(p.m);
  for (int64_t pi = n_begin / kPairCols; pi < p_end; pi += kStreamPairs) {
    const int np = static_cast<int>(Min(kStreamPairs, p_end - pi));
    a.w = w + pi * k * kPairCols;
    a.col0 = pi * kPairCols;
    a.y = p.y + a.col0;
    PickMicro<WT, 3, kStreamPairs>(mr, np)(a);
  }
}

// Copies x rows [0, mr) (mr <= 16) into a [k][mr] strip: per k, one gather of the mr
// values (lane r at x + r * ldx + kk) and one masked store, ~4x faster than the scalar
// transpose it replaces, which was ~3% of a batch-64 decode step (both threads pack every
// x block they use). Scalar when the row offsets do not fit the gather's 32-bit indices.
void PackStrip(const float* x, int64_t ldx, int mr, int64_t k, float* dst) {
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

// --- Blocked path (M >= 4) --------------------------------------------------------------------
// Per W pair, K is cut into kKc-step blocks. Each block's sub-panel is widened once into an
// f32 [kc][32] buffer (bf16; f32 pairs are read in place) that stays in L1 while every x strip
// of the M block runs over it; a strip's 24 accumulators are parked in a small per-strip
// buffer between K blocks. Compared with running each strip over the whole pair (the W pair
// and the x strip both streamed from L2 for every strip, and the bf16 widening redone per
// strip): the FMA ports do only FMAs, and the W operand is an L1 hit. Parking and reloading
// an f32 accumulator is exact, so each element is still the single chain over k = 0..K-1
// from +0 described at the top, bit for bit the same as the streamed path.

// K steps per block: the f32 sub-panel (kKc * 128 B = 16 KiB) stays in L1 (48 KiB) next to
// the strip slice being read (~6 KiB); the other strips' slices (32 KiB at 64 rows) come
// from L2 as a sequential stream. 64 and 256 measured the same at M = 64; 128 keeps the
// parked-accumulator traffic (a 24-register store + reload per strip per block) near 1%.
constexpr int64_t kKc = 128;

struct PanelArgs {
  const float* x;     // strip slice [kc][MR]
  const float* w;     // f32 sub-panel, row kk at w + kk * kPairCols
  int64_t kc;
  float* part;        // [MR][32] accumulators parked between K blocks
  bool first;         // K block 0: chains start from +0
  bool last;          // last K block: finish into y
  const char* pf;     // kPf: lines [pf, pf_end) to pull into L2, one every pf_every k steps
  const char* pf_end;
  int64_t pf_every;
  float* y;           // y of the strip's first row at the pair's column 0
  int64_t ldy;
  int64_t col0, n_lo, n_hi;
  bool accumulate;
};

template <int MR, bool kPf>
void PanelMicro(const PanelArgs& a) {
  __m512 c[MR][2];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    if (a.first) {
      c[r][0] = _mm512_setzero_ps();
      c[r][1] = _mm512_setzero_ps();
    } else {
      c[r][0] = _mm512_load_ps(a.part + r * kPairCols);
      c[r][1] = _mm512_load_ps(a.part + r * kPairCols + 16);
    }
  }
  const float* xp = a.x;
  const float* wp = a.w;
  const char* pf = a.pf;
  int64_t pf_countdown = 1;
  for (int64_t kk = 0; kk < a.kc; ++kk) {
    if constexpr (kPf) {
      if (--pf_countdown == 0 && pf < a.pf_end) {
        _mm_prefetch(pf, _MM_HINT_T1);
        pf += 64;
        pf_countdown = a.pf_every;
      }
    }
    // Unaligned loads: an f32 pair read in place need not be 64-byte aligned (it is when the
    // backend allocated it; the cost is nil when it is).
    const __m512 w0 = _mm512_loadu_ps(wp);
    const __m512 w1 = _mm512_loadu_ps(wp + 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 xb = _mm512_set1_ps(xp[r]);
      c[r][0] = _mm512_fmadd_ps(xb, w0, c[r][0]);
      c[r][1] = _mm512_fmadd_ps(xb, w1, c[r][1]);
    }
    xp += MR;
    wp += kPairCols;
  }
  if (!a.last) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      _mm512_store_ps(a.part + r * kPairCols, c[r][0]);
      _mm512_store_ps(a.part + r * kPairCols + 16, c[r][1]);
    }
    return;
  }
  StoreTile(c, a.y, a.ldy, a.col0, a.n_lo, a.n_hi, a.accumulate);
}

using PanelFn = void (*)(const PanelArgs&);

template <bool kPf, int MR = 1>
PanelFn PickPanel(int mr) {
  if (mr == MR) return &PanelMicro<MR, kPf>;
  if constexpr (MR < kStrip) return PickPanel<kPf, MR + 1>(mr);
  return nullptr;
}

// The f32 sub-panel of pair rows [k0, k0 + kc): bf16 widened into `buf`; f32 read in place.
inline const float* Panel(const uint16_t* pair, int64_t k0, int64_t kc, float* buf) {
  const uint16_t* src = pair + k0 * kPairCols;
  for (int64_t kk = 0; kk < kc; ++kk) {
    __m512 lo, hi;
    LoadPair(src + kk * kPairCols, lo, hi);
    _mm512_store_ps(buf + kk * kPairCols, lo);
    _mm512_store_ps(buf + kk * kPairCols + 16, hi);
  }
  return buf;
}
inline const float* Panel(const float* pair, int64_t k0, int64_t, float*) {
  return pair + k0 * kPairCols;
}

int64_t PanelFloats() { return kKc * kPairCols; }

// Prefill / batched decode: x blocks that fit the scratch (L2-sized), packed into strips;
// each W pair of the range is then multiplied with every strip of the block, K block by K
// block (see kKc above).
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
  // Scratch: [panel][x block][parked tiles]. Rows per M block: as many as the rest holds
  // (each row costs k floats of x plus, per strip of <= kStrip rows, a parked 12 x 32 tile),
  // then evened out over the blocks so the last one is not a sliver that re-streams all of
  // W for a few rows.
  float* panel_buf = scratch;
  float* xblock = scratch + PanelFloats();
  const int64_t avail = scratch_floats - PanelFloats();
  int64_t mc = Max(avail / (Max(k, 1) + kPairCols + kPairCols), kStrip);
  const int64_t blocks = (p.m + mc - 1) / mc;
  mc = (p.m + blocks - 1) / blocks;
  // Parked tiles after the x block, 64-byte aligned.
  float* parked = xblock + (mc * k + 15) / 16 * 16;
  const int64_t wbytes_per_k = kPairCols * static_cast<int64_t>(sizeof(WT));
  const int64_t p_begin = n_begin / kPairCols;
  PanelArgs a{};
  a.ldy = p.ldy;
  a.n_lo = n_begin;
  a.n_hi = n_end;
  a.accumulate = p.accumulate;
  for (int64_t mb = 0; mb < p.m; mb += mc) {
    const int64_t rows = Min(p.m, mb + mc) - mb;
    // Strips of near-equal height (<= kStrip): fewer underfilled tail tiles. Strip i covers
    // block rows [i * rows / ns, (i + 1) * rows / ns).
    const int64_t ns = (rows + kStrip - 1) / kStrip;
    for (int64_t i = 0; i < ns; ++i) {
      const int64_t r0 = i * rows / ns, r1 = (i + 1) * rows / ns;
      PackStrip(p.x + (mb + r0) * p.ldx, p.ldx, static_cast<int>(r1 - r0), k, xblock + r0 * k);
    }
    int64_t* counter = next_pair != nullptr ? next_pair + mb / mc : nullptr;
    for (;;) {
      int64_t g_begin = p_begin, g_end = p_end;
      if (counter != nullptr) {
        g_begin = p_begin + __atomic_fetch_add(counter, grab, __ATOMIC_RELAXED);
        if (g_begin >= p_end) break;
        g_end = Min(p_end, g_begin + grab);
      }
      const char* stream_end = reinterpret_cast<const char*>(w + g_end * k * kPairCols);
      for (int64_t pi = g_begin; pi < g_end; ++pi) {
        const WT* pair = w + pi * k * kPairCols;
        a.col0 = pi * kPairCols;
        // k == 0 still runs one (empty) block, which writes y = 0 or leaves y.
        for (int64_t k0 = 0; k0 == 0 || k0 < k; k0 += kKc) {
          const int64_t kc = Min(kKc, k - k0);
          a.w = Panel(pair, k0, kc, panel_buf);
          a.kc = kc;
          a.first = k0 == 0;
          a.last = k0 + kc >= k;
          // While the strips compute, the W rows widened next (this pair's next K block,
          // else the next pair's first) are pulled into L2, so the widening finds them
          // there instead of waiting on DRAM. The lines are spread evenly over all strips'
          // k steps: issued in a burst (one per k step, by one strip), they outran the
          // line fill buffers at DRAM latency and stalled that strip's FMAs (measured: the
          // prefetching strip ran ~1.8x slower than the others). The claimed pairs are
          // adjacent in memory, so "next" simply continues the stream.
          const char* pf = reinterpret_cast<const char*>(pair + (k0 + kc) * kPairCols);
          const int64_t pf_lines =
              Max(0, Min(kKc * wbytes_per_k, stream_end - pf)) / 64;
          for (int64_t i = 0; i < ns; ++i) {
            const int64_t r0 = i * rows / ns, r1 = (i + 1) * rows / ns;
            const int mr = static_cast<int>(r1 - r0);
            a.x = xblock + r0 * k + k0 * mr;
            a.part = parked + i * kStrip * kPairCols;
            a.y = p.y + (mb + r0) * p.ldy + a.col0;
            // Strip i's share: lines [i * L / ns, (i + 1) * L / ns).
            const int64_t l0 = i * pf_lines / ns, l1 = (i + 1) * pf_lines / ns;
            if (l1 > l0) {
              a.pf = pf + l0 * 64;
              a.pf_end = pf + l1 * 64;
              a.pf_every = Max(1, kc / (l1 - l0));
              PickPanel<true>(mr)(a);
            } else {
              PickPanel<false>(mr)(a);
            }
          }
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

int64_t GemmPackedMinScratchFloats(int64_t k) {
  // The panel, then room for one strip-height M block: kStrip rows of x plus their
  // parked tile (and alignment slack).
  return PanelFloats() + kStrip * (Max(k, 1) + 2 * kPairCols) + 16;
}

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
