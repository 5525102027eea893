// AVX2 register pieces of the quantized GEMM: the AVX2 twin of gemm_quant_avx512.cc, with
// tiles sized for 16 ymm registers (blocked: 6 x-rows x 16 columns; streamed: a quad for one
// x row, else one pair). Results are bit-identical to the AVX-512 and scalar kernels.
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
  // One x row: a whole quad per tile, read in one pass (a two-pair tile reads every other
  // line of the quad's stream: int8 measured 1.23x bf16 against 1.50x); q4 holds two of its
  // pairs in registers at a time (its masks need registers too: four spilled).
  static int64_t StreamPairs(int mr, bool) { return mr == 1 ? 4 : 1; }
  static constexpr int kQ4RegPairs = 2;

  static void UnpackI8(const int8_t* row, __m256* v) {
    for (int i = 0; i < 4; ++i) {
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 8 * i));
      v[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    }
  }
  // Word j holds column j: one AND (a constant mask once the caller's nibble loop is
  // unrolled) and one convert per 8 codes, against two sign-extensions, six shifts and four
  // converts per 32 for nibbles packed two to a byte.
  static void UnpackQ4(const uint32_t* words, int i, __m256* v) {
    const __m256i mask = _mm256_set1_epi32(static_cast<int>(Q4NibbleMask(i)));
    for (int t = 0; t < 4; ++t) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + 8 * t));
      v[t] = _mm256_cvtepi32_ps(_mm256_and_si256(w, mask));
    }
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
