// CPU matrix multiply y = x W^T (+ y) with run-time ISA dispatch.
//
// W is f32 or bf16 (row-major [n, k]); x and y are f32, accumulation is f32. Every output
// element is reduced in an order that depends only on k (never on m, the tile it falls in, or
// the thread split), so a row's result is bit-identical whatever else is in the batch.
#ifndef XLSTMD_KERNELS_CPU_GEMM_H_
#define XLSTMD_KERNELS_CPU_GEMM_H_

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {

void Gemm(ThreadPool& pool, Isa isa, const MatMulParams& p);

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_GEMM_H_
