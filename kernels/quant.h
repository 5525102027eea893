// Quantized weight formats: how a float matrix becomes codes and scales, and the canonical
// row-major host layout that `xlstm quantize` stores and Backend::UploadQuantized reads.
//
// Two formats, after llama.cpp's Q8_0 / Q4_0 (symmetric, no zero point):
// - kI8: one f32 scale per output row, s = max|w| / 127, q = round(w / s) in [-127, 127].
// - kQ4: one f16 scale per group of kQ4Group consecutive elements of a row (along K), with
//   d = (the element of largest magnitude, signed) / -8 rounded to f16, q = round(w / d)
//   clamped to [-8, 7], so the extreme element maps to -8 exactly and the 16 levels are used
//   on both sides.
// The value a kernel multiplies by is defined per group, not per element (see gemm_quant.h):
// y = sum over groups g of  scale_g * (sum over k in g of x[k] * q[k]).
//
// Canonical host layout (row-major, rows padded to whole groups for kQ4):
//   kI8: codes int8 [rows][cols]; scales f32 [rows].
//   kQ4: codes uint8 [rows][Q4RowBytes(cols)]: element k of a row in byte k / 2, the low nibble
//        for even k, each a 4-bit two's-complement value in [-8, 7]; the padding elements of
//        the last group are 0. Scales: f16 bits [rows][Q4Groups(cols)].
// Quantizing is deterministic and portable (no ISA-specific code), so a matrix quantized at
// load and the same matrix read back from `xlstm quantize` output are bit-identical.
#ifndef XLSTMD_KERNELS_QUANT_H_
#define XLSTMD_KERNELS_QUANT_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels {

inline constexpr int64_t kQ4Group = 32;

inline int64_t Q4Groups(int64_t cols) { return (cols + kQ4Group - 1) / kQ4Group; }
inline int64_t Q4RowBytes(int64_t cols) { return Q4Groups(cols) * (kQ4Group / 2); }

// Bytes of codes / scales per row in the canonical layout (0 for a non-quantized dtype).
size_t QuantCodeBytesPerRow(DType dtype, int64_t cols);
size_t QuantScaleBytesPerRow(DType dtype, int64_t cols);

// A quantized matrix in host memory, canonical layout (above).
struct QuantizedMatrixView {
  DType dtype;         // kI8 or kQ4
  int64_t rows;
  int64_t cols;
  const void* codes;   // rows * QuantCodeBytesPerRow bytes
  const void* scales;  // rows * QuantScaleBytesPerRow bytes
};

// Quantizes one row of `cols` floats into `codes` / `scales` (one row's worth of each).
// INVALID_ARGUMENT for a non-finite element (naming its column), or a dtype that is not
// quantized.
absl::Status QuantizeRow(DType dtype, const float* w, int64_t cols, void* codes, void* scales);

// INVALID_ARGUMENT unless `m` is well formed: a quantized dtype, non-negative shape, non-null
// pointers when non-empty, every scale finite, and (kQ4) the padding codes zero.
absl::Status ValidateQuantized(const QuantizedMatrixView& m);

// The code of element (row, col) as an integer, and the scale that applies to it.
int QuantCodeAt(const QuantizedMatrixView& m, int64_t row, int64_t col);
float QuantScaleAt(const QuantizedMatrixView& m, int64_t row, int64_t col);

// IEEE binary16 <-> f32 (round to nearest even; NaN stays NaN, overflow becomes inf).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
// bfloat16 <-> f32: bf16 is the high half of the f32 (exact one way); to bf16 rounds to
// nearest even, and a NaN stays NaN (quiet bit set, sign and high payload kept) instead of
// rounding into infinity.
float Bf16ToFloat(uint16_t b);
uint16_t FloatToBf16(float f);
// Converts `cols` elements of f32/bf16/f16 `src` into `dst_dtype` (kF32 or kBF16): the row
// conversion of every backend's weight upload.
void ConvertFloatRow(const void* src, DType src_dtype, DType dst_dtype, int64_t cols, void* dst);

}  // namespace xlstmd::kernels

#endif  // XLSTMD_KERNELS_QUANT_H_
