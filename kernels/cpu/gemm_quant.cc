// Packing of quantized weights, the portable scalar kernel (the reference the ISA kernels are
// tested bit-identical against), and dispatch to the ISA kernels.
#include "kernels/cpu/gemm_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/gemm_quant_q4.h"

namespace xlstmd::kernels::cpu {

// ISA entry points (gemm_quant_avx512.cc / gemm_quant_avx2.cc), called only after dispatch.
void GemmQuantAvx512(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
                     int64_t scratch_floats, int64_t* next_pair, int64_t grab);
void GemmQuantAvx2(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
                   int64_t scratch_floats, int64_t* next_pair, int64_t grab);
int64_t GemmQuantAvx512MinScratchFloats(int64_t k);
int64_t GemmQuantAvx2MinScratchFloats(int64_t k);

namespace {

constexpr int64_t kGroup = kQ4Group;
constexpr int64_t kQuad = 4;  // pairs per quad
constexpr int64_t kQ4QuadGroupBytes = kQuad * (kGroup * 16 + kQuantPairRows * 2);  // 2304
constexpr int64_t kXBlockFloats = 256 << 10;  // as kQXFloats in the driver

// Byte offsets inside a quad (gemm_quant.h), for pair pq of the quad, row j of the pair: of
// the int8 code, or of the q4 code word holding k.
int64_t CodeOffset(DType dtype, int64_t pq, int64_t j, int64_t k) {
  if (dtype == DType::kI8) return k * kQuad * kQuantPairRows + pq * kQuantPairRows + j;
  return (k / kGroup) * kQ4QuadGroupBytes + (k % kGroup / kQ4Nibbles) * kQuad * kQuantPairRows * 4 +
         (pq * kQuantPairRows + j) * 4;
}
int64_t ScaleOffset(DType dtype, int64_t pq, int64_t j, int64_t cols, int64_t g) {
  if (dtype == DType::kI8) return cols * kQuad * kQuantPairRows + (pq * kQuantPairRows + j) * 4;
  return g * kQ4QuadGroupBytes + kGroup * kQuad * 16 + (pq * kQuantPairRows + j) * 2;
}

// The factor the kernels multiply x (kI8) or x' (kQ4) by for output row n at k.
float PackedWeight(DType dtype, const char* quad, int64_t pq, int64_t j, int64_t k) {
  const char* p = quad + CodeOffset(dtype, pq, j, k);
  if (dtype == DType::kI8) return static_cast<float>(static_cast<int8_t>(*p));
  uint32_t word;
  std::memcpy(&word, p, sizeof(word));
  return static_cast<float>(
      static_cast<int32_t>(word & Q4NibbleMask(static_cast<int>(k % kQ4Nibbles))));
}

float PackedScale(DType dtype, const char* quad, int64_t pq, int64_t j, int64_t cols, int64_t g) {
  const char* p = quad + ScaleOffset(dtype, pq, j, cols, g);
  if (dtype == DType::kI8) {
    float s;
    std::memcpy(&s, p, sizeof(s));
    return s;
  }
  uint16_t h;
  std::memcpy(&h, p, sizeof(h));
  return HalfToFloat(h);
}

// q4's x' rows and group offsets (gemm_quant_q4.h), prepared once per call.
struct Q4Rows {
  std::vector<float> xs, offsets;
  explicit Q4Rows(const MatMulParams& p) {
    if (CpuMat(p.w)->dtype != DType::kQ4) return;
    const int64_t k = CpuMat(p.w)->cols, groups = Q4Groups(k);
    xs.resize(static_cast<size_t>(p.m * k));
    offsets.resize(static_cast<size_t>(p.m * groups));
    for (int64_t m = 0; m < p.m; ++m) {
      Q4PrepareRow(p.x + m * p.ldx, k, xs.data() + m * k, offsets.data() + m * groups);
    }
  }
};

// The arithmetic of gemm_quant.h spelled out one element at a time.
void GemmQuantScalar(const MatMulParams& p, const Q4Rows& q4rows, int64_t n_begin,
                     int64_t n_end) {
  const DType dtype = CpuMat(p.w)->dtype;
  const int64_t k = CpuMat(p.w)->cols, quad_bytes = QuantQuadBytes(dtype, k);
  const int64_t groups = dtype == DType::kQ4 ? Q4Groups(k) : 1;
  const char* w = static_cast<const char*>(CpuMat(p.w)->packed);
  const bool q4 = dtype == DType::kQ4;
  const std::vector<float>& xs = q4rows.xs;
  const std::vector<float>& offsets = q4rows.offsets;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int64_t pair = n / kQuantPairRows, j = n % kQuantPairRows, pq = pair % kQuad;
    const char* quad = w + (pair / kQuad) * quad_bytes;
    for (int64_t m = 0; m < p.m; ++m) {
      const float* x = q4 ? xs.data() + m * k : p.x + m * p.ldx;
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t k0 = q4 ? g * kGroup : 0;
        const int64_t k1 = q4 ? std::min(k, k0 + kGroup) : k;
        float s = q4 ? offsets[m * groups + g] : 0.0f;
        for (int64_t kk = k0; kk < k1; ++kk) {
          s = std::fma(x[kk], PackedWeight(dtype, quad, pq, j, kk), s);
        }
        acc = std::fma(s, PackedScale(dtype, quad, pq, j, k, g), acc);
      }
      float& y = p.y[m * p.ldy + n];
      y = p.accumulate ? y + acc : acc;
    }
  }
}

}  // namespace

int64_t QuantQuadBytes(DType dtype, int64_t cols) {
  if (dtype == DType::kQ4) return Q4Groups(cols) * kQ4QuadGroupBytes;
  return cols * kQuad * kQuantPairRows + kQuad * kQuantPairRows * 4;
}

size_t QuantPackedBytes(DType dtype, int64_t rows, int64_t cols) {
  const int64_t quads = (rows + kQuad * kQuantPairRows - 1) / (kQuad * kQuantPairRows);
  return static_cast<size_t>(quads) * static_cast<size_t>(QuantQuadBytes(dtype, cols));
}

void PackQuantized(const QuantizedMatrixView& src, void* dst) {
  const DType dtype = src.dtype;
  const int64_t cols = src.cols, quad_bytes = QuantQuadBytes(dtype, cols);
  const size_t bytes = QuantPackedBytes(dtype, src.rows, cols);
  // q4 with no columns packs to nothing, and its buffer may be a null data().
  if (bytes == 0) return;
  std::memset(dst, 0, bytes);
  for (int64_t r = 0; r < src.rows; ++r) {
    const int64_t pair = r / kQuantPairRows, j = r % kQuantPairRows, pq = pair % kQuad;
    char* quad = static_cast<char*>(dst) + (pair / kQuad) * quad_bytes;
    if (dtype == DType::kI8) {
      const auto* codes = static_cast<const int8_t*>(src.codes) + r * cols;
      for (int64_t k = 0; k < cols; ++k) {
        quad[CodeOffset(dtype, pq, j, k)] = static_cast<char>(codes[k]);
      }
      std::memcpy(quad + ScaleOffset(dtype, pq, j, cols, 0),
                  static_cast<const float*>(src.scales) + r, sizeof(float));
      continue;
    }
    for (int64_t k = 0; k < cols; ++k) {
      const int code = QuantCodeAt(src, r, k), i = static_cast<int>(k % kQ4Nibbles);
      const auto nib = static_cast<uint32_t>((i == kQ4Nibbles - 1 ? code : code + 8) & 0xF);
      char* p = quad + CodeOffset(dtype, pq, j, k);
      uint32_t word;
      std::memcpy(&word, p, sizeof(word));
      word |= nib << (4 * i);
      std::memcpy(p, &word, sizeof(word));
    }
    const auto* scales = static_cast<const uint16_t*>(src.scales) + r * Q4Groups(cols);
    for (int64_t g = 0; g < Q4Groups(cols); ++g) {
      std::memcpy(quad + ScaleOffset(dtype, pq, j, cols, g), scales + g, 2);
    }
  }
}

int64_t QuantScratchFloats(int64_t k) {
  return std::max({kXBlockFloats + 8192, GemmQuantAvx512MinScratchFloats(k),
                   GemmQuantAvx2MinScratchFloats(k)});
}

void GemmQuant(Isa isa, const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
               int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  if (CpuMat(p.w)->cols == 0) {
    // No groups: acc stays +0 (only one thread may own a column range; claiming is moot).
    if (next_pair != nullptr && __atomic_fetch_add(next_pair, 1, __ATOMIC_RELAXED) != 0) return;
    for (int64_t m = 0; m < p.m; ++m) {
      for (int64_t n = n_begin; n < n_end; ++n) {
        float& y = p.y[m * p.ldy + n];
        y = p.accumulate ? y + 0.0f : 0.0f;
      }
    }
    return;
  }
  switch (isa) {
    case Isa::kAvx512:
      GemmQuantAvx512(p, n_begin, n_end, scratch, scratch_floats, next_pair, grab);
      return;
    case Isa::kAvx2:
      GemmQuantAvx2(p, n_begin, n_end, scratch, scratch_floats, next_pair, grab);
      return;
    case Isa::kScalar: {
      const Q4Rows q4rows(p);
      if (next_pair != nullptr) {
        // Claimed pairs, as the ISA kernels do (each thread of the call gets here).
        const int64_t p_begin = n_begin / kQuantPairRows;
        const int64_t p_end = (n_end + kQuantPairRows - 1) / kQuantPairRows;
        for (;;) {
          const int64_t b = p_begin + __atomic_fetch_add(next_pair, grab, __ATOMIC_RELAXED);
          if (b >= p_end) return;
          GemmQuantScalar(p, q4rows, b * kQuantPairRows,
                          std::min(n_end, (std::min(p_end, b + grab)) * kQuantPairRows));
        }
      }
      GemmQuantScalar(p, q4rows, n_begin, n_end);
      return;
    }
  }
}

}  // namespace xlstmd::kernels::cpu
