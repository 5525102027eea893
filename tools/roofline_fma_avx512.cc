// AVX-512 register-resident FMA loop for the compute peak limit (roofline_kernels.h).
#include <immintrin.h>

#include "tools/roofline_kernels.h"

namespace xlstmd::tools {
namespace {

constexpr int kAccumulators = 12;

}  // namespace

float FmaLoopAvx512(int64_t iterations) {
  // acc = acc * m + c converges to c / (1 - m) = 1: no overflow, no denormals.
  const __m512 m = _mm512_set1_ps(0.999f);
  const __m512 c = _mm512_set1_ps(0.001f);
  __m512 acc[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kAccumulators; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kAccumulators; ++i) sum = _mm512_add_ps(sum, acc[i]);
  alignas(64) float lanes[16];  // not _mm512_reduce_add_ps: GCC 12 -Wuninitialized
  _mm512_store_ps(lanes, sum);
  return lanes[0] + lanes[15];
}

}  // namespace xlstmd::tools
