// The pointwise row loops of vmath.h (vector exp/tanh/sigmoid) compiled for AVX2 + FMA.
//
// Compiled with AVX2 + FMA flags and only entered after run-time dispatch: everything except
// the entry points is in an anonymous namespace (see kernels/CMakeLists.txt).

#include <cstdint>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/vmath.h"

namespace xlstmd::kernels::cpu {

void BiasSoftCapRowAvx2(float* x, const float* b, int64_t n, float cap) {
  BiasSoftCapRow<Avx2Vec>(x, b, n, cap);
}
void SwiGluRowAvx2(const float* g, const float* u, float* y, int64_t n) {
  SwiGluRow<Avx2Vec>(g, u, y, n);
}
void NormGateRowAvx2(const float* h, const float* o, const float* w, const float* b,
                       float mean, float inv, float* y, int64_t n) {
  NormGateRow<Avx2Vec>(h, o, w, b, mean, inv, y, n);
}
void ExpRowAvx2(float* x, int64_t n) { ExpRow<Avx2Vec>(x, n); }

}  // namespace xlstmd::kernels::cpu
