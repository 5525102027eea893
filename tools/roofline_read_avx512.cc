// AVX-512 multi-stream read kernel for the DRAM bandwidth limit (roofline_kernels.h).
#include <immintrin.h>

#include "tools/roofline_kernels.h"

namespace xlstmd::tools {
namespace {

constexpr size_t kStreams = 4;
constexpr size_t kLineFloats = 16;

// Stored and summed by hand: GCC 12's _mm512_reduce_add_ps trips -Wuninitialized.
float HorizontalSum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0;
  for (float x : lanes) s += x;
  return s;
}

}  // namespace

float ReadStreamsAvx512(const float* base, size_t floats) {
  const size_t part = floats / kStreams;
  const float* s0 = base;
  const float* s1 = base + part;
  const float* s2 = base + 2 * part;
  const float* s3 = base + 3 * part;
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
  __m512 a3 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
  __m512 b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
  for (size_t i = 0; i + 2 * kLineFloats <= part; i += 2 * kLineFloats) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(s0 + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(s1 + i));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(s2 + i));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(s3 + i));
    b0 = _mm512_add_ps(b0, _mm512_load_ps(s0 + i + kLineFloats));
    b1 = _mm512_add_ps(b1, _mm512_load_ps(s1 + i + kLineFloats));
    b2 = _mm512_add_ps(b2, _mm512_load_ps(s2 + i + kLineFloats));
    b3 = _mm512_add_ps(b3, _mm512_load_ps(s3 + i + kLineFloats));
  }
  const __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                                   _mm512_add_ps(_mm512_add_ps(b0, b1), _mm512_add_ps(b2, b3)));
  return HorizontalSum(sum);
}

}  // namespace xlstmd::tools
