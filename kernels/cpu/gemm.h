// CPU matrix multiply y = x W^T (+ y) with run-time ISA dispatch.
//
// W is f32 or bf16 (row-major [n, k]); x and y are f32, accumulation is f32. Every output
// element is reduced in an order that depends only on k (never on m, the tile it falls in, or
// the thread split), so a row's result is bit-identical whatever else is in the batch.
#ifndef XLSTMD_KERNELS_CPU_GEMM_H_
#define XLSTMD_KERNELS_CPU_GEMM_H_

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cpu/cpu_matrix.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {

void Gemm(ThreadPool& pool, Isa isa, const MatMulParams& p);

// The AVX-512 kernel's packed copy of W (CpuMatrix::packed): pairs of 16-row panels,
// [ceil(rows / 32)][cols][32] in W's dtype, zero-padded; for bf16 the two panels of a pair
// are interleaved per 32-bit word (row j in the low half, row 16 + j in the high half).
// Gemm uses it on the AVX-512 path when present; other ISAs read `data`. The AVX-512 CPU
// backend keeps only this copy (`data` is nullptr), so its weight memory is not doubled.
size_t PackedGemmBytes(DType dtype, int64_t rows, int64_t cols);
// Fills `dst` (PackedGemmBytes bytes) from w.data.
void PackGemmWeights(const CpuMatrix& w, void* dst);
// Element index of W[row, col] inside the packed copy of a matrix with `cols` columns.
int64_t PackedGemmIndex(DType dtype, int64_t row, int64_t col, int64_t cols);

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_GEMM_H_
