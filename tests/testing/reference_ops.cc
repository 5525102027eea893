#include "tests/testing/reference_ops.h"

#include <bit>
#include <cmath>
#include <limits>

namespace xlstmd::testing {

float ReferenceBf16ToF32(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

uint16_t ReferenceF32ToBf16(float f) {
  if (std::isnan(f)) return std::signbit(f) ? 0xFFC0 : 0x7FC0;
  // The two bf16 neighbours of f: truncation (toward zero) and the next one away from zero.
  const uint16_t down = static_cast<uint16_t>(std::bit_cast<uint32_t>(f) >> 16);
  if (ReferenceBf16ToF32(down) == f) return down;
  const uint16_t up = static_cast<uint16_t>(down + 1);  // may step to +-inf: fine
  double hi = ReferenceBf16ToF32(up);
  if (std::isinf(hi)) {
    // Rounding treats infinity as the value one bf16 step past the largest finite one.
    hi = std::ldexp(std::signbit(f) ? -1.0 : 1.0, 128);
  }
  const double d_down = std::fabs(static_cast<double>(f) - ReferenceBf16ToF32(down));
  const double d_up = std::fabs(hi - static_cast<double>(f));
  if (d_down < d_up) return down;
  if (d_up < d_down) return up;
  return (down & 1) == 0 ? down : up;  // tie: the even mantissa
}

float ReferenceF16ToF32(uint16_t h) {
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  const int exp = (h >> 10) & 0x1F;
  const int mant = h & 0x3FF;
  if (exp == 0x1F) {
    return mant == 0 ? static_cast<float>(sign * std::numeric_limits<double>::infinity())
                     : std::numeric_limits<float>::quiet_NaN();
  }
  if (exp == 0) return static_cast<float>(sign * std::ldexp(mant, -24));
  return static_cast<float>(sign * std::ldexp(1024 + mant, exp - 25));
}

MatMulReference ReferenceMatMul(const float* x, int64_t m, int64_t k, int64_t ldx,
                                const float* w, int64_t n, int64_t ldw) {
  MatMulReference r{std::vector<double>(m * n), std::vector<double>(m * n)};
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, a = 0;
      for (int64_t t = 0; t < k; ++t) {
        const double p = static_cast<double>(x[i * ldx + t]) * w[j * ldw + t];
        s += p;
        a += std::fabs(p);
      }
      r.y[i * n + j] = s;
      r.abs_sum[i * n + j] = a;
    }
  }
  return r;
}

std::vector<double> ReferenceRmsNorm(const float* x, int64_t rows, int64_t dim, int64_t ldx,
                                     const float* w, const float* b, double eps) {
  std::vector<double> y(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < dim; ++c) ss += static_cast<double>(x[r * ldx + c]) * x[r * ldx + c];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t c = 0; c < dim; ++c) {
      y[r * dim + c] = x[r * ldx + c] * inv * w[c] + (b != nullptr ? b[c] : 0.0);
    }
  }
  return y;
}

std::vector<double> ReferenceBiasSoftCap(const float* x, int64_t rows, int64_t cols,
                                         int64_t ldx, const float* b, double cap) {
  std::vector<double> y(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double v = static_cast<double>(x[r * ldx + c]) + (b != nullptr ? b[c] : 0.0);
      y[r * cols + c] = cap > 0 ? cap * std::tanh(v / cap) : v;
    }
  }
  return y;
}

std::vector<double> ReferenceSwiGlu(const float* gate, const float* up, int64_t rows,
                                    int64_t dim, int64_t ld_in) {
  std::vector<double> y(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < dim; ++c) {
      const double g = gate[r * ld_in + c];
      y[r * dim + c] = g / (1.0 + std::exp(-g)) * up[r * ld_in + c];
    }
  }
  return y;
}

std::vector<double> ReferenceHeadNormGate(const float* h, const float* o, const float* w,
                                          const float* b, int64_t rows, int64_t heads,
                                          int64_t dh, int64_t ldh, int64_t ldo, double eps) {
  const int64_t width = heads * dh;
  std::vector<double> y(rows * width);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < heads; ++j) {
      const float* hh = h + r * ldh + j * dh;
      double mean = 0, var = 0;
      for (int64_t c = 0; c < dh; ++c) mean += hh[c];
      mean /= dh;
      for (int64_t c = 0; c < dh; ++c) var += (hh[c] - mean) * (hh[c] - mean);
      var /= dh;
      const double inv = 1.0 / std::sqrt(var + eps);
      for (int64_t c = 0; c < dh; ++c) {
        const int64_t col = j * dh + c;
        const double norm = (hh[c] - mean) * inv * w[col] + (b != nullptr ? b[col] : 0.0);
        const double gate = 1.0 / (1.0 + std::exp(-static_cast<double>(o[r * ldo + col])));
        y[r * width + col] = norm * gate;
      }
    }
  }
  return y;
}

}  // namespace xlstmd::testing
