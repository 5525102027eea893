// GEMM dispatch, thread split, the packing of W and the portable scalar kernel.
//
// Why own kernels: every output element must be computed by a sequence of floating-point
// operations that depends on k alone, never on M, the tile it falls in or the thread split, so
// a row's result is bit-identical whatever else is in the batch (batch invariance, which lets
// the scheduler batch sessions without changing any session's tokens). Writing the kernels
// ourselves also keeps bf16 weights x f32 activations exact: oneDNN 2.6 has no f32 x bf16
// matmul, and its bf16 path rounds the activations, which breaks the 1e-3 golden tolerance
// (CPU-GEMM.md section 0).
//
// Two schemes, one per W layout (results may differ between them and between ISAs, never
// within one):
// - Packed (AVX-512 and AVX2, W->packed made by PackGemmWeights at upload): W in pairs of
//   16-row panels, [rows / 32][k][32]. Outer-product register tiles (AVX-512: 12 x-rows x 32
//   W-rows, 24 zmm accumulators; AVX2: 6 x 16, 12 ymm): per k, f32 W loads from an
//   L1-resident sub-panel (a 128-step K block of the pair, widened from bf16 once for all x
//   strips), broadcasts and FMAs, and no horizontal reductions. Each element is one FMA chain
//   over k = 0..K-1 in order from +0, then added to y if accumulating; the decode path (M <= 3,
//   streaming several pairs at once) runs the same chain, so the two ISAs' packed results are
//   bit-identical (gemm_packed_driver.h holds the shared tiling). The AVX-512 and AVX2 CPU
//   backends keep only this copy (no row-major `data`; Embed gathers from it), so weight
//   memory is not doubled. Why: the dot-product
//   scheme below tops out at ~55-60% of FMA peak on tall M (two loads per FMA, horizontal
//   reductions); this one measured ~70% of the FMA-loop peak per core (M = 64..2048,
//   K = 256..2048, bf16), ~1.4x the old path, and streams decode W at near DRAM speed.
//   The price: its per-element order is a serial chain, whose worst-case rounding bound
//   grows with k rather than k / 16 (the golden tolerances still hold).
// - Row-major `data` (scalar, and AVX-512/AVX2 when no packed copy exists): dot products
//   of one x row with one W row, lane-wise vector accumulators over k in fixed chunks, a
//   fixed masked k tail and a fixed horizontal reduction tree.
//
// Parallelism: output columns are split into ranges that are multiples of kGrain (a multiple
// of every ISA's W-row tile; kPackedGrain, one W pair, for the packed layout), each thread
// running all M rows so each W tile is read once per M block. On the packed path with
// M >= 4 the W pairs are claimed dynamically from a shared counter instead of split
// statically (a static split makes every op wait for whichever core the shared host slowed
// down; measured +10-15% on batch-64 decode). Only when N is too narrow to feed the
// threads are rows split instead. None of this changes any element's arithmetic.
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_quant.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace xlstmd::kernels::cpu {

// Entry points of the per-ISA translation units (compiled with their own -m flags and called
// only after run-time dispatch). Each computes y[:, n_begin:n_end) for all p.m rows. `scratch`
// is private to the calling thread, 64-byte aligned and holds kGemmScratchRows * round_up(k, 16)
// floats (room for a W panel converted to f32).
void GemmAvx512(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch);
void GemmAvx2(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch);
// The packed layout (AVX-512 / AVX2); `scratch` holds `scratch_floats` (at least the ISA's
// *MinScratchFloats(k)) floats. With `next_pair` (M >= 4 only: one zeroed counter per M block,
// shared by all threads of the call) the pairs of [n_begin, n_end) are claimed `grab` at a
// time instead of all taken.
void GemmPackedAvx512(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
                      int64_t scratch_floats, int64_t* next_pair, int64_t grab);
void GemmPackedAvx2(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
                    int64_t scratch_floats, int64_t* next_pair, int64_t grab);
// The least `scratch_floats` each works with for reduction length k (its f32 W sub-panel, one
// strip of x and its parked accumulators).
int64_t GemmPackedMinScratchFloats(int64_t k);
int64_t GemmPackedAvx2MinScratchFloats(int64_t k);

namespace {

constexpr int64_t kGemmScratchRows = 8;
constexpr int64_t kGrain = 24;  // multiple of the W-row tiles used by all ISAs (4, 6, 8)
constexpr int64_t kPackedGrain = 32;  // one W pair of the packed layout
constexpr int64_t kPackedPair = 32;
// Packed path: floats of x held packed per M block (~1 MiB, half of L2).
constexpr int64_t kPackedXFloats = 256 << 10;
// Thread split. Waking a sleeping pool worker costs ~50 us on these VMs, but within a forward
// pass the workers are still spinning from the previous op (thread_pool.cc), and then a split
// costs a few microseconds: measured on the AVX-512 EPYC, M=1 K=1024 bf16 at N=512 takes
// 10 us on one thread and 6 us on two, at N=1024 25 us and 12 us. So a call goes parallel
// once its estimated single-thread time exceeds 10 us per thread (it was 75 us, which left
// the half-size matrices of int8/q4 weights on one thread: decode ran at ~0.6x the speed).
// The estimate is the larger of compute time and weight-streaming time, at conservative rates.
constexpr double kFlopsPerNs = 100.0;       // ~2/3 of one core's FMA peak
constexpr double kWeightBytesPerNs = 25.0;  // bf16/f32 W from L3; DRAM is slower still
constexpr double kMinNsPerThread = 10e3;

// --- Scalar kernel ----------------------------------------------------------------------------
// Eight lanes per output (lane l sums k = l, l+8, ...), then the tree
// ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).

constexpr int kScalarLanes = 8;
constexpr int kScalarRows = 4;

inline float WeightAt(const float* w, int64_t i) { return w[i]; }
inline float WeightAt(const uint16_t* w, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(w[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline float ReduceLanes(const float* a) {
  float s4[4], s2[2];
  for (int i = 0; i < 4; ++i) s4[i] = a[i] + a[i + 4];
  for (int i = 0; i < 2; ++i) s2[i] = s4[i] + s4[i + 2];
  return s2[0] + s2[1];
}

// Up to kScalarRows W rows against one x row.
template <typename WT>
void ScalarTile(const float* x, const WT* w, int64_t ldw, int nr, int64_t k, float* y,
                bool accumulate) {
  float acc[kScalarRows][kScalarLanes] = {};
  int64_t kk = 0;
  for (; kk + kScalarLanes <= k; kk += kScalarLanes) {
    for (int j = 0; j < nr; ++j) {
      const WT* wr = w + j * ldw + kk;
      for (int l = 0; l < kScalarLanes; ++l) acc[j][l] += x[kk + l] * WeightAt(wr, l);
    }
  }
  for (int j = 0; j < nr; ++j) {
    for (int l = 0; kk + l < k; ++l) acc[j][l] += x[kk + l] * WeightAt(w + j * ldw + kk, l);
    const float s = ReduceLanes(acc[j]);
    y[j] = accumulate ? y[j] + s : s;
  }
}

template <typename WT>
void GemmScalarTyped(const MatMulParams& p, const WT* w, int64_t n_begin, int64_t n_end) {
  const int64_t k = CpuMat(p.w)->cols, ldw = CpuMat(p.w)->ld;
  for (int64_t n = n_begin; n < n_end; n += kScalarRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kScalarRows, n_end - n));
    for (int64_t m = 0; m < p.m; ++m) {
      ScalarTile(p.x + m * p.ldx, w + n * ldw, ldw, nr, k, p.y + m * p.ldy + n, p.accumulate);
    }
  }
}

void GemmScalar(const MatMulParams& p, int64_t n_begin, int64_t n_end) {
  if (CpuMat(p.w)->dtype == DType::kBF16) {
    GemmScalarTyped(p, static_cast<const uint16_t*>(CpuMat(p.w)->data), n_begin, n_end);
  } else {
    GemmScalarTyped(p, static_cast<const float*>(CpuMat(p.w)->data), n_begin, n_end);
  }
}

// --- Dispatch ---------------------------------------------------------------------------------

int64_t UnpackedScratchFloats(int64_t k) { return kGemmScratchRows * ((k + 15) / 16 * 16); }

// Per-thread scratch, grown on demand and kept for the thread's lifetime (pool threads are
// long-lived, so steady-state calls never allocate).
float* ThreadScratch(int64_t floats) {
  thread_local std::vector<float> buf;
  const size_t need = static_cast<size_t>(floats + 16);
  if (buf.size() < need) buf.assign(need, 0.0f);
  const uintptr_t a = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((a + 63) & ~uintptr_t{63});
}

// Called only on the packed paths (the minimums live in the ISA translation units).
int64_t PackedScratchFloats(Isa isa, int64_t k) {
  return std::max<int64_t>(kPackedXFloats, isa == Isa::kAvx512 ? GemmPackedMinScratchFloats(k)
                                                               : GemmPackedAvx2MinScratchFloats(k));
}

void RunPacked(Isa isa, const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
               int64_t floats, int64_t* next_pair, int64_t grab) {
  if (isa == Isa::kAvx512) {
    GemmPackedAvx512(p, n_begin, n_end, scratch, floats, next_pair, grab);
  } else {
    GemmPackedAvx2(p, n_begin, n_end, scratch, floats, next_pair, grab);
  }
}

void RunRange(Isa isa, const MatMulParams& p, int64_t n_begin, int64_t n_end) {
  if (IsQuantized(CpuMat(p.w)->dtype)) {
    const int64_t floats = QuantScratchFloats(CpuMat(p.w)->cols);
    GemmQuant(isa, p, n_begin, n_end, ThreadScratch(floats), floats, nullptr, 0);
    return;
  }
  if (isa != Isa::kScalar && CpuMat(p.w)->packed != nullptr) {
    const int64_t floats = PackedScratchFloats(isa, CpuMat(p.w)->cols);
    RunPacked(isa, p, n_begin, n_end, ThreadScratch(floats), floats, nullptr, 0);
    return;
  }
  switch (isa) {
    case Isa::kAvx512:
      GemmAvx512(p, n_begin, n_end, ThreadScratch(UnpackedScratchFloats(CpuMat(p.w)->cols)));
      return;
    case Isa::kAvx2:
      GemmAvx2(p, n_begin, n_end, ThreadScratch(UnpackedScratchFloats(CpuMat(p.w)->cols)));
      return;
    case Isa::kScalar:
      GemmScalar(p, n_begin, n_end);
      return;
  }
}

}  // namespace

void Gemm(ThreadPool& pool, Isa isa, const MatMulParams& p) {
  const int64_t m = p.m, n = CpuMat(p.w)->rows, k = CpuMat(p.w)->cols;
  if (m <= 0 || n <= 0) return;
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) *
                       static_cast<double>(std::max<int64_t>(k, 1));
  const double w_bytes =
      CpuMat(p.w)->bytes > 0 ? static_cast<double>(CpuMat(p.w)->bytes)
                     : static_cast<double>(n) * static_cast<double>(k) *
                           static_cast<double>(CpuMat(p.w)->dtype == DType::kF32 ? 4 : 2);
  const double est_ns = std::max(flops / kFlopsPerNs, w_bytes / kWeightBytesPerNs);
  const int64_t want = std::clamp<int64_t>(static_cast<int64_t>(est_ns / kMinNsPerThread), 1,
                                           pool.Threads());
  if (want <= 1) {
    RunRange(isa, p, 0, n);
    return;
  }
  // Quantized weights exist only in their packed layout, on every ISA (gemm_quant.h).
  const bool quant = IsQuantized(CpuMat(p.w)->dtype);
  const bool packed = quant || (isa != Isa::kScalar && CpuMat(p.w)->packed != nullptr);
  const int64_t grain = packed ? kPackedGrain : kGrain;
  const int64_t units = (n + grain - 1) / grain;
  if (units < want && m >= 8 * want) {
    // Narrow N, tall M: split rows instead (multiples of 4 keep the row tiles full).
    const int64_t rows_per = ((m + want - 1) / want + 3) / 4 * 4;
    pool.ParallelFor(m, rows_per, [&](int64_t b, int64_t e) {
      MatMulParams q = p;
      q.x += b * p.ldx;
      q.y += b * p.ldy;
      q.m = e - b;
      RunRange(isa, q, 0, n);
    });
    return;
  }
  if (packed && (m >= 4 || quant)) {
    // Blocked packed path (and every quantized call): W pairs are claimed dynamically (see
    // RunBlocked), ~8 claims per thread per M block, so a thread slowed by another tenant on
    // this shared host does not leave the other idle at the end of every op. Each thread
    // packs the x block itself. (Quantized claims are whole quads of four pairs.)
    const int64_t floats = quant ? QuantScratchFloats(k) : PackedScratchFloats(isa, k);
    std::vector<int64_t> next_pair(static_cast<size_t>(m / 6 + 2), 0);  // >= M blocks
    int64_t grab = std::max<int64_t>(1, units / (8 * want));
    if (quant) grab = (grab + 3) / 4 * 4;  // whole quads (gemm_quant.h)
    pool.RunOnAll([&](int t) {
      if (t >= want) return;
      if (quant) {
        GemmQuant(isa, p, 0, n, ThreadScratch(floats), floats, next_pair.data(), grab);
      } else {
        RunPacked(isa, p, 0, n, ThreadScratch(floats), floats, next_pair.data(), grab);
      }
    });
    return;
  }
  const int64_t chunk = (units + want - 1) / want * grain;
  pool.ParallelFor(n, chunk, [&](int64_t b, int64_t e) { RunRange(isa, p, b, e); });
}

size_t PackedGemmBytes(DType dtype, int64_t rows, int64_t cols) {
  const int64_t pairs = (rows + kPackedPair - 1) / kPackedPair;
  const size_t esize = dtype == DType::kF32 ? 4 : 2;
  return static_cast<size_t>(pairs) * static_cast<size_t>(cols) * kPackedPair * esize;
}

int64_t PackedGemmIndex(DType dtype, int64_t row, int64_t col, int64_t cols) {
  const int64_t pair = row / kPackedPair, j = row % kPackedPair;
  // bf16: row j of the pair is the low half of 32-bit word j (slot 2j) for j < 16, else the
  // high half of word j - 16 (slot 2(j - 16) + 1); f32: slot j.
  const int64_t slot = dtype == DType::kF32 ? j : (j < 16 ? 2 * j : 2 * (j - 16) + 1);
  return (pair * cols + col) * kPackedPair + slot;
}

void PackGemmWeights(const CpuMatrix& w, void* dst) {
  const int64_t pairs = (w.rows + kPackedPair - 1) / kPackedPair, k = w.cols;
  // Zero the padding rows of the last pair, then scatter every row (pair by pair, so the
  // writes of one pair stay within a cache-sized window).
  std::memset(dst, 0, PackedGemmBytes(w.dtype, w.rows, w.cols));
  for (int64_t pi = 0; pi < pairs; ++pi) {
    const int64_t r_end = std::min(w.rows, (pi + 1) * kPackedPair);
    for (int64_t row = pi * kPackedPair; row < r_end; ++row) {
      const int64_t base = PackedGemmIndex(w.dtype, row, 0, k);
      if (w.dtype == DType::kF32) {
        const float* src = static_cast<const float*>(w.data) + row * w.ld;
        float* d = static_cast<float*>(dst) + base;
        for (int64_t kk = 0; kk < k; ++kk) d[kk * kPackedPair] = src[kk];
      } else {
        const uint16_t* src = static_cast<const uint16_t*>(w.data) + row * w.ld;
        uint16_t* d = static_cast<uint16_t*>(dst) + base;
        for (int64_t kk = 0; kk < k; ++kk) d[kk * kPackedPair] = src[kk];
      }
    }
  }
}

}  // namespace xlstmd::kernels::cpu
