// SIMD helpers shared by the ISA-specific kernel files (cpu/*_avx2.cc, cpu/*_avx512.cc):
// bf16 widening loads, tail masks, the canonical horizontal-sum trees, and the register-tile
// pieces that the AVX2 and AVX-512 GEMMs have in common.
//
// Only files compiled with ISA flags include this (kernels/CMakeLists.txt gives *_avx2.cc and
// *_avx512.cc their -m flags; the #error below rejects any other includer), and each
// includer gets its own copy compiled for its own ISA:
//   - everything is in an anonymous namespace (internal linkage, templates included), so the
//     linker can never hand a copy built with AVX-512 flags to code that runs on an AVX2 CPU;
//   - the AVX-512 helpers are compiled only where the compiler targets AVX-512 (__AVX512F__
//     and friends, set by the -mavx512* flags), so an AVX2 file that called one would not
//     compile.
// Nothing here may be included by a file compiled with the baseline flags (gemm.cc,
// elementwise.cc, ...): those run on every CPU.
#ifndef XLSTMD_KERNELS_CPU_SIMD_H_
#define XLSTMD_KERNELS_CPU_SIMD_H_

#if !defined(__AVX2__) || !defined(__FMA__)
#error "kernels/cpu/simd.h is only for files compiled with ISA flags (*_avx2.cc, *_avx512.cc)"
#endif

// GCC 12's AVX-512 intrinsics self-initialise their "undefined" vectors (`__m512i __Y = __Y;`),
// which -Wuninitialized then reports at every inlined use; the code is correct.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "kernels/cpu/cpu_matrix.h"
#include "kernels/op_params.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define XLSTMD_SIMD_AVX512 1
#endif

namespace xlstmd::kernels::cpu {
namespace {

// std::min/max would instantiate templates with external linkage in an ISA file.
inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t Max(int64_t a, int64_t b) { return a > b ? a : b; }

// Calls run(w) with the weight data typed by its storage dtype: const uint16_t* for bf16,
// const float* for f32 (the CPU backend stores no other weight dtype).
template <typename Fn>
inline void WithWeightType(const CpuMatrix& m, const void* data, Fn&& run) {
  if (m.dtype == DType::kBF16) {
    run(static_cast<const uint16_t*>(data));
  } else {
    run(static_cast<const float*>(data));
  }
}

// --- AVX2 (8 x f32) ------------------------------------------------------------------------

// bf16 -> f32 is exact: a bf16 is the high half of the f32 with the same value.
inline __m256 LoadBf16x8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// The canonical reduction tree of a 4-lane sum: s2[i] = v[i] + v[i+2], then s2[0] + s2[1].
inline float HorizontalSum(__m128 s4) {
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
// 8 lanes: s4[i] = v[i] + v[i+4], then the 4-lane tree.
inline float HorizontalSum(__m256 v) {
  return HorizontalSum(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}

// The vector operations the shared GEMM code below needs, for 8 x f32.
struct Avx2Vec {
  using V = __m256;
  static constexpr int kLanes = 8;
  // The first n (< 8) lanes of a partial chunk: lane mask for f32, count for bf16 (AVX2 has no
  // masked 16-bit load, and reading past the row's end is not allowed).
  struct Tail {
    __m256i mask;
    int n;
  };
  static Tail MakeTail(int n) {
    return {_mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), n};
  }
  static V Zero() { return _mm256_setzero_ps(); }
  static V Load(const float* p) { return _mm256_loadu_ps(p); }
  static V Load(const uint16_t* p) { return LoadBf16x8(p); }
  // Lanes past the tail read as 0 (and are not read from memory).
  static V Load(const float* p, const Tail& t) { return _mm256_maskload_ps(p, t.mask); }
  static V Load(const uint16_t* p, const Tail& t) {
    alignas(16) uint16_t buf[8] = {};
    for (int i = 0; i < t.n; ++i) buf[i] = p[i];
    return LoadBf16x8(buf);
  }
  static V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V Broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  // For the vector math of vmath.h.
  static void Store(float* p, V v, const Tail& t) { _mm256_maskstore_ps(p, t.mask, v); }
  static V Set(float f) { return _mm256_set1_ps(f); }
  static V Add(V a, V b) { return _mm256_add_ps(a, b); }
  static V Sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V Div(V a, V b) { return _mm256_div_ps(a, b); }
  static V Fnma(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  static V Min(V a, V b) { return _mm256_min_ps(a, b); }
  static V Max(V a, V b) { return _mm256_max_ps(a, b); }
  static V Abs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static V SignOf(V a) { return _mm256_and_ps(_mm256_set1_ps(-0.0f), a); }
  static V Or(V a, V b) { return _mm256_or_ps(a, b); }
  static V RoundNearest(V a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // a * 2^n for an integral n in [-150, 128]: two exact power-of-two factors, each a normal
  // float, so the product rounds once, overflowing to inf and underflowing through the
  // subnormals as vscalefps does.
  static V Scale2(V a, V n) {
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1);
    const __m256i n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(a, p1), p2);
  }
  // `x` where x is NaN, else `y`.
  static V KeepNan(V y, V x) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }
};

#ifdef XLSTMD_SIMD_AVX512
// --- AVX-512 (16 x f32) --------------------------------------------------------------------

// Lanes [0, min(left, 16)) set: the mask of a row's next chunk when `left` elements remain.
inline __mmask16 TailMask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

inline __m512 LoadBf16x16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
// Lanes outside `m` read as 0 (and are not touched in memory).
inline __m512 LoadBf16x16(const uint16_t* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// 16 lanes: s8[i] = v[i] + v[i+8], then the 8-lane tree.
inline float HorizontalSum(__m512 v) {
  return HorizontalSum(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}

// The same for 16 x f32; tails are lane masks for both element types.
struct Avx512Vec {
  using V = __m512;
  static constexpr int kLanes = 16;
  using Tail = __mmask16;
  static Tail MakeTail(int n) { return TailMask(n); }
  static V Zero() { return _mm512_setzero_ps(); }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static V Load(const uint16_t* p) { return LoadBf16x16(p); }
  static V Load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
  static V Load(const uint16_t* p, __mmask16 m) { return LoadBf16x16(p, m); }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V Broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  // For the vector math of vmath.h.
  static void Store(float* p, V v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
  static V Set(float f) { return _mm512_set1_ps(f); }
  static V Add(V a, V b) { return _mm512_add_ps(a, b); }
  static V Sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V Div(V a, V b) { return _mm512_div_ps(a, b); }
  static V Fnma(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
  static V Min(V a, V b) { return _mm512_min_ps(a, b); }
  static V Max(V a, V b) { return _mm512_max_ps(a, b); }
  static V Abs(V a) { return _mm512_andnot_ps(_mm512_set1_ps(-0.0f), a); }
  static V SignOf(V a) { return _mm512_and_ps(_mm512_set1_ps(-0.0f), a); }
  static V Or(V a, V b) { return _mm512_or_ps(a, b); }
  static V RoundNearest(V a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static V Scale2(V a, V n) { return _mm512_scalef_ps(a, n); }
  static V KeepNan(V y, V x) { return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x); }
};
#endif  // XLSTMD_SIMD_AVX512

// --- Register-tile GEMM pieces (gemm_avx2.cc, gemm_avx512.cc) -------------------------------
// y[m, n] = (acc ? y : 0) + sum_k x[m, k] * W[n, k] on an MR x NR tile: accumulator c[r][j]
// lane l gathers k = l, l + kLanes, ... by FMA in increasing k.

struct GemmTileArgs {
  const float* x;  // [mr, k], stride ldx
  int64_t ldx;
  const void* w;  // [nr, k] f32 or bf16, stride ldw
  int64_t ldw;
  int64_t k;
  float* y;  // [mr, nr], stride ldy
  int64_t ldy;
  bool accumulate;
};

template <typename S, int MR, int NR>
inline void ZeroTile(typename S::V (&c)[MR][NR]) {
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < NR; ++j) c[r][j] = S::Zero();
  }
}

// One full chunk at kk for every (x row, W row) pair of the tile.
template <typename S, int MR, int NR, typename WT>
inline void GemmStep(typename S::V (&c)[MR][NR], const GemmTileArgs& a, const WT* w, int64_t kk) {
  typename S::V xv[MR];
  for (int r = 0; r < MR; ++r) xv[r] = S::Load(a.x + r * a.ldx + kk);
  for (int j = 0; j < NR; ++j) {
    const typename S::V wv = S::Load(w + j * a.ldw + kk);
    for (int r = 0; r < MR; ++r) c[r][j] = S::Fma(xv[r], wv, c[r][j]);
  }
}

// Accumulates the whole tile into c: every full chunk of k by GemmStep, then the partial
// last chunk with x and W lanes past k reading as 0 (S::Tail). kPrefetch (W streamed from
// DRAM): each iteration covers whole 64-byte lines of every W row (several chunks when a chunk
// is shorter than a line) and prefetches those lines `prefetch_bytes` ahead. Grouping chunks
// does not change the arithmetic.
template <typename S, int MR, int NR, typename WT, bool kPrefetch>
inline void GemmAccumulate(typename S::V (&c)[MR][NR], const GemmTileArgs& a, int prefetch_bytes) {
  const WT* w = static_cast<const WT*>(a.w);
  ZeroTile<S>(c);
  constexpr int kChunkBytes = S::kLanes * static_cast<int>(sizeof(WT));
  constexpr int kChunks = kChunkBytes >= 64 ? 1 : 64 / kChunkBytes;
  int64_t kk = 0;
  if constexpr (kPrefetch) {
    for (; kk + kChunks * S::kLanes <= a.k; kk += kChunks * S::kLanes) {
      for (int j = 0; j < NR; ++j) {
        const char* p = reinterpret_cast<const char*>(w + j * a.ldw + kk) + prefetch_bytes;
        for (int off = 0; off < kChunks * kChunkBytes; off += 64) {
          _mm_prefetch(p + off, _MM_HINT_T0);
        }
      }
      for (int i = 0; i < kChunks; ++i) GemmStep<S>(c, a, w, kk + i * S::kLanes);
    }
  }
  for (; kk + S::kLanes <= a.k; kk += S::kLanes) GemmStep<S>(c, a, w, kk);
  if (kk < a.k) {
    const typename S::Tail tail = S::MakeTail(static_cast<int>(a.k - kk));
    typename S::V xv[MR];
    for (int r = 0; r < MR; ++r) xv[r] = S::Load(a.x + r * a.ldx + kk, tail);
    for (int j = 0; j < NR; ++j) {
      const typename S::V wv = S::Load(w + j * a.ldw + kk, tail);
      for (int r = 0; r < MR; ++r) c[r][j] = S::Fma(xv[r], wv, c[r][j]);
    }
  }
}

using GemmTileFn = void (*)(const GemmTileArgs&);

// Decode: x rows [0, mr) against `tile_n` W rows at a time, W read exactly once.
// pick(mr, nr) returns the kernel of an mr x nr tile.
template <typename WT, typename Pick>
inline void RunStreamedGemmTiles(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end,
                                 int mr, int tile_n, Pick&& pick) {
  GemmTileArgs a{p.x, p.ldx, nullptr, CpuMat(p.w)->ld, CpuMat(p.w)->cols, nullptr, p.ldy, p.accumulate};
  for (int64_t n = n_begin; n < n_end; n += tile_n) {
    const int nr = static_cast<int>(Min(tile_n, n_end - n));
    a.w = w + n * CpuMat(p.w)->ld;
    a.y = p.y + n;
    pick(mr, nr)(a);
  }
}

// Prefill / batched decode: x rows in blocks of about `x_block_bytes` (to stay in L2); per
// block every tile_n-row W tile is visited once and multiplied with every tile_m-row x tile of
// the block. prepare(a, nr) runs once per W tile and may point a.w / a.ldw elsewhere (an f32
// panel); pick(mr, nr) returns the kernel of an mr x nr tile.
template <typename WT, typename Prepare, typename Pick>
inline void RunBlockedGemmTiles(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end,
                                int tile_m, int tile_n, int64_t x_block_bytes, Prepare&& prepare,
                                Pick&& pick) {
  const int64_t k = CpuMat(p.w)->cols, ldw = CpuMat(p.w)->ld;
  int64_t mc = x_block_bytes / (4 * (k > 0 ? k : 1)) / tile_m * tile_m;
  mc = mc < tile_m ? tile_m : mc;
  for (int64_t mb = 0; mb < p.m; mb += mc) {
    const int64_t me = Min(p.m, mb + mc);
    for (int64_t n = n_begin; n < n_end; n += tile_n) {
      const int nr = static_cast<int>(Min(tile_n, n_end - n));
      GemmTileArgs a{nullptr, p.ldx, w + n * ldw, ldw, k, nullptr, p.ldy, p.accumulate};
      prepare(a, nr);
      for (int64_t m = mb; m < me; m += tile_m) {
        const int mr = static_cast<int>(Min(tile_m, me - m));
        a.x = p.x + m * p.ldx;
        a.y = p.y + m * p.ldy + n;
        pick(mr, nr)(a);
      }
    }
  }
}

}  // namespace
}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_SIMD_H_
