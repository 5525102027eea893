// AVX-512 register pieces of the quantized GEMM (gemm_quant_driver.h holds the tiling,
// gemm_quant.h the layout and arithmetic). Codes become exact f32 integers with one
// sign-extending load and a convert (int8), or an AND and a convert (q4). Results are
// bit-identical to the AVX2 and scalar kernels.
//
// Compiled with AVX-512 flags and entered only after run-time dispatch: everything but the
// entry points is in an anonymous namespace.

#include <cstdint>

#include "kernels/cpu/gemm_quant_driver.h"
#include "kernels/cpu/simd.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {
namespace {

struct Avx512Quant {
  using S = Avx512Vec;
  static constexpr int kStrip = 12;  // 24 accumulators, two W vectors, one broadcast
  static int64_t StreamPairs(int mr, bool) { return mr == 1 ? 4 : 2; }
  static constexpr int kQ4RegPairs = 4;

  static void UnpackI8(const int8_t* row, __m512* v) {
    for (int i = 0; i < 2; ++i) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * i));
      v[i] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
    }
  }
  // Word j holds column j: one AND and one convert per 16 codes (gemm_quant_q4.h).
  static void UnpackQ4(const uint32_t* words, int i, __m512* v) {
    const __m512i mask = _mm512_set1_epi32(static_cast<int>(Q4NibbleMask(i)));
    for (int t = 0; t < 2; ++t) {
      v[t] = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_loadu_si512(words + 16 * t), mask));
    }
  }
  static void ScalesI8(const float* p, __m512* v) {
    v[0] = _mm512_loadu_ps(p);
    v[1] = _mm512_loadu_ps(p + 16);
  }
  static void ScalesQ4(const uint16_t* p, __m512* v) {
    for (int i = 0; i < 2; ++i) {
      v[i] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16 * i)));
    }
  }
};

}  // namespace

int64_t GemmQuantAvx512MinScratchFloats(int64_t k) { return QMinScratchFloats<Avx512Quant>(k); }

void GemmQuantAvx512(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
                     int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  QRun<Avx512Quant>(p, n_begin, n_end, scratch, scratch_floats, next_pair, grab);
}

}  // namespace xlstmd::kernels::cpu
