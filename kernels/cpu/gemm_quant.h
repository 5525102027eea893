// The CPU backend's quantized weight layout and GEMM (kernels/quant.h has the formats).
//
// Arithmetic, the same on every ISA (scalar, AVX2, AVX-512), so results are bit-identical
// across ISAs as well as batch invariant: for output element (m, n),
//   acc = +0
//   for each group g of k (kQ4: 32 consecutive k; kI8: all of k, one group):
//     kI8: s = +0;  for k in g in order: s = fma(x[m, k], float(q[n, k]), s)
//     kQ4: s = offset(x[m], g);  for k in g in order: s = fma(x'[m, k], w[n, k], s)
//     acc = fma(s, scale[n, g], acc)
//   y = acc, or y + acc when accumulating.
// Folding the scale in once per group (not per element) keeps decode, which is bound by
// weight bytes, from becoming bound by the conversion work instead.
// kQ4 (gemm_quant_q4.h has the exact definitions): with i = k % 8, w[n, k] is the code word
// masked to nibble i and read as int32 (the stored code times 16^i), x' = x * 16^-i, so each
// product is exactly the one of x times the stored code; nibbles 0-6 store code + 8, and
// offset(x, g) = -8 * (a fixed-tree sum of the group's x at those nibbles) takes the 8 back
// out. This is what lets a code become an f32 with one AND and one convert in registers
// (AVX2 batch-1 q4 decode went from 1.7x to 2.3-2.6x bf16 against sign-extending shifts),
// at the cost of one x' row per call.
//
// Packed layout (every CPU ISA reads this one; there is no row-major copy). Output rows come
// in "pairs" of 32 as in the float layout (gemm.h), and four pairs (128 rows) form a "quad"
// whose codes are interleaved per k, so that a decode tile of four pairs reads one sequential
// stream (measured: four separate pair streams left ~25% of the DRAM bandwidth unused on the
// 1024-row matrices of a decode step). Rows past the matrix are zero.
//   kI8: per quad, [k][4 pairs][32] int8 codes (byte j of a pair: row j), then [4 pairs][32]
//        f32 scales.
//   kQ4: per quad, per group of 32 k: [4 blocks of 8 k][4 pairs][32] little-endian uint32
//        code words (word j of a pair: row j; nibble i: k = 8 * block + i, holding the
//        4-bit two's-complement code for i = 7 and code + 8 for i < 7), then [4 pairs][32]
//        f16 scales: 2304 bytes per (quad, group). Words past k are 0.
#ifndef XLSTMD_KERNELS_CPU_GEMM_QUANT_H_
#define XLSTMD_KERNELS_CPU_GEMM_QUANT_H_

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cpu/cpu_matrix.h"
#include "kernels/op_params.h"
#include "kernels/quant.h"

namespace xlstmd::kernels::cpu {

inline constexpr int64_t kQuantPairRows = 32;

// Bytes of one quad, and of the whole packed matrix.
int64_t QuantQuadBytes(DType dtype, int64_t cols);
size_t QuantPackedBytes(DType dtype, int64_t rows, int64_t cols);
// Fills `dst` (QuantPackedBytes bytes) from a validated canonical matrix.
void PackQuantized(const QuantizedMatrixView& src, void* dst);

// y = x W^T (+ y) for a quantized W (CpuMatrix::packed in the layout above), columns [n_begin,
// n_end) (n_begin a multiple of 32). `scratch` (64-byte aligned, QuantScratchFloats(k)
// floats or more) is private to the calling thread. With `next_pair` (one zeroed counter per
// M block shared by the threads of the call; one for M <= 3) pairs are claimed `grab` at a
// time.
int64_t QuantScratchFloats(int64_t k);
void GemmQuant(Isa isa, const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
               int64_t scratch_floats, int64_t* next_pair, int64_t grab);

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_GEMM_QUANT_H_
