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
#include <cstdint>

#include "kernels/cpu/simd.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {
namespace {

constexpr int kStreamRows = 8;
constexpr int kTileM = 2;
constexpr int kTileN = 4;
constexpr int64_t kXBlockBytes = 768 << 10;
constexpr int kPrefetchBytes = 1024;

using S = Avx2Vec;

template <int MR, int NR, typename WT, bool kPrefetch>
void Tile(const GemmTileArgs& a) {
  __m256 c[MR][NR];
  GemmAccumulate<S, MR, NR, WT, kPrefetch>(c, a, kPrefetchBytes);
  for (int r = 0; r < MR; ++r) {
    float* y = a.y + r * a.ldy;
    for (int j = 0; j < NR; ++j) {
      const float s = HorizontalSum(c[r][j]);
      y[j] = a.accumulate ? y[j] + s : s;
    }
  }
}

// Tile<mr, nr> for run-time mr in [1, 2], nr in [1, 8]; 2 x 8 would spill and is never used.
template <typename WT, bool kPrefetch, int MR = 1, int NR = 1>
GemmTileFn PickTile(int mr, int nr) {
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
  RunStreamedGemmTiles(p, w, n_begin, n_end, 1, kStreamRows,
                       [](int mr, int nr) { return PickTile<WT, true>(mr, nr); });
}

template <typename WT>
void RunBlocked(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end) {
  const bool prefetch = p.m < 8;
  RunBlockedGemmTiles(
      p, w, n_begin, n_end, kTileM, kTileN, kXBlockBytes, [](GemmTileArgs&, int) {},
      [&](int mr, int nr) {
        return prefetch ? PickTile<WT, true>(mr, nr) : PickTile<WT, false>(mr, nr);
      });
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
  WithWeightType(*CpuMat(p.w), CpuMat(p.w)->data, [&](const auto* w) { Run(p, w, n_begin, n_end); });
}

}  // namespace xlstmd::kernels::cpu
