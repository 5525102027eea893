// Scalar double-precision references for the backend ops (kernels/op_params.h), plus
// independent bit-level reference conversions, for kernel tests. Everything here is written
// for clarity, not speed, and shares no code with the kernels it checks.
//
// Shapes follow op_params.h; inputs are read with the given row strides, and every result is
// returned densely packed ([rows, cols] with stride cols) in double.
#ifndef XLSTMD_TESTS_TESTING_REFERENCE_OPS_H_
#define XLSTMD_TESTS_TESTING_REFERENCE_OPS_H_

#include <cstdint>
#include <vector>

namespace xlstmd::testing {

// f32 -> bf16 bits, round to nearest, ties to even, chosen by comparing distances in double.
// NaN maps to a NaN (any payload); overflow past the largest bf16 goes to infinity.
uint16_t ReferenceF32ToBf16(float f);
float ReferenceBf16ToF32(uint16_t b);
// Value of an IEEE binary16 bit pattern, computed with ldexp.
float ReferenceF16ToF32(uint16_t h);
// f rounded to the nearest bf16 value, as float.
inline float RoundToBf16(float f) { return ReferenceBf16ToF32(ReferenceF32ToBf16(f)); }

// y[m, n] = sum_k x[m, k] * w[n, k], and abs_sum[m, n] = sum_k |x[m, k] * w[n, k]| (the scale
// that float rounding errors are measured against). Both [m, n] dense.
struct MatMulReference {
  std::vector<double> y;
  std::vector<double> abs_sum;
};
MatMulReference ReferenceMatMul(const float* x, int64_t m, int64_t k, int64_t ldx,
                                const float* w, int64_t n, int64_t ldw);

// x / sqrt(mean(x^2) + eps) * w (+ b), per row.
std::vector<double> ReferenceRmsNorm(const float* x, int64_t rows, int64_t dim, int64_t ldx,
                                     const float* w, const float* b, double eps);

// cap > 0 ? cap * tanh((x + b) / cap) : x + b; b may be null.
std::vector<double> ReferenceBiasSoftCap(const float* x, int64_t rows, int64_t cols,
                                         int64_t ldx, const float* b, double cap);

// gate / (1 + exp(-gate)) * up.
std::vector<double> ReferenceSwiGlu(const float* gate, const float* up, int64_t rows,
                                    int64_t dim, int64_t ld_in);

// Per head: LayerNorm without affine (biased variance, eps inside the sqrt), * w (+ b),
// * sigmoid(o).
std::vector<double> ReferenceHeadNormGate(const float* h, const float* o, const float* w,
                                          const float* b, int64_t rows, int64_t heads,
                                          int64_t dh, int64_t ldh, int64_t ldo, double eps);

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_TESTING_REFERENCE_OPS_H_
