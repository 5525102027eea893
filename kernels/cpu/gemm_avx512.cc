// AVX-512 GEMM kernels: y[m, n] = (acc ? y : 0) + sum_k x[m, k] * W[n, k], W f32 or bf16.
//
// Per output element the arithmetic is fixed by k alone: one 16-lane f32 accumulator, lane l
// gathering k = l, l+16, ... by FMA in increasing k; the last partial chunk is loaded with a
// mask (x and W lanes past k read as 0); then the tree s8[i] = v[i] + v[i+8], s4, s2, s1.
// Every tile shape and code path below (streamed, direct, f32 panel) performs exactly these
// operations, so results are batch invariant (gemm.cc explains why that matters).
//
// Paths: M <= 3 streams W (several rows at once plus software prefetch, the decode case bound
// by DRAM bandwidth); larger M runs 4 x-rows x 6 W-rows register tiles over L2-sized blocks of
// x rows. For bf16 W and M >= kPanelMinRows each 6-row W tile is first widened into an f32
// panel (exact), so the hot loop does loads and FMAs only.
//
// This file is compiled with AVX-512 flags and only entered after run-time dispatch: apart
// from the entry point everything is in an anonymous namespace, and no std templates or
// inline functions with external linkage are used (the linker could otherwise hand an
// AVX-512 copy to a caller on another CPU).

#include <cstdint>

#include "kernels/cpu/simd.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {
namespace {

using S = Avx512Vec;
constexpr int kLanes = S::kLanes;
constexpr int kStreamRows = 8;        // W rows per tile when streaming (M <= 3)
constexpr int kMaxAccumulators = 24;  // zmm accumulators per register tile (of 32 registers)
constexpr int kTileM = 4;             // x rows per register tile
constexpr int kTileN = 6;             // W rows per register tile
constexpr int64_t kPanelMinRows = 16;  // bf16: widen W into an f32 panel from this M on
constexpr int64_t kXBlockBytes = 768 << 10;  // x rows per M block: ~ this much of L2
constexpr int kPrefetchBytes = 1024;         // distance ahead in each streamed W row

// The canonical tree (simd.h HorizontalSum) for 16 accumulators at once (about a third of the
// shuffles): lane i of the result is bit-identical to HorizontalSum(v[i]). Each level adds the
// same lane pairs as HorizontalSum; the tree leaves output lane 4q+l holding input q+4l, so the
// inputs go in transposed.
inline __m512 Reduce16(const __m512* v) {
  static constexpr int kOrder[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
  __m512 s8[8], s4[4], s2[2];
  for (int i = 0; i < 8; ++i) {
    const __m512 a = v[kOrder[2 * i]], b = v[kOrder[2 * i + 1]];
    s8[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  }
  for (int i = 0; i < 4; ++i) {
    const __m512 a = s8[2 * i], b = s8[2 * i + 1];
    s4[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
  }
  for (int i = 0; i < 2; ++i) {
    const __m512 a = s4[2 * i], b = s4[2 * i + 1];
    s2[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x44), _mm512_shuffle_ps(a, b, 0xEE));
  }
  return _mm512_add_ps(_mm512_shuffle_ps(s2[0], s2[1], 0x88),
                       _mm512_shuffle_ps(s2[0], s2[1], 0xDD));
}

// Reduces the tile and writes (or adds) it to y. Big tiles reduce 16 accumulators at a time
// with Reduce16, small ones one by one with HorizontalSum: same bits either way, so the choice
// is free to follow cost.
template <int MR, int NR>
inline void Store(__m512 (&c)[MR][NR], const GemmTileArgs& a) {
  alignas(64) float s[MR * NR];
  if constexpr (MR * NR >= 12) {
    __m512 v[16];
    for (int g = 0; g < MR * NR; g += 16) {
      for (int i = 0; i < 16; ++i) {
        v[i] = g + i < MR * NR ? c[(g + i) / NR][(g + i) % NR] : _mm512_setzero_ps();
      }
      alignas(64) float sums[16];
      _mm512_store_ps(sums, Reduce16(v));
      for (int i = 0; i < 16 && g + i < MR * NR; ++i) s[g + i] = sums[i];
    }
  } else {
    for (int i = 0; i < MR * NR; ++i) s[i] = HorizontalSum(c[i / NR][i % NR]);
  }
  for (int r = 0; r < MR; ++r) {
    float* y = a.y + r * a.ldy;
    for (int j = 0; j < NR; ++j) y[j] = a.accumulate ? y[j] + s[r * NR + j] : s[r * NR + j];
  }
}

// MR x-rows times NR W-rows over all of k. kPrefetch: W comes from DRAM, fetch ahead.
template <int MR, int NR, typename WT, bool kPrefetch>
void Tile(const GemmTileArgs& a) {
  __m512 c[MR][NR];
  GemmAccumulate<S, MR, NR, WT, kPrefetch>(c, a, kPrefetchBytes);
  Store<MR, NR>(c, a);
}

// Tile<mr, nr> for run-time mr in [1, 4], nr in [1, 8] with mr * nr <= kMaxAccumulators
// (more would spill; such shapes are never requested).
template <typename WT, bool kPrefetch, int MR = 1, int NR = 1>
GemmTileFn PickTile(int mr, int nr) {
  if constexpr (MR * NR <= kMaxAccumulators) {
    if (mr == MR && nr == NR) return &Tile<MR, NR, WT, kPrefetch>;
  }
  if constexpr (NR < kStreamRows) {
    if (mr == MR) return PickTile<WT, kPrefetch, MR, NR + 1>(mr, nr);
  }
  if constexpr (MR < kTileM) return PickTile<WT, kPrefetch, MR + 1, 1>(mr, nr);
  return nullptr;
}

// Decode: up to 3 x rows against kStreamRows W rows at a time, W read exactly once.
template <typename WT>
void RunStreamed(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end) {
  RunStreamedGemmTiles(p, w, n_begin, n_end, static_cast<int>(p.m), kStreamRows,
                       [](int mr, int nr) { return PickTile<WT, true>(mr, nr); });
}

// Widens W rows [n, n + nr) into an f32 panel with stride kp = round_up(k, 16), zero-padded.
void WidenPanel(const uint16_t* w, int64_t ldw, int nr, int64_t k, float* panel) {
  const int64_t kp = (k + kLanes - 1) / kLanes * kLanes;
  for (int j = 0; j < nr; ++j) {
    const uint16_t* src = w + j * ldw;
    float* dst = panel + j * kp;
    int64_t kk = 0;
    for (; kk + kLanes <= k; kk += kLanes) _mm512_store_ps(dst + kk, S::Load(src + kk));
    if (kk < k) {
      _mm512_store_ps(dst + kk, S::Load(src + kk, TailMask(k - kk)));
    }
  }
}

// Prefill / batched decode: M blocks sized to stay in L2; per block, each 6-row W tile is
// visited once and multiplied with every 4-row x tile of the block. Below kPanelMinRows the W
// tile is mostly a stream from L3/DRAM (measured: widening bf16 in registers is faster there
// than a panel used by only 1-3 x tiles).
template <typename WT>
void RunBlocked(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end,
                float* scratch) {
  const bool panel = sizeof(WT) == 2 && p.m >= kPanelMinRows;
  const bool prefetch = p.m < kPanelMinRows;  // few rows: still bound by streaming W
  const int64_t k = CpuMat(p.w)->cols, kp = (k + kLanes - 1) / kLanes * kLanes;
  RunBlockedGemmTiles(
      p, w, n_begin, n_end, kTileM, kTileN, kXBlockBytes,
      [&](GemmTileArgs& a, int nr) {
        if (!panel) return;
        WidenPanel(static_cast<const uint16_t*>(a.w), a.ldw, nr, k, scratch);
        a.w = scratch;
        a.ldw = kp;
      },
      [&](int mr, int nr) {
        return panel      ? PickTile<float, false>(mr, nr)
               : prefetch ? PickTile<WT, true>(mr, nr)
                          : PickTile<WT, false>(mr, nr);
      });
}

template <typename WT>
void Run(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end, float* scratch) {
  if (p.m < kTileM) {
    RunStreamed(p, w, n_begin, n_end);
  } else {
    RunBlocked(p, w, n_begin, n_end, scratch);
  }
}

}  // namespace

void GemmAvx512(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch) {
  WithWeightType(*CpuMat(p.w), CpuMat(p.w)->data, [&](const auto* w) { Run(p, w, n_begin, n_end, scratch); });
}

}  // namespace xlstmd::kernels::cpu
