// The q4 code word and its activation side (gemm_quant.h has the layout and the arithmetic):
// plain scalar code shared by the portable kernel (gemm_quant.cc) and the ISA drivers, so
// that every path computes the same x' and group offsets operation for operation.
//
// Everything is in an anonymous namespace (as in simd.h): each includer compiles its own
// copy with its own flags, and the linker can never hand an AVX-512 build of these to code
// that runs on an older CPU. Keep every expression here free of a * b + c: GCC's C++ default
// (-ffp-contract=fast) would fuse it into an FMA in the -mfma files only, and the paths would
// stop being bit-identical.
#ifndef XLSTMD_KERNELS_CPU_GEMM_QUANT_Q4_H_
#define XLSTMD_KERNELS_CPU_GEMM_QUANT_Q4_H_

#include <cstdint>

namespace xlstmd::kernels::cpu {
namespace {

// k steps per code word: nibble i of a 32-bit word holds the code of k = 8 * block + i.
constexpr int kQ4Nibbles = 8;
constexpr int64_t kQ4GroupK = 32;

// The bits of nibble i. Masked (not shifted down), the word read as int32 is the code times
// 16^i: an exact f32 integer below 2^31, and for i = 7 the sign bit is the code's own, which
// is why that nibble holds the signed code and the others the code plus 8.
inline uint32_t Q4NibbleMask(int i) { return 0xFu << (4 * i); }

// x' = x * 16^-i undoes the 16^i of the masked word exactly (a power of two), so
// fma(x', float(masked word), s) adds the same product as x * stored code would, for every x
// whose x' is a normal float (|x| >= 2^-98 at nibble 7); below that x' rounds, the same way on
// every path. (A non-finite x makes every column of its row NaN: the offset is then inf or NaN
// too.)
inline float Q4XScale(int i) {
  static constexpr float kScale[kQ4Nibbles] = {1.0f,     0x1p-4f,  0x1p-8f,  0x1p-12f,
                                               0x1p-16f, 0x1p-20f, 0x1p-24f, 0x1p-28f};
  return kScale[i];
}

// The offset a group's sum starts from: -8 times the sum of the group's x at nibbles 0-6
// (the ones stored as code + 8), in this fixed tree: per nibble i, (x[i] + x[8 + i]) +
// (x[16 + i] + x[24 + i]) (x past k counts as +0), then ((a0 + a1) + (a2 + a3)) +
// ((a4 + a5) + a6). One tree for every ISA and M keeps the results bit-identical.
inline float Q4GroupOffset(const float* x, int64_t k, int64_t g) {
  const int64_t k0 = g * kQ4GroupK;
  float a[kQ4Nibbles - 1];
  if (k0 + kQ4GroupK <= k) {
    for (int i = 0; i < kQ4Nibbles - 1; ++i) {
      const float* p = x + k0 + i;
      a[i] = (p[0] + p[8]) + (p[16] + p[24]);
    }
  } else {
    for (int i = 0; i < kQ4Nibbles - 1; ++i) {
      float t[4];
      for (int q = 0; q < 4; ++q) {
        const int64_t kk = k0 + 8 * q + i;
        t[q] = kk < k ? x[kk] : 0.0f;
      }
      a[i] = (t[0] + t[1]) + (t[2] + t[3]);
    }
  }
  return -8.0f * (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + a[6]));
}

// One row of x prepared for q4: x'[kk] = x[kk] * Q4XScale(kk % 8), and the offsets of its
// groups.
inline void Q4PrepareRow(const float* x, int64_t k, float* xs, float* offsets) {
  int64_t kk = 0;
  for (; kk + kQ4Nibbles <= k; kk += kQ4Nibbles) {
    for (int i = 0; i < kQ4Nibbles; ++i) xs[kk + i] = x[kk + i] * Q4XScale(i);
  }
  for (; kk < k; ++kk) xs[kk] = x[kk] * Q4XScale(static_cast<int>(kk % kQ4Nibbles));
  const int64_t groups = (k + kQ4GroupK - 1) / kQ4GroupK;
  for (int64_t g = 0; g < groups; ++g) offsets[g] = Q4GroupOffset(x, k, g);
}

}  // namespace
}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_GEMM_QUANT_Q4_H_
