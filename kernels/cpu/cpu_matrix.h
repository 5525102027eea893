// The CPU backend's weight matrix: what the opaque kernels::WeightMatrix handle points to
// when the CPU backend made it.
#ifndef XLSTMD_KERNELS_CPU_CPU_MATRIX_H_
#define XLSTMD_KERNELS_CPU_CPU_MATRIX_H_

#include <cstddef>
#include <cstdint>

#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {

// `data` is row-major [rows, ld] in `dtype`; `packed` is an optional copy in a faster layout.
// A matrix may keep only `packed` (`data` == nullptr): the AVX-512 and AVX2 backends do for
// float weights (gemm.h), and every CPU backend does for quantized ones (gemm_quant.h).
struct CpuMatrix final : WeightMatrix {
  CpuMatrix() = default;
  CpuMatrix(DType dtype_, int64_t rows_, int64_t cols_, int64_t ld_, void* data_, void* packed_,
            size_t bytes_)
      : dtype(dtype_), rows(rows_), cols(cols_), ld(ld_), data(data_), packed(packed_),
        bytes(bytes_) {}

  DType dtype = DType::kF32;  // storage dtype of `data` (or the quantized format)
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ld = 0;             // row stride of `data` in elements (>= cols)
  void* data = nullptr;
  void* packed = nullptr;
  size_t bytes = 0;           // bytes owned (data + packed)
};

// Internal linkage on purpose: the ISA translation units include this (CMakeLists.txt).
namespace {
inline const CpuMatrix* CpuMat(const WeightMatrix* w) { return static_cast<const CpuMatrix*>(w); }
}  // namespace

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_CPU_MATRIX_H_
