// The ISA-independent half of the packed-layout GEMM (PackGemmWeights in gemm.cc): how a call
// is cut into register tiles, K blocks, x strips and claimed W pairs. gemm_packed_avx512.cc
// and gemm_packed_avx2.cc supply the register tiles through a tag type K with
//   K::kStrip, K::Vec                 x rows per blocked strip; simd.h Avx2Vec / Avx512Vec
//   K::StreamPairs(mr)                W pairs per streamed tile for mr (<= 3) x rows
// and free functions taking a K first, found by argument-dependent lookup:
//   PickMicro(K, (const WT*)0, mr, np)  the streamed tile for mr rows x np pairs
//   PackStrip(K, x, ldx, mr, k, dst)    x rows [0, mr) into a [k][mr] strip
//   Panel(K, pair, k0, kc, buf)         the f32 [kc][32] sub-panel of a pair's K block
//   RunPanel(K, args, mr, prefetch)     one strip over one sub-panel (all 32 columns), made of
//                                       PanelMicro<K, MR> tiles (below), which end in
//   StoreTile(K, c, y, ldy, col0, lo, hi, acc)  a finished MR x 2-vector tile into y
// Every tile computes each output element as one FMA chain over k = 0..K-1 in order from +0
// (then y = c or y = y + c), so no choice made here changes any element's arithmetic.
//
// Included only by ISA files after simd.h (internal linkage throughout; see simd.h).
#ifndef XLSTMD_KERNELS_CPU_GEMM_PACKED_DRIVER_H_
#define XLSTMD_KERNELS_CPU_GEMM_PACKED_DRIVER_H_

#include "kernels/cpu/simd.h"

namespace xlstmd::kernels::cpu {
namespace {

constexpr int kPairCols = 32;   // W rows (output columns) per packed pair
constexpr int kPrefetchK = 24;  // streamed path: prefetch this many k steps ahead

// K steps per blocked sub-panel: the f32 sub-panel (kKc * 128 B = 16 KiB) stays in L1 next to
// the strip slice being read; the other strips' slices come from L2 as a sequential stream.
// 64 and 256 measured the same at M = 64 (AVX-512); 128 keeps the parked-accumulator traffic
// (a tile store + reload per strip per block) near 1%.
constexpr int64_t kKc = 128;

inline int64_t PanelFloats() { return kKc * kPairCols; }

// Streamed path (M <= 3): one register tile of MR rows x NP pairs.
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
using MicroFn = void (*)(const MicroArgs&);

// Blocked path (M >= 4): one strip over one K block of one pair.
struct PanelArgs {
  const float* x;     // strip slice [kc][MR]
  const float* w;     // f32 sub-panel, row kk at w + kk * kPairCols
  int64_t kc;
  float* part;        // [MR][32] accumulators parked between K blocks (row stride kPairCols)
  bool first;         // K block 0: chains start from +0
  bool last;          // last K block: finish into y
  const char* pf;     // prefetch: lines [pf, pf_end) to pull into L2, one every pf_every k steps
  const char* pf_end;
  int64_t pf_every;
  float* y;           // y of the strip's first row at column col0
  int64_t ldy;
  int64_t col0, n_lo, n_hi;
  bool accumulate;
};

// One strip over one sub-panel: an MR x (2 * kLanes) register tile over kc steps of k, per
// step two W loads from the L1-resident sub-panel, MR broadcasts and 2 MR FMAs; the tile's
// accumulators are parked in `part` between K blocks (an exact f32 store and reload).
template <typename K, int MR, bool kPf>
void PanelMicro(const PanelArgs& a) {
  using S = typename K::Vec;
  typename S::V c[MR][2];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    c[r][0] = a.first ? S::Zero() : S::Load(a.part + r * kPairCols);
    c[r][1] = a.first ? S::Zero() : S::Load(a.part + r * kPairCols + S::kLanes);
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
    const typename S::V w0 = S::Load(wp);
    const typename S::V w1 = S::Load(wp + S::kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const typename S::V xb = S::Broadcast(xp + r);
      c[r][0] = S::Fma(xb, w0, c[r][0]);
      c[r][1] = S::Fma(xb, w1, c[r][1]);
    }
    xp += MR;
    wp += kPairCols;
  }
  if (!a.last) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      S::Store(a.part + r * kPairCols, c[r][0]);
      S::Store(a.part + r * kPairCols + S::kLanes, c[r][1]);
    }
    return;
  }
  StoreTile(K{}, c, a.y, a.ldy, a.col0, a.n_lo, a.n_hi, a.accumulate);
}

using PanelFn = void (*)(const PanelArgs&);

// PanelMicro<K, mr> for a run-time mr in [1, K::kStrip].
template <typename K, bool kPf, int MR = 1>
PanelFn PickPanel(int mr) {
  if (mr == MR) return &PanelMicro<K, MR, kPf>;
  if constexpr (MR < K::kStrip) return PickPanel<K, kPf, MR + 1>(mr);
  return nullptr;
}

// Decode: up to 3 x rows against K::StreamPairs(mr) W pairs at a time, W read exactly once.
template <typename K, typename WT>
void RunStreamed(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end) {
  const int64_t k = CpuMat(p.w)->cols;
  const int64_t p_end = (n_end + kPairCols - 1) / kPairCols;
  MicroArgs a{p.x, p.ldx, nullptr, k, nullptr, p.ldy, 0, n_begin, n_end, p.accumulate};
  const int mr = static_cast<int>(p.m);
  const int64_t step = K::StreamPairs(mr);
  for (int64_t pi = n_begin / kPairCols; pi < p_end; pi += step) {
    const int np = static_cast<int>(Min(step, p_end - pi));
    a.w = w + pi * k * kPairCols;
    a.col0 = pi * kPairCols;
    a.y = p.y + a.col0;
    PickMicro(K{}, w, mr, np)(a);
  }
}

// One M block's strips over one K block of one pair: the strips of near-equal height
// (<= kStrip; strip i covers block rows [i * rows / ns, (i + 1) * rows / ns)), each taking its
// share of the prefetch stream (lines [i * L / ns, (i + 1) * L / ns)): issued in one burst by
// one strip, the lines outran the line fill buffers at DRAM latency and stalled that strip's
// FMAs (measured on AVX-512: the prefetching strip ran ~1.8x slower than the others).
template <typename K>
void RunStrips(PanelArgs a, const float* xblock, float* parked, int64_t k, int64_t k0,
               int64_t rows, const char* pf, int64_t pf_lines, float* y_block, int64_t ldy) {
  const int64_t ns = (rows + K::kStrip - 1) / K::kStrip;
  for (int64_t i = 0; i < ns; ++i) {
    const int64_t r0 = i * rows / ns, r1 = (i + 1) * rows / ns;
    const int mr = static_cast<int>(r1 - r0);
    a.x = xblock + r0 * k + k0 * mr;
    a.part = parked + i * K::kStrip * kPairCols;
    a.y = y_block + r0 * ldy + a.col0;
    const int64_t l0 = i * pf_lines / ns, l1 = (i + 1) * pf_lines / ns;
    if (l1 > l0) {
      a.pf = pf + l0 * 64;
      a.pf_end = pf + l1 * 64;
      a.pf_every = Max(1, a.kc / (l1 - l0));
    }
    RunPanel(K{}, a, mr, l1 > l0);
  }
}

// Prefill / batched decode: x blocks that fit the scratch (L2-sized), packed into strips; each
// W pair of the range is multiplied with every strip of the block, K block by K block: each
// block's sub-panel is widened once (bf16; f32 pairs are read in place) and stays in L1 while
// every strip runs over it, the strips' accumulators parked between K blocks (parking an f32
// accumulator is exact, so each element is still the single chain over k).
//
// With `next_pair` set, the W pairs of [n_begin, n_end) are not all taken by this thread:
// every thread of the call packs the same x block, then claims `grab` pairs at a time from the
// block's shared counter next_pair[block] until none are left. Which thread computes a column
// never changes its arithmetic; it only keeps a thread that a noisy neighbour slowed down from
// holding up the whole op (a static split waits for the slowest half).
template <typename K, typename WT>
void RunBlocked(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end,
                float* scratch, int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  const int64_t k = CpuMat(p.w)->cols;
  const int64_t p_end = (n_end + kPairCols - 1) / kPairCols;
  // Scratch: [panel][x block][parked tiles]. Rows per M block: as many as the rest holds (each
  // row costs k floats of x plus its share of a parked tile), evened out over the blocks so the
  // last one is not a sliver that re-streams all of W for a few rows.
  float* panel_buf = scratch;
  float* xblock = scratch + PanelFloats();
  const int64_t avail = scratch_floats - PanelFloats();
  int64_t mc = Max(avail / (Max(k, 1) + kPairCols + kPairCols), K::kStrip);
  const int64_t blocks = (p.m + mc - 1) / mc;
  mc = (p.m + blocks - 1) / blocks;
  float* parked = xblock + (mc * k + 15) / 16 * 16;  // after the x block, 64-byte aligned
  const int64_t wbytes_per_k = kPairCols * static_cast<int64_t>(sizeof(WT));
  const int64_t p_begin = n_begin / kPairCols;
  PanelArgs a{};
  a.ldy = p.ldy;
  a.n_lo = n_begin;
  a.n_hi = n_end;
  a.accumulate = p.accumulate;
  for (int64_t mb = 0; mb < p.m; mb += mc) {
    const int64_t rows = Min(p.m, mb + mc) - mb;
    const int64_t ns = (rows + K::kStrip - 1) / K::kStrip;
    for (int64_t i = 0; i < ns; ++i) {
      const int64_t r0 = i * rows / ns, r1 = (i + 1) * rows / ns;
      PackStrip(K{}, p.x + (mb + r0) * p.ldx, p.ldx, static_cast<int>(r1 - r0), k,
                xblock + r0 * k);
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
          a.w = Panel(K{}, pair, k0, kc, panel_buf);
          a.kc = kc;
          a.first = k0 == 0;
          a.last = k0 + kc >= k;
          // The W rows widened next (this pair's next K block, else the next claimed pair's
          // first: claimed pairs are adjacent) are pulled into L2 while the strips compute.
          const char* pf = reinterpret_cast<const char*>(pair + (k0 + kc) * kPairCols);
          const int64_t pf_lines = Max(0, Min(kKc * wbytes_per_k, stream_end - pf)) / 64;
          RunStrips<K>(a, xblock, parked, k, k0, rows, pf, pf_lines, p.y + mb * p.ldy, p.ldy);
        }
      }
      if (counter == nullptr) break;
    }
  }
}

// The whole packed GEMM for policy K on y[:, n_begin:n_end).
template <typename K>
void RunPacked(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
               int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  WithWeightType(*CpuMat(p.w), CpuMat(p.w)->packed, [&](const auto* w) {
    if (p.m <= 3) {
      RunStreamed<K>(p, w, n_begin, n_end);
    } else {
      RunBlocked<K>(p, w, n_begin, n_end, scratch, scratch_floats, next_pair, grab);
    }
  });
}

// The least scratch RunPacked works with for reduction length k: the panel, then room for one
// strip-height M block (kStrip rows of x plus their parked tile, and alignment slack).
template <typename K>
int64_t PackedMinScratchFloats(int64_t k) {
  return PanelFloats() + K::kStrip * (Max(k, 1) + 2 * kPairCols) + 16;
}

}  // namespace
}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_GEMM_PACKED_DRIVER_H_
