// AVX2 register pieces of the quantized GEMM: the AVX2 twin of gemm_quant_avx512.cc, with
// tiles sized for 16 ymm registers (blocked: 6 x-rows x 16 columns; streamed: two pairs for
// one x row, else one). Results are bit-identical to the AVX-512 and scalar kernels.
//
// Compiled with -mavx2 -mfma -mf16c and entered only after run-time dispatch: everything but
// the entry points is in an anonymous namespace.

#include <cstdint>

#include "kernels/cpu/gemm_quant_driver.h"
#include "kernels/cpu/simd.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {
namespace {

struct Avx2Quant {
  using S = Avx2Vec;
  static constexpr int kStrip = 6;  // 12 accumulators, two W vectors, one broadcast
  static int64_t StreamPairs(int mr) { return mr == 1 ? 2 : 1; }

  static void UnpackI8(const int8_t* row, __m256* v) {
    for (int i = 0; i < 4; ++i) {
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 8 * i));
      v[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    }
  }
  // Bytes 0-7 hold columns 0-7 (low nibbles) and 16-23 (high); bytes 8-15 hold 8-15 and 24-31.
  static void UnpackQ4(const uint8_t* row, __m256* v) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row));
    const __m256i b0 = _mm256_cvtepi8_epi32(raw);
    const __m256i b1 = _mm256_cvtepi8_epi32(_mm_srli_si128(raw, 8));
    v[0] = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(b0, 28), 28));
    v[1] = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(b1, 28), 28));
    v[2] = _mm256_cvtepi32_ps(_mm256_srai_epi32(b0, 4));
    v[3] = _mm256_cvtepi32_ps(_mm256_srai_epi32(b1, 4));
  }
  static void ScalesI8(const float* p, __m256* v) {
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(p + 8 * i);
  }
  static void ScalesQ4(const uint16_t* p, __m256* v) {
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8 * i)));
    }
  }
};

}  // namespace

int64_t GemmQuantAvx2MinScratchFloats(int64_t k) { return QMinScratchFloats<Avx2Quant>(k); }

void GemmQuantAvx2(const MatMulParams& p, int64_t n_begin, int64_t n_end, float* scratch,
                   int64_t scratch_floats, int64_t* next_pair, int64_t grab) {
  QRun<Avx2Quant>(p, n_begin, n_end, scratch, scratch_floats, next_pair, grab);
}

}  // namespace xlstmd::kernels::cpu
