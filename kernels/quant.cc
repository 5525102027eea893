#include "kernels/quant.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace xlstmd::kernels {
namespace {

absl::Status NonFinite(int64_t col) {
  return absl::InvalidArgumentError(
      absl::StrCat("cannot quantize a non-finite weight (column ", col, ")"));
}

absl::Status QuantizeRowI8(const float* w, int64_t cols, int8_t* codes, float* scale) {
  float amax = 0.0f;
  for (int64_t c = 0; c < cols; ++c) {
    if (!std::isfinite(w[c])) return NonFinite(c);
    amax = std::fmax(amax, std::fabs(w[c]));
  }
  const float s = amax / 127.0f;
  *scale = s;
  for (int64_t c = 0; c < cols; ++c) {
    const float q = s > 0.0f ? std::nearbyint(w[c] / s) : 0.0f;
    codes[c] = static_cast<int8_t>(std::fmin(127.0f, std::fmax(-127.0f, q)));
  }
  return absl::OkStatus();
}

absl::Status QuantizeRowQ4(const float* w, int64_t cols, uint8_t* codes, uint16_t* scales) {
  // A zero-column row has no bytes, and its buffer may be a null data(): memset must not see it.
  if (cols > 0) std::memset(codes, 0, static_cast<size_t>(Q4RowBytes(cols)));
  for (int64_t g = 0; g < Q4Groups(cols); ++g) {
    const int64_t c0 = g * kQ4Group, c1 = std::min<int64_t>(cols, c0 + kQ4Group);
    float extreme = 0.0f;  // the element of largest magnitude, with its sign
    for (int64_t c = c0; c < c1; ++c) {
      if (!std::isfinite(w[c])) return NonFinite(c);
      if (std::fabs(w[c]) > std::fabs(extreme)) extreme = w[c];
    }
    const uint16_t dh = FloatToHalf(extreme / -8.0f);
    const float d = HalfToFloat(dh);
    if (!std::isfinite(d)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot quantize to q4: weight ", extreme, " (column ", c0,
          "...) needs a scale beyond the f16 range"));
    }
    scales[g] = dh;
    for (int64_t c = c0; c < c1; ++c) {
      const float q = d != 0.0f ? std::nearbyint(w[c] / d) : 0.0f;
      const int v = static_cast<int>(std::fmin(7.0f, std::fmax(-8.0f, q)));
      const uint8_t nib = static_cast<uint8_t>(v & 0xF);
      codes[c / 2] = static_cast<uint8_t>(codes[c / 2] | (c % 2 == 0 ? nib : nib << 4));
    }
  }
  return absl::OkStatus();
}

}  // namespace

size_t QuantCodeBytesPerRow(DType dtype, int64_t cols) {
  if (dtype == DType::kI8) return static_cast<size_t>(cols);
  if (dtype == DType::kQ4) return static_cast<size_t>(Q4RowBytes(cols));
  return 0;
}

size_t QuantScaleBytesPerRow(DType dtype, int64_t cols) {
  if (dtype == DType::kI8) return sizeof(float);
  if (dtype == DType::kQ4) return static_cast<size_t>(Q4Groups(cols)) * sizeof(uint16_t);
  return 0;
}

absl::Status QuantizeRow(DType dtype, const float* w, int64_t cols, void* codes, void* scales) {
  switch (dtype) {
    case DType::kI8:
      return QuantizeRowI8(w, cols, static_cast<int8_t*>(codes), static_cast<float*>(scales));
    case DType::kQ4:
      return QuantizeRowQ4(w, cols, static_cast<uint8_t*>(codes), static_cast<uint16_t*>(scales));
    default:
      return absl::InvalidArgumentError("QuantizeRow: not a quantized dtype");
  }
}

int QuantCodeAt(const QuantizedMatrixView& m, int64_t row, int64_t col) {
  const auto* base = static_cast<const uint8_t*>(m.codes) +
                     static_cast<size_t>(row) * QuantCodeBytesPerRow(m.dtype, m.cols);
  if (m.dtype == DType::kI8) return static_cast<int8_t>(base[col]);
  const int nib = col % 2 == 0 ? base[col / 2] & 0xF : base[col / 2] >> 4;
  return nib >= 8 ? nib - 16 : nib;
}

float QuantScaleAt(const QuantizedMatrixView& m, int64_t row, int64_t col) {
  if (m.dtype == DType::kI8) return static_cast<const float*>(m.scales)[row];
  return HalfToFloat(
      static_cast<const uint16_t*>(m.scales)[row * Q4Groups(m.cols) + col / kQ4Group]);
}

absl::Status ValidateQuantized(const QuantizedMatrixView& m) {
  if (!IsQuantized(m.dtype)) return absl::InvalidArgumentError("not a quantized dtype");
  if (m.rows < 0 || m.cols < 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad shape [", m.rows, ", ", m.cols, "]"));
  }
  if (m.rows > 0 && m.cols > 0 && (m.codes == nullptr || m.scales == nullptr)) {
    return absl::InvalidArgumentError("null codes or scales");
  }
  if (m.rows == 0 || m.cols == 0) return absl::OkStatus();
  const int64_t per_row = m.dtype == DType::kI8 ? 1 : Q4Groups(m.cols);
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int64_t g = 0; g < per_row; ++g) {
      const float s = QuantScaleAt(m, r, g * kQ4Group);
      if (!std::isfinite(s)) {
        return absl::InvalidArgumentError(
            absl::StrCat("non-finite scale in row ", r, (per_row > 1 ? absl::StrCat(" group ", g) : "")));
      }
    }
    if (m.dtype == DType::kQ4) {
      for (int64_t c = m.cols; c < Q4Groups(m.cols) * kQ4Group; ++c) {
        if (QuantCodeAt(m, r, c) != 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("row ", r, ": q4 padding code past column ", m.cols, " is not zero"));
        }
      }
    }
  }
  return absl::OkStatus();
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal: mant * 2^-24. Shift the leading one up to the implicit-bit position.
    int e = -14;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (static_cast<uint32_t>(e + 127) << 23) | ((mant & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

float Bf16ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

uint16_t FloatToBf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

uint16_t FloatToHalf(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  // 65520 (halfway between 65504 and 2^16) and up round to inf, as does inf itself.
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);
  uint32_t h, rem, half;
  if (a >= 0x38800000u) {  // a normal half (>= 2^-14)
    h = (((a >> 23) - 127 + 15) << 10) | ((a & 0x7FFFFFu) >> 13);
    rem = a & 0x1FFFu;
    half = 0x1000u;
  } else {
    if (a < 0x33000000u) return sign;  // <= 2^-25: rounds to zero (2^-25 ties to even 0)
    // Subnormal half: the value in units of 2^-24, i.e. the f32 significand shifted right.
    const uint32_t e = a >> 23;
    const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    h = m >> shift;
    rem = m & ((1u << shift) - 1u);
    half = 1u << (shift - 1);
  }
  // Round to nearest even; a carry out of the mantissa correctly bumps the exponent.
  if (rem > half || (rem == half && (h & 1u) != 0)) ++h;
  return static_cast<uint16_t>(sign | h);
}

void ConvertFloatRow(const void* src, DType src_dtype, DType dst_dtype, int64_t cols, void* dst) {
  if (src_dtype == dst_dtype) {
    const size_t esize = src_dtype == DType::kF32 ? sizeof(float) : sizeof(uint16_t);
    std::memcpy(dst, src, static_cast<size_t>(cols) * esize);
    return;
  }
  const auto* s16 = static_cast<const uint16_t*>(src);
  if (dst_dtype == DType::kF32) {
    float* d = static_cast<float*>(dst);
    if (src_dtype == DType::kBF16) {
      for (int64_t c = 0; c < cols; ++c) d[c] = Bf16ToFloat(s16[c]);
    } else {
      for (int64_t c = 0; c < cols; ++c) d[c] = HalfToFloat(s16[c]);
    }
    return;
  }
  uint16_t* d = static_cast<uint16_t*>(dst);  // dst_dtype == kBF16
  if (src_dtype == DType::kF32) {
    const float* s = static_cast<const float*>(src);
    for (int64_t c = 0; c < cols; ++c) d[c] = FloatToBf16(s[c]);
  } else {
    for (int64_t c = 0; c < cols; ++c) d[c] = FloatToBf16(HalfToFloat(s16[c]));
  }
}

}  // namespace xlstmd::kernels
