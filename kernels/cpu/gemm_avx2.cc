// AVX2 + FMA GEMM kernels for CPUs without AVX-512 (and for CI forcing that fallback).
//
// Per output element the arithmetic depends on k alone: one 8-lane f32 accumulator, lane l
// gathering k = l, l+8, ... by FMA in increasing k; the last partial chunk reads x and W lanes
// past k as 0; then the tree s4[i] = v[i] + v[i+4], s2, s1. Every tile shape does exactly
// this, so results are batch invariant. With 16 ymm registers the tiles are 1 x-row x 8 W-rows
// (M = 1, streaming W from DRAM with prefetch) and 2 x-rows x 4 W-rows otherwise.
//
// Compiled with -mavx2 -mfma and entered only after run-time dispatch: apart from the entry
// point everything is in an anonymous namespace, and no std templates or inline functions with
// external linkage are used (the linker could hand an AVX2 copy to a caller on another CPU).
#include <immintrin.h>

#include <cstdint>

#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {
namespace {

constexpr int kLanes = 8;
constexpr int kStreamRows = 8;
constexpr int kTileM = 2;
constexpr int kTileN = 4;
constexpr int64_t kXBlockBytes = 768 << 10;
constexpr int kPrefetchBytes = 1024;

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

inline __m256 LoadW(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 LoadW(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Lanes [0, n) of a partial chunk; the rest read as 0. `mask` has lanes [0, n) all-ones.
inline __m256 LoadWTail(const float* p, int n, __m256i mask) {
  static_cast<void>(n);
  return _mm256_maskload_ps(p, mask);
}
inline __m256 LoadWTail(const uint16_t* p, int n, __m256i mask) {
  static_cast<void>(mask);
  alignas(16) uint16_t buf[kLanes] = {};
  for (int i = 0; i < n; ++i) buf[i] = p[i];
  return LoadW(buf);
}

inline float Reduce(__m256 v) {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
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

template <int MR, int NR, typename WT>
inline void Step(__m256 (&c)[MR][NR], const TileArgs& a, const WT* w, int64_t kk) {
  __m256 xv[MR];
  for (int r = 0; r < MR; ++r) xv[r] = _mm256_loadu_ps(a.x + r * a.ldx + kk);
  for (int j = 0; j < NR; ++j) {
    const __m256 wv = LoadW(w + j * a.ldw + kk);
    for (int r = 0; r < MR; ++r) c[r][j] = _mm256_fmadd_ps(xv[r], wv, c[r][j]);
  }
}

template <int MR, int NR, typename WT, bool kPrefetch>
void Tile(const TileArgs& a) {
  const WT* w = static_cast<const WT*>(a.w);
  __m256 c[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < NR; ++j) c[r][j] = _mm256_setzero_ps();
  }
  int64_t kk = 0;
  if constexpr (kPrefetch) {
    // Enough chunks per iteration that each prefetch covers a whole cache line.
    constexpr int kChunks = 64 / (kLanes * static_cast<int>(sizeof(WT)));
    for (; kk + kChunks * kLanes <= a.k; kk += kChunks * kLanes) {
      for (int j = 0; j < NR; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(w + j * a.ldw + kk) + kPrefetchBytes,
                     _MM_HINT_T0);
      }
      for (int i = 0; i < kChunks; ++i) Step<MR, NR, WT>(c, a, w, kk + i * kLanes);
    }
  }
  for (; kk + kLanes <= a.k; kk += kLanes) Step<MR, NR, WT>(c, a, w, kk);
  if (kk < a.k) {
    const int n = static_cast<int>(a.k - kk);
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 xv[MR];
    for (int r = 0; r < MR; ++r) xv[r] = _mm256_maskload_ps(a.x + r * a.ldx + kk, mask);
    for (int j = 0; j < NR; ++j) {
      const __m256 wv = LoadWTail(w + j * a.ldw + kk, n, mask);
      for (int r = 0; r < MR; ++r) c[r][j] = _mm256_fmadd_ps(xv[r], wv, c[r][j]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    float* y = a.y + r * a.ldy;
    for (int j = 0; j < NR; ++j) {
      const float s = Reduce(c[r][j]);
      y[j] = a.accumulate ? y[j] + s : s;
    }
  }
}

using TileFn = void (*)(const TileArgs&);

// Tile<mr, nr> for run-time mr in [1, 2], nr in [1, 8]; 2 x 8 would spill and is never used.
template <typename WT, bool kPrefetch, int MR = 1, int NR = 1>
TileFn PickTile(int mr, int nr) {
  if constexpr (MR * NR > 8) {
    return nullptr;
  } else if constexpr (NR < kStreamRows) {
    if (mr == MR && nr == NR) return &Tile<MR, NR, WT, kPrefetch>;
    if (mr == MR) return PickTile<WT, kPrefetch, MR, NR + 1>(mr, nr);
  } else {
    if (mr == MR) return &Tile<MR, NR, WT, kPrefetch>;
  }
  if constexpr (MR < kTileM) return PickTile<WT, kPrefetch, MR + 1, 1>(mr, nr);
  return nullptr;
}

template <typename WT>
void RunStreamed(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end) {
  TileArgs a{p.x, p.ldx, nullptr, p.w->ld, p.w->cols, nullptr, p.ldy, p.accumulate};
  for (int64_t n = n_begin; n < n_end; n += kStreamRows) {
    const int nr = static_cast<int>(Min(kStreamRows, n_end - n));
    a.w = w + n * p.w->ld;
    a.y = p.y + n;
    PickTile<WT, true>(1, nr)(a);
  }
}

template <typename WT>
void RunBlocked(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end) {
  const int64_t k = p.w->cols, ldw = p.w->ld;
  const bool prefetch = p.m < 8;
  int64_t mc = kXBlockBytes / (4 * (k > 0 ? k : 1)) / kTileM * kTileM;
  mc = mc < kTileM ? kTileM : mc;
  for (int64_t mb = 0; mb < p.m; mb += mc) {
    const int64_t me = Min(p.m, mb + mc);
    for (int64_t n = n_begin; n < n_end; n += kTileN) {
      const int nr = static_cast<int>(Min(kTileN, n_end - n));
      TileArgs a{nullptr, p.ldx, w + n * ldw, ldw, k, nullptr, p.ldy, p.accumulate};
      for (int64_t m = mb; m < me; m += kTileM) {
        const int mr = static_cast<int>(Min(kTileM, me - m));
        a.x = p.x + m * p.ldx;
        a.y = p.y + m * p.ldy + n;
        (prefetch ? PickTile<WT, true>(mr, nr) : PickTile<WT, false>(mr, nr))(a);
      }
    }
  }
}

template <typename WT>
void Run(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end) {
  if (p.m == 1) {
    RunStreamed(p, w, n_begin, n_end);
  } else {
    RunBlocked(p, w, n_begin, n_end);
  }
}

}  // namespace

void GemmAvx2(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch) {
  static_cast<void>(scratch);  // no f32 panel: conversion is cheap next to 2x4 tiles
  if (p.w->dtype == DType::kBF16) {
    Run(p, static_cast<const uint16_t*>(p.w->data), n_begin, n_end);
  } else {
    Run(p, static_cast<const float*>(p.w->data), n_begin, n_end);
  }
}

}  // namespace xlstmd::kernels::cpu
