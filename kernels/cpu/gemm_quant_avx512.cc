// AVX-512 register pieces of the quantized GEMM (gemm_quant_driver.h holds the tiling,
// gemm_quant.h the layout and arithmetic). Codes become exact f32 integers with one
// sign-extending load and a convert (int8), or one load, shifts that split the two
// sign-extended nibbles of each byte, and two converts (q4). Results are bit-identical to the
// AVX2 and scalar kernels.
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
  static int64_t StreamPairs(int mr) { return mr == 1 ? 4 : 2; }

  static void UnpackI8(const int8_t* row, __m512* v) {
    for (int i = 0; i < 2; ++i) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * i));
      v[i] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
    }
  }
  // Byte j: row j in the low nibble (columns 0-15), row 16 + j in the high one (16-31).
  // vpermps looks a 4-bit two's-complement code up in a 16-entry table of its f32 value,
  // using only the index's low 4 bits: the low nibble needs no masking, the high one a shift,
  // and neither a convert (measured: the shift/convert sequence bound decode by ALU work).
  static void UnpackQ4(const uint8_t* row, __m512* v) {
    const __m512 table = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
    const __m512i b =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row)));
    v[0] = _mm512_permutexvar_ps(b, table);
    v[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), table);
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
