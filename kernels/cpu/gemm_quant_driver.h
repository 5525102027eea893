// The ISA-independent half of the quantized GEMM (gemm_quant.h has the layout and the
// arithmetic every path must follow). gemm_quant_avx512.cc and gemm_quant_avx2.cc supply a
// policy Q with
//   Q::S                         simd.h Avx2Vec / Avx512Vec
//   Q::kStrip                    x rows per register tile on the blocked path
//   Q::StreamPairs(mr, q4)       pairs per tile on the streamed path
//   Q::kQ4RegPairs               q4, one x row: pairs of a tile held in registers at a time
//   Q::UnpackI8(row, v[kV])      float(q) of one k row of a pair (32 columns, kV vectors)
//   Q::UnpackQ4(words, i, v[kV]) the same for q4: the pair's 32 code words of a block of 8 k,
//                                masked to nibble i and converted (gemm_quant_q4.h)
//   Q::ScalesI8(p, v[kV]) / Q::ScalesQ4(p, v[kV])   a pair's 32 scales of one group as f32
// where vector i of a row holds columns [i * kLanes, (i + 1) * kLanes) of the pair.
//
// Streamed path (M <= 3, decode): codes are read once from memory and converted in
// registers; per group the chains s run in registers and are folded into a small L1
// accumulator array (one load, FMA and store per 32 k steps).
// Blocked path (M >= 4): per pair and 128-step K block, the codes are converted once into an
// f32 sub-panel of exact integers (and the block's scales into a scale panel) that every x
// strip then reuses; a strip's tile is 2 vectors wide, with its group sums parked between K
// blocks (int8, whose one group spans all of k) and its folded accumulators parked between
// groups.
//
// Included only by ISA files after simd.h (internal linkage throughout; see simd.h). Nothing
// here calls an inline function of a shared header with external linkage: its out-of-line
// copy could be taken from this ISA's object file. (gemm_quant_q4.h's helpers are in an
// anonymous namespace, so each ISA file has its own.)
#ifndef XLSTMD_KERNELS_CPU_GEMM_QUANT_DRIVER_H_
#define XLSTMD_KERNELS_CPU_GEMM_QUANT_DRIVER_H_

#include "kernels/cpu/gemm_quant_q4.h"
#include "kernels/cpu/simd.h"
#include "kernels/quant.h"

namespace xlstmd::kernels::cpu {
namespace {

constexpr int kQCols = 32;               // output columns per pair
constexpr int kQuadPairs = 4;            // pairs interleaved per quad (gemm_quant.h)
constexpr int64_t kQGroup = 32;          // q4 group along k
constexpr int64_t kQ4QuadGroupBytes = 2304;  // q4: 32 k x 64 bytes of codes + 4 x 32 f16 scales
constexpr int64_t kQKc = 128;            // k steps per blocked sub-panel (a multiple of kQGroup)
constexpr int64_t kQXFloats = 256 << 10; // x floats per M block (~1 MiB)
// Streamed path: prefetch distance in a quad's stream (q4: ~114 k steps of 72 bytes, int8: 64
// of 128). Measured on the AVX-512 EPYC: 2 KiB left decode ~15% short (int8 most). int8
// prefetches into L2 only: on an Intel Xeon (AVX-512, 2 MiB L2) batch-1 int8 decode went from
// 1.4-1.5x to 1.7-1.8x bf16 on AVX-512 and ~1.5x to ~1.55x on AVX2 (L1's fill buffers, not the
// DRAM, were the limit); q4, which converts more per byte, measured no better so.
constexpr int64_t kQPrefetchBytes = 8192;

enum class QFmt { kI8, kQ4 };

static_assert(kQGroup == kQ4Group && kQGroup == kQ4GroupK, "one q4 group size everywhere");
static_assert(kQKc % kQGroup == 0, "a blocked K block starts a q4 group (QPanelTile)");
static_assert(kQ4QuadGroupBytes == 4 * kQuadPairs * kQCols * 4 + kQuadPairs * kQCols * 2,
              "a q4 quad group: 4 words of 8 k per row, then the f16 scales");

// Code bytes of one pair per k, and of a whole quad per k (q4: on average; its words hold 8 k).
template <QFmt F>
constexpr int64_t kQSlice = F == QFmt::kQ4 ? 16 : kQCols;
template <QFmt F>
constexpr int64_t kQKStride = kQuadPairs * kQSlice<F>;
constexpr int64_t kQ4BlockBytes = kQuadPairs * kQCols * 4;  // a quad's words of 8 k

inline int64_t QGroups(QFmt f, int64_t k) { return f == QFmt::kQ4 ? (k + kQGroup - 1) / kQGroup : 1; }
inline int64_t QQuadBytes(QFmt f, int64_t k) {
  return f == QFmt::kQ4 ? QGroups(f, k) * kQ4QuadGroupBytes
                        : k * kQuadPairs * kQCols + kQuadPairs * kQCols * 4;
}
// The codes of k row kk of pair pq (0..3) of a quad (q4: the pair's words holding kk).
template <QFmt F>
inline const char* QRow(const char* quad, int64_t pq, int64_t kk) {
  if constexpr (F == QFmt::kQ4) {
    return quad + (kk / kQGroup) * kQ4QuadGroupBytes + (kk % kQGroup / kQ4Nibbles) * kQ4BlockBytes +
           pq * kQCols * 4;
  }
  return quad + kk * kQKStride<F> + pq * kQSlice<F>;
}
// The 32 scales of group g of pair pq of a quad (k = cols of the matrix).
template <QFmt F>
inline const char* QScales(const char* quad, int64_t pq, int64_t k, int64_t g) {
  if constexpr (F == QFmt::kQ4) {
    return quad + g * kQ4QuadGroupBytes + kQGroup * kQKStride<F> + pq * kQCols * 2;
  }
  return quad + k * kQKStride<F> + pq * kQCols * 4;
}

// i: kk % 8 (q4's nibble; int8 has none).
template <typename Q, QFmt F>
inline void Unpack(const char* row, int i, typename Q::S::V* v) {
  if constexpr (F == QFmt::kQ4) {
    Q::UnpackQ4(reinterpret_cast<const uint32_t*>(row), i, v);
  } else {
    (void)i;
    Q::UnpackI8(reinterpret_cast<const int8_t*>(row), v);
  }
}
template <typename Q, QFmt F>
inline void Scales(const char* p, typename Q::S::V* v) {
  if constexpr (F == QFmt::kQ4) {
    Q::ScalesQ4(reinterpret_cast<const uint16_t*>(p), v);
  } else {
    Q::ScalesI8(reinterpret_cast<const float*>(p), v);
  }
}

// Writes (or adds) one vector of a tile to y at global column `col` (y points at it); the
// lanes at or past n_hi are left alone. Column ranges start on a pair boundary, so only the
// upper end can cut a vector.
template <typename S>
inline void StoreCols(float* y, typename S::V v, int64_t col, int64_t n_hi, bool accumulate) {
  if (col + S::kLanes <= n_hi) {
    if (accumulate) v = S::Add(S::Load(y), v);
    S::Store(y, v);
  } else if (col < n_hi) {
    const typename S::Tail t = S::MakeTail(static_cast<int>(n_hi - col));
    if (accumulate) v = S::Add(S::Load(y, t), v);
    S::Store(y, v, t);
  }
}

// The next run of pairs to compute: all of [p_begin, p_end) without a counter (the caller
// stops after that one run), else the next `grab` pairs claimed from it; false when none are
// left.
inline bool NextPairs(int64_t* counter, int64_t grab, int64_t p_begin, int64_t p_end,
                      int64_t* begin, int64_t* end) {
  if (counter == nullptr) {
    *begin = p_begin;
    *end = p_end;
    return true;
  }
  *begin = p_begin + __atomic_fetch_add(counter, grab, __ATOMIC_RELAXED);
  if (*begin >= p_end) return false;
  *end = Min(p_end, *begin + grab);
  return true;
}

struct QStreamArgs {
  const float* x;     // MR rows, stride ldx (q4: x', gemm_quant_q4.h)
  int64_t ldx;
  const float* offsets;  // q4: MR rows of group offsets, stride ld_offsets
  int64_t ld_offsets;
  const char* quad;   // the quad holding the tile's pairs
  int64_t pq0;        // the tile's first pair within it (pq0 + NP <= kQuadPairs)
  int64_t k;
  float* y;           // row 0, column col0
  int64_t ldy;
  int64_t col0;
  int64_t n_hi;
  bool accumulate;
};
using QStreamFn = void (*)(const QStreamArgs&);

template <typename Q, QFmt F, int MR, int NP>
void QStreamTile(const QStreamArgs& a) {
  using S = typename Q::S;
  using V = typename S::V;
  constexpr int kV = kQCols / S::kLanes;
  // Pairs per register pass (a 3-pair tile, at the edge of a claimed run, goes one by one).
  constexpr int SP = F != QFmt::kQ4 || MR > 1 || Q::kQ4RegPairs >= NP ? NP
                     : NP % Q::kQ4RegPairs == 0                       ? Q::kQ4RegPairs
                                                                      : 1;
  alignas(64) float acc[MR][NP * kQCols];
  for (int r = 0; r < MR; ++r) {
    for (int i = 0; i < NP * kQCols; ++i) acc[r][i] = 0.0f;
  }
  const int64_t groups = QGroups(F, a.k);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t k0 = F == QFmt::kQ4 ? g * kQGroup : 0;
    const int64_t k1 = F == QFmt::kQ4 ? Min(a.k, k0 + kQGroup) : a.k;
    // A quad's codes are one sequential stream (gemm_quant.h): per k, one 64-byte line (int8:
    // two) holding all four pairs, q4 on average (72 bytes per k with its scales). At least one
    // prefetch per line, kQPrefetchBytes ahead.
    const char* stream = F == QFmt::kQ4 ? a.quad + g * kQ4QuadGroupBytes : a.quad;
    // q4 runs the group once per SP pairs in registers (the group's codes are in L1 after the
    // first), so a tile wider than the registers still reads its stream in one pass.
    for (int sp0 = 0; sp0 < NP; sp0 += SP) {
      V s[MR][SP * kV];
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        const V s0 = F == QFmt::kQ4 ? S::Broadcast(a.offsets + r * a.ld_offsets + g) : S::Zero();
#pragma GCC unroll 16
        for (int i = 0; i < SP * kV; ++i) s[r][i] = s0;
      }
      // One k step (codes at `row`, nibble i): SP pairs times the MR broadcast x.
      auto step = [&](int64_t kk, int i, const char* row) {
        V xb[MR];
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) xb[r] = S::Broadcast(a.x + r * a.ldx + kk);
        if constexpr (F == QFmt::kQ4) {
          // 72-byte steps pass over one line in nine; the last k of each word catches it.
          if (sp0 == 0) {
            const char* pf = stream + (kk - k0) * 72 + kQPrefetchBytes;
            _mm_prefetch(pf, _MM_HINT_T0);
            if (i == kQ4Nibbles - 1) _mm_prefetch(pf + 64, _MM_HINT_T0);
          }
        } else {
          for (int64_t line = 0; line < kQKStride<F>; line += 64) {
            _mm_prefetch(stream + kk * kQKStride<F> + line + kQPrefetchBytes, _MM_HINT_T1);
          }
        }
#pragma GCC unroll 4
        for (int j = 0; j < SP; ++j) {
          V wv[kV];
          Unpack<Q, F>(row + j * (F == QFmt::kQ4 ? kQCols * 4 : kQSlice<F>), i, wv);
#pragma GCC unroll 4
          for (int v = 0; v < kV; ++v) {
#pragma GCC unroll 4
            for (int r = 0; r < MR; ++r) {
              s[r][j * kV + v] = S::Fma(xb[r], wv[v], s[r][j * kV + v]);
            }
          }
        }
      };
      if constexpr (F == QFmt::kQ4) {
        // Whole blocks of 8 k unrolled, so each nibble's mask is a constant.
        int64_t kk = k0;
        const char* row = QRow<F>(a.quad, a.pq0 + sp0, k0);
        for (; kk + kQ4Nibbles <= k1; kk += kQ4Nibbles, row += kQ4BlockBytes) {
#pragma GCC unroll 8
          for (int i = 0; i < kQ4Nibbles; ++i) step(kk + i, i, row);
        }
        for (int i = 0; kk < k1; ++kk, ++i) step(kk, i, row);
      } else {
        const char* row = QRow<F>(a.quad, a.pq0 + sp0, k0);
        for (int64_t kk = k0; kk < k1; ++kk, row += kQKStride<F>) step(kk, 0, row);
      }
#pragma GCC unroll 4
      for (int j = 0; j < SP; ++j) {
        V sc[kV];
        Scales<Q, F>(QScales<F>(a.quad, a.pq0 + sp0 + j, a.k, g), sc);
#pragma GCC unroll 4
        for (int i = 0; i < kV; ++i) {
#pragma GCC unroll 4
          for (int r = 0; r < MR; ++r) {
            float* ap = &acc[r][(sp0 + j) * kQCols + i * S::kLanes];
            S::Store(ap, S::Fma(s[r][j * kV + i], sc[i], S::Load(ap)));
          }
        }
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int i = 0; i < NP * kQCols; i += S::kLanes) {
      StoreCols<S>(a.y + r * a.ldy + i, S::Load(&acc[r][i]), a.col0 + i, a.n_hi, a.accumulate);
    }
  }
}

template <typename Q, QFmt F, int MR = 1, int NP = 1>
QStreamFn PickStreamTile(int mr, int np) {
  if (mr == MR && np == NP) return &QStreamTile<Q, F, MR, NP>;
  if constexpr (NP < 4) {
    if (mr == MR) return PickStreamTile<Q, F, MR, NP + 1>(mr, np);
  }
  if constexpr (MR < 3) return PickStreamTile<Q, F, MR + 1, 1>(mr, np);
  return nullptr;
}

// With `next_pair`, the pairs of [n_begin, n_end) are claimed `grab` at a time (as on the
// blocked path) rather than all taken: decode ops are short, and a static split waits for
// whichever thread the shared host slowed down.
// q4 first prepares the x' rows and group offsets (gemm_quant_q4.h) in `scratch`; each
// thread of the call does so for itself (perf: ~2% of the streamed q4 GEMM's time on AVX2).
template <typename Q, QFmt F>
void QRunStreamed(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
                  int64_t* next_pair, int64_t grab) {
  const int64_t k = CpuMat(p.w)->cols, quad_bytes = QQuadBytes(F, k);
  const char* w = static_cast<const char*>(CpuMat(p.w)->packed);
  const int mr = static_cast<int>(p.m);
  const int64_t step = Q::StreamPairs(mr, F == QFmt::kQ4);
  const int64_t p_begin = n_begin / kQCols, p_end = (n_end + kQCols - 1) / kQCols;
  QStreamArgs a{p.x, p.ldx, nullptr, 0, nullptr, 0, k, nullptr, p.ldy, 0, n_end, p.accumulate};
  if constexpr (F == QFmt::kQ4) {
    const int64_t ldx = (k + 15) / 16 * 16, groups = QGroups(F, k);
    float* offsets = scratch + mr * ldx;
    for (int r = 0; r < mr; ++r) {
      Q4PrepareRow(p.x + r * p.ldx, k, scratch + r * ldx, offsets + r * groups);
    }
    a.x = scratch;
    a.ldx = ldx;
    a.offsets = offsets;
    a.ld_offsets = groups;
  }
  for (;;) {
    int64_t g_begin, g_end;
    if (!NextPairs(next_pair, grab, p_begin, p_end, &g_begin, &g_end)) return;
    // Tiles never straddle a quad: a tile's pairs share its stream.
    for (int64_t pi = g_begin; pi < g_end;) {
      const int64_t pq = pi % kQuadPairs;
      const int np = static_cast<int>(Min(Min(step, kQuadPairs - pq), g_end - pi));
      a.quad = w + (pi / kQuadPairs) * quad_bytes;
      a.pq0 = pq;
      a.col0 = pi * kQCols;
      a.y = p.y + a.col0;
      PickStreamTile<Q, F>(mr, np)(a);
      pi += np;
    }
    if (next_pair == nullptr) return;
  }
}

// --- Blocked path -----------------------------------------------------------------------------

struct QPanelArgs {
  const float* x;       // strip slice [kc][MR] (q4: of x')
  const float* offsets; // q4: the strip's group offsets, [group][MR] from group 0
  const float* w;       // sub-panel at the tile's first column, row stride kQCols
  const float* sc;      // scale panel at the tile's first column, one row of kQCols per group
  int64_t kc;
  int64_t k0;           // global k of the sub-panel's row 0 (a multiple of kQKc)
  float* part_s;        // [MR] rows of parked group sums (int8: between K blocks)
  float* part_acc;      // [MR] rows of parked folded accumulators (q4: between groups)
  int64_t park_stride;  // floats between the parked rows
  bool last;            // the last K block: finish into y
  float* y;             // strip row 0 at the tile's first column
  int64_t ldy;
  int64_t col;          // global column of the tile's first column
  int64_t n_hi;
  bool accumulate;
};
using QPanelFn = void (*)(const QPanelArgs&);

// One x strip times one 2-vector-wide tile of a sub-panel.
template <typename Q, QFmt F, int MR>
void QPanelTile(const QPanelArgs& a) {
  using S = typename Q::S;
  using V = typename S::V;
  constexpr int L = S::kLanes;
  V s[MR][2];
  const bool resume = F == QFmt::kI8 && a.k0 > 0;
  // A q4 group's sums start from its offsets (the K block starts a group: kQKc % 32 == 0).
  auto start_group = [&](int64_t g) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) s[r][0] = s[r][1] = S::Broadcast(a.offsets + g * MR + r);
  };
  if constexpr (F == QFmt::kQ4) {
    start_group(a.k0 / kQGroup);
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      s[r][0] = resume ? S::Load(a.part_s + r * a.park_stride) : S::Zero();
      s[r][1] = resume ? S::Load(a.part_s + r * a.park_stride + L) : S::Zero();
    }
  }
  const float* xp = a.x;
  const float* wp = a.w;
  for (int64_t kk = 0;;) {
    const int64_t seg_end = F == QFmt::kQ4 ? Min(a.kc, kk + kQGroup) : a.kc;
    for (; kk < seg_end; ++kk) {
      const V w0 = S::Load(wp);
      const V w1 = S::Load(wp + L);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const V xb = S::Broadcast(xp + r);
        s[r][0] = S::Fma(xb, w0, s[r][0]);
        s[r][1] = S::Fma(xb, w1, s[r][1]);
      }
      xp += MR;
      wp += kQCols;
    }
    // A q4 group ends with its 32 steps or with k; the int8 group only with k.
    if (F == QFmt::kI8 && !a.last) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        S::Store(a.part_s + r * a.park_stride, s[r][0]);
        S::Store(a.part_s + r * a.park_stride + L, s[r][1]);
      }
      return;
    }
    const int64_t g_in_block = F == QFmt::kQ4 ? (kk - 1) / kQGroup : 0;
    const bool first_group = F == QFmt::kI8 || a.k0 + (kk - 1) < kQGroup;
    const bool finish = a.last && kk >= a.kc;
    const V sc0 = S::Load(a.sc + g_in_block * kQCols);
    const V sc1 = S::Load(a.sc + g_in_block * kQCols + L);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      float* ap = a.part_acc + r * a.park_stride;
      const V acc0 = S::Fma(s[r][0], sc0, first_group ? S::Zero() : S::Load(ap));
      const V acc1 = S::Fma(s[r][1], sc1, first_group ? S::Zero() : S::Load(ap + L));
      if (finish) {
        StoreCols<S>(a.y + r * a.ldy, acc0, a.col, a.n_hi, a.accumulate);
        StoreCols<S>(a.y + r * a.ldy + L, acc1, a.col + L, a.n_hi, a.accumulate);
      } else {
        S::Store(ap, acc0);
        S::Store(ap + L, acc1);
      }
    }
    if (finish || kk >= a.kc) return;
    if constexpr (F == QFmt::kQ4) start_group((a.k0 + kk) / kQGroup);
  }
}

template <typename Q, QFmt F, int MR = 1>
QPanelFn PickPanelTile(int mr) {
  if (mr == MR) return &QPanelTile<Q, F, MR>;
  if constexpr (MR < Q::kStrip) return PickPanelTile<Q, F, MR + 1>(mr);
  return nullptr;
}

// Converts pair rows [k0, k0 + kc) into the f32 sub-panel, and the scales of the groups they
// hold into the scale panel (int8: the pair's one scale row). Meanwhile it prefetches lines
// [pf, pf_end), one per k row: the caller hands each of a quad's pairs a quarter of the next
// K block, so the stream is fetched ahead without a burst of prefetches. (Into L1: into L2
// left int8 batch-8 decode ~10% slower.)
template <typename Q, QFmt F>
void QPanel(const char* quad, int64_t pq, int64_t k, int64_t k0, int64_t kc, float* panel,
            float* spanel, const char* pf, const char* pf_end) {
  using S = typename Q::S;
  constexpr int kV = kQCols / S::kLanes;
  typename S::V v[kV];
  for (int64_t kk = 0; kk < kc; ++kk) {
    if (pf < pf_end) {
      _mm_prefetch(pf, _MM_HINT_T0);
      pf += 64;
    }
    Unpack<Q, F>(QRow<F>(quad, pq, k0 + kk), static_cast<int>((k0 + kk) % kQ4Nibbles), v);
    for (int i = 0; i < kV; ++i) S::Store(panel + kk * kQCols + i * S::kLanes, v[i]);
  }
  const int64_t g0 = F == QFmt::kQ4 ? k0 / kQGroup : 0;
  const int64_t ng = F == QFmt::kQ4 ? (kc + kQGroup - 1) / kQGroup : 1;
  for (int64_t g = 0; g < ng; ++g) {
    Scales<Q, F>(QScales<F>(quad, pq, k, g0 + g), v);
    for (int i = 0; i < kV; ++i) S::Store(spanel + g * kQCols + i * S::kLanes, v[i]);
  }
}

// Bytes of a quad from the start of K block k0 to the start of the next one (the codes and,
// for q4, the scales of its groups; int8's scales sit after all of k).
template <QFmt F>
inline int64_t QBlockOffset(int64_t k0) {
  if constexpr (F == QFmt::kQ4) return (k0 / kQGroup) * kQ4QuadGroupBytes;
  return k0 * kQKStride<F>;
}

// The least scratch the blocked path works with for reduction length k.
template <typename Q>
int64_t QMinScratchFloats(int64_t k) {
  return kQKc * kQCols + (kQKc / kQGroup) * kQCols +
         Q::kStrip * (Max(k, 1) + (k + kQGroup - 1) / kQGroup + 4 * kQuadPairs * kQCols) + 96;
}

// Per claimed quad and K block, each of its pairs is converted and run over every strip
// before the next K block: the block's lines (which hold all four pairs) are used while they
// are in cache, and the next block is prefetched meanwhile. Each pair keeps its own parked
// tiles across K blocks.
template <typename Q, QFmt F>
void QRunBlocked(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
                 int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  const int64_t k = CpuMat(p.w)->cols, quad_bytes = QQuadBytes(F, k);
  const char* w = static_cast<const char*>(CpuMat(p.w)->packed);
  const int64_t p_begin = n_begin / kQCols, p_end = (n_end + kQCols - 1) / kQCols;
  float* panel = scratch;
  float* spanel = panel + kQKc * kQCols;
  float* xblock = spanel + (kQKc / kQGroup) * kQCols;
  constexpr int64_t kParkRow = kQuadPairs * kQCols;  // a strip row's parked floats
  // Past the x block: q4's group offsets, the parked tiles (at most 2 x (mc + kStrip) rows of
  // kParkRow) and slack.
  const int64_t groups = F == QFmt::kQ4 ? QGroups(F, k) : 0;
  const int64_t avail = scratch_floats - (xblock - scratch) - 2 * kParkRow * Q::kStrip - 96;
  // Rows per M block: as many as fit (each costs k floats of x, its offsets and its share of
  // the parked tiles), evened out so the last block is not a sliver.
  int64_t mc = Max(Min(avail, kQXFloats) / (Max(k, 1) + groups + 2 * kParkRow), Q::kStrip);
  const int64_t blocks = (p.m + mc - 1) / mc;
  mc = (p.m + blocks - 1) / blocks;
  float* offblock = xblock + (mc * Max(k, 1) + 15) / 16 * 16;
  float* parked_s = offblock + (mc * groups + 15) / 16 * 16;
  const int64_t max_strips = (mc + Q::kStrip - 1) / Q::kStrip;
  float* parked_acc = parked_s + max_strips * Q::kStrip * kParkRow;
  constexpr int kTileCols = 2 * Q::S::kLanes;
  for (int64_t mb = 0; mb < p.m; mb += mc) {
    const int64_t rows = Min(p.m, mb + mc) - mb;
    const int64_t ns = (rows + Q::kStrip - 1) / Q::kStrip;
    for (int64_t i = 0; i < ns; ++i) {
      const int64_t r0 = i * rows / ns, r1 = (i + 1) * rows / ns;
      const int64_t mr = r1 - r0;
      float* dst = xblock + r0 * k;
      for (int64_t r = 0; r < mr; ++r) {
        const float* src = p.x + (mb + r0 + r) * p.ldx;
        if constexpr (F == QFmt::kQ4) {
          for (int64_t kk = 0; kk < k; ++kk) {
            dst[kk * mr + r] = src[kk] * Q4XScale(static_cast<int>(kk % kQ4Nibbles));
          }
          for (int64_t g = 0; g < groups; ++g) {
            offblock[r0 * groups + g * mr + r] = Q4GroupOffset(src, k, g);
          }
        } else {
          for (int64_t kk = 0; kk < k; ++kk) dst[kk * mr + r] = src[kk];
        }
      }
    }
    int64_t* counter = next_pair != nullptr ? next_pair + mb / mc : nullptr;
    for (;;) {
      int64_t g_begin, g_end;
      if (!NextPairs(counter, grab, p_begin, p_end, &g_begin, &g_end)) break;
      for (int64_t q_first = g_begin; q_first < g_end;) {
        const int64_t q_last = Min(g_end, (q_first / kQuadPairs + 1) * kQuadPairs);
        const char* quad = w + (q_first / kQuadPairs) * quad_bytes;
        for (int64_t k0 = 0; k0 < k; k0 += kQKc) {
          const int64_t kc = Min(kQKc, k - k0);
          // The next block of this quad, or (after its last) the start of the next quad,
          // which is where this thread usually goes on.
          const char* next = quad + QBlockOffset<F>(k0 + kc);
          const int64_t lines = (QBlockOffset<F>(kQKc) + 63) / 64;
          for (int64_t pi = q_first; pi < q_last; ++pi) {
            const int64_t pq = pi % kQuadPairs;
            const char* pf = next + (pq * lines / kQuadPairs) * 64;
            const char* pf_end = next + ((pq + 1) * lines / kQuadPairs) * 64;
            QPanel<Q, F>(quad, pq, k, k0, kc, panel, spanel, pf, pf_end);
            for (int64_t i = 0; i < ns; ++i) {
              const int64_t r0 = i * rows / ns, r1 = (i + 1) * rows / ns;
              const int mr = static_cast<int>(r1 - r0);
              float* park_s = parked_s + i * Q::kStrip * kParkRow + pq * kQCols;
              float* park_acc = parked_acc + i * Q::kStrip * kParkRow + pq * kQCols;
              for (int c = 0; c < kQCols; c += kTileCols) {
                QPanelArgs a{};
                a.x = xblock + r0 * k + k0 * mr;
                a.offsets = offblock + r0 * groups;
                a.w = panel + c;
                a.sc = spanel + c;
                a.kc = kc;
                a.k0 = k0;
                a.part_s = park_s + c;
                a.part_acc = park_acc + c;
                a.park_stride = kParkRow;
                a.last = k0 + kc >= k;
                a.y = p.y + (mb + r0) * p.ldy + pi * kQCols + c;
                a.ldy = p.ldy;
                a.col = pi * kQCols + c;
                a.n_hi = n_end;
                a.accumulate = p.accumulate;
                PickPanelTile<Q, F>(mr)(a);
              }
            }
          }
        }
        q_first = q_last;
      }
      if (counter == nullptr) break;
    }
  }
}

// The whole quantized GEMM for policy Q on y[:, n_begin:n_end) (k >= 1; gemm_quant.cc
// handles k == 0).
template <typename Q>
void QRun(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
          int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  const bool q4 = CpuMat(p.w)->dtype == DType::kQ4;
  if (p.m <= 3) {
    (q4 ? &QRunStreamed<Q, QFmt::kQ4> : &QRunStreamed<Q, QFmt::kI8>)(p, n_begin, n_end, scratch,
                                                                     next_pair, grab);
  } else {
    (q4 ? &QRunBlocked<Q, QFmt::kQ4> : &QRunBlocked<Q, QFmt::kI8>)(p, n_begin, n_end, scratch,
                                                                   scratch_floats, next_pair,
                                                                   grab);
  }
}

}  // namespace
}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_GEMM_QUANT_DRIVER_H_
