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

// GCC 12's AVX-512 intrinsics self-initialise their "undefined" vectors (`__m512i __Y = __Y;`),
// which -Wuninitialized then reports at every inlined use; the code is correct.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {
namespace {

constexpr int kLanes = 16;
constexpr int kStreamRows = 8;        // W rows per tile when streaming (M <= 3)
constexpr int kMaxAccumulators = 24;  // zmm accumulators per register tile (of 32 registers)
constexpr int kTileM = 4;             // x rows per register tile
constexpr int kTileN = 6;             // W rows per register tile
constexpr int64_t kPanelMinRows = 16;  // bf16: widen W into an f32 panel from this M on
constexpr int64_t kXBlockBytes = 768 << 10;  // x rows per M block: ~ this much of L2
constexpr int kPrefetchBytes = 1024;         // distance ahead in each streamed W row

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

inline __m512 LoadW(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 LoadW(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline __m512 LoadWMasked(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 LoadWMasked(const uint16_t* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// The canonical tree for one accumulator.
inline float Reduce(__m512 v) {
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

// The same tree for 16 accumulators at once (about a third of the shuffles): lane i of the
// result is bit-identical to Reduce(v[i]). Each level adds the same lane pairs as Reduce;
// the tree leaves output lane 4q+l holding input q+4l, so the inputs go in transposed.
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

struct TileArgs {
  const float* x;  // [mr, k], stride ldx
  int64_t ldx;
  const void* w;   // [nr, k] f32 or bf16, stride ldw
  int64_t ldw;
  int64_t k;
  float* y;        // [mr, nr], stride ldy
  int64_t ldy;
  bool accumulate;
};

// One full 16-wide chunk at kk for every (row, W row) pair.
template <int MR, int NR, typename WT>
inline void Step(__m512 (&c)[MR][NR], const TileArgs& a, const WT* w, int64_t kk) {
  __m512 xv[MR];
  for (int r = 0; r < MR; ++r) xv[r] = _mm512_loadu_ps(a.x + r * a.ldx + kk);
  for (int j = 0; j < NR; ++j) {
    const __m512 wv = LoadW(w + j * a.ldw + kk);
    for (int r = 0; r < MR; ++r) c[r][j] = _mm512_fmadd_ps(xv[r], wv, c[r][j]);
  }
}

// Reduces the tile and writes (or adds) it to y. Big tiles reduce 16 accumulators at a time
// with Reduce16, small ones one by one with Reduce: same bits either way, so the choice is
// free to follow cost.
template <int MR, int NR>
inline void Store(__m512 (&c)[MR][NR], const TileArgs& a) {
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
    for (int i = 0; i < MR * NR; ++i) s[i] = Reduce(c[i / NR][i % NR]);
  }
  for (int r = 0; r < MR; ++r) {
    float* y = a.y + r * a.ldy;
    for (int j = 0; j < NR; ++j) y[j] = a.accumulate ? y[j] + s[r * NR + j] : s[r * NR + j];
  }
}

// MR x-rows times NR W-rows over all of k. kPrefetch: W comes from DRAM, fetch ahead.
template <int MR, int NR, typename WT, bool kPrefetch>
void Tile(const TileArgs& a) {
  const WT* w = static_cast<const WT*>(a.w);
  __m512 c[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < NR; ++j) c[r][j] = _mm512_setzero_ps();
  }
  int64_t kk = 0;
  if constexpr (kPrefetch) {
    // Two chunks per iteration so that each prefetch covers whole cache lines.
    constexpr int kBytes = 2 * kLanes * static_cast<int>(sizeof(WT));
    for (; kk + 2 * kLanes <= a.k; kk += 2 * kLanes) {
      for (int j = 0; j < NR; ++j) {
        const char* p = reinterpret_cast<const char*>(w + j * a.ldw + kk) + kPrefetchBytes;
        for (int off = 0; off < kBytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
      }
      Step<MR, NR, WT>(c, a, w, kk);
      Step<MR, NR, WT>(c, a, w, kk + kLanes);
    }
  }
  for (; kk + kLanes <= a.k; kk += kLanes) Step<MR, NR, WT>(c, a, w, kk);
  if (kk < a.k) {
    const __mmask16 m = static_cast<__mmask16>((1u << (a.k - kk)) - 1u);
    __m512 xv[MR];
    for (int r = 0; r < MR; ++r) xv[r] = _mm512_maskz_loadu_ps(m, a.x + r * a.ldx + kk);
    for (int j = 0; j < NR; ++j) {
      const __m512 wv = LoadWMasked(w + j * a.ldw + kk, m);
      for (int r = 0; r < MR; ++r) c[r][j] = _mm512_fmadd_ps(xv[r], wv, c[r][j]);
    }
  }
  Store<MR, NR>(c, a);
}

using TileFn = void (*)(const TileArgs&);

// Tile<mr, nr> for run-time mr in [1, 4], nr in [1, 8] with mr * nr <= kMaxAccumulators
// (more would spill; such shapes are never requested).
template <typename WT, bool kPrefetch, int MR = 1, int NR = 1>
TileFn PickTile(int mr, int nr) {
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
  TileArgs a{p.x, p.ldx, nullptr, p.w->ld, p.w->cols, nullptr, p.ldy, p.accumulate};
  const int mr = static_cast<int>(p.m);
  for (int64_t n = n_begin; n < n_end; n += kStreamRows) {
    const int nr = static_cast<int>(Min(kStreamRows, n_end - n));
    a.w = w + n * p.w->ld;
    a.y = p.y + n;
    PickTile<WT, true>(mr, nr)(a);
  }
}

// Widens W rows [n, n + nr) into an f32 panel with stride kp = round_up(k, 16), zero-padded.
void WidenPanel(const uint16_t* w, int64_t ldw, int nr, int64_t k, float* panel) {
  const int64_t kp = (k + kLanes - 1) / kLanes * kLanes;
  for (int j = 0; j < nr; ++j) {
    const uint16_t* src = w + j * ldw;
    float* dst = panel + j * kp;
    int64_t kk = 0;
    for (; kk + kLanes <= k; kk += kLanes) _mm512_store_ps(dst + kk, LoadW(src + kk));
    if (kk < k) {
      const __mmask16 m = static_cast<__mmask16>((1u << (k - kk)) - 1u);
      _mm512_store_ps(dst + kk, LoadWMasked(src + kk, m));
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
  const int64_t k = p.w->cols, ldw = p.w->ld;
  const bool panel = sizeof(WT) == 2 && p.m >= kPanelMinRows;
  const bool prefetch = p.m < kPanelMinRows;  // few rows: still bound by streaming W
  const int64_t kp = (k + kLanes - 1) / kLanes * kLanes;
  int64_t mc = kXBlockBytes / (4 * (k > 0 ? k : 1)) / kTileM * kTileM;
  mc = mc < kTileM ? kTileM : mc;
  for (int64_t mb = 0; mb < p.m; mb += mc) {
    const int64_t me = Min(p.m, mb + mc);
    for (int64_t n = n_begin; n < n_end; n += kTileN) {
      const int nr = static_cast<int>(Min(kTileN, n_end - n));
      TileArgs a{nullptr, p.ldx, w + n * ldw, ldw, k, nullptr, p.ldy, p.accumulate};
      if (panel) {
        WidenPanel(reinterpret_cast<const uint16_t*>(w + n * ldw), ldw, nr, k, scratch);
        a.w = scratch;
        a.ldw = kp;
      }
      for (int64_t m = mb; m < me; m += kTileM) {
        const int mr = static_cast<int>(Min(kTileM, me - m));
        a.x = p.x + m * p.ldx;
        a.y = p.y + m * p.ldy + n;
        TileFn fn = panel      ? PickTile<float, false>(mr, nr)
                    : prefetch ? PickTile<WT, true>(mr, nr)
                               : PickTile<WT, false>(mr, nr);
        fn(a);
      }
    }
  }
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
  if (p.w->dtype == DType::kBF16) {
    Run(p, static_cast<const uint16_t*>(p.w->data), n_begin, n_end, scratch);
  } else {
    Run(p, static_cast<const float*>(p.w->data), n_begin, n_end, scratch);
  }
}

}  // namespace xlstmd::kernels::cpu
