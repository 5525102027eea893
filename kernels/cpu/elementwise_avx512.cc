// AVX-512 versions of the transcendental-heavy row loops (soft-cap tanh, SwiGLU, the sigmoid
// output gate) and a vector exp for the chunkwise mLSTM.
//
// Why: with libm's scalar expf/tanhf these loops cost ~5-10 ns per element, which at batch 64
// is the largest non-GEMM cost of a decode step (the logit soft cap alone is 64 x 50304 tanh
// per step) and a visible share of prefill (SwiGLU over 2048 x 2752 per block).
//
// Accuracy: exp(x) = 2^n * e^r with n = round(x / ln 2), r = x - n ln 2 (two-constant
// Cody-Waite reduction, |r| <= ln2 / 2) and e^r from its Taylor series to r^7 (truncation
// < 1e-8 relative); 2^n is applied with vscalefps, which overflows to +inf and underflows
// through the subnormals to 0 exactly as the true result would. expm1 uses the same
// reduction with the series' constant term dropped, so it keeps full relative accuracy near
// 0, where tanh needs it. Measured against double references in tests/kernels: within the
// 1e-6 pointwise tolerance that libm's versions are held to.
//
// Every function is lane-wise (no lane sees another), and row tails use masked loads and
// stores of the same vector code, so an element's result depends only on its inputs: batch
// invariance holds as for the scalar loops. Results differ from the scalar (libm) path by an
// ulp or two; which path runs is fixed per process by the backend's ISA.
//
// Compiled with AVX-512 flags and only entered after run-time dispatch: everything except
// the entry points is in an anonymous namespace (see kernels/CMakeLists.txt).

#include <cstdint>

#include "kernels/cpu/simd.h"

namespace xlstmd::kernels::cpu {
namespace {

constexpr int kLanes = 16;

// Shared argument reduction: n = round(x log2 e), r = x - n ln 2 in two FMA steps (ln 2 split
// into its float value and the remainder; FMA keeps n * hi exact inside the subtraction).
inline void Reduce(__m512 x, __m512& n, __m512& r) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512 ln2_hi = _mm512_set1_ps(0.693147182464599609375f);
  const __m512 ln2_lo = _mm512_set1_ps(-1.904654299957768e-09f);
  n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm512_fnmadd_ps(n, ln2_hi, x);
  r = _mm512_fnmadd_ps(n, ln2_lo, r);
}

// e^r - 1 for |r| <= ln2 / 2: r * (1 + r/2 + r^2/6 + ... + r^6/5040), Horner form.
inline __m512 Expm1Poly(__m512 r) {
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_mul_ps(p, r);
}

// Inputs are clamped to [-104, 89] first: beyond it the float result is 0 or +inf anyway,
// and the clamp keeps n finite. NaN passes through.
inline __m512 Clamp(__m512 x) {
  return _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
}

inline __m512 Exp(__m512 x) {
  __m512 n, r;
  Reduce(Clamp(x), n, r);
  const __m512 e = _mm512_add_ps(Expm1Poly(r), _mm512_set1_ps(1.0f));
  const __m512 y = _mm512_scalef_ps(e, n);
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

// e^x - 1 for x <= 0 (all tanh needs): 2^n (p + 1) - 1 = 2^n p + (2^n - 1), which is p
// itself (full relative accuracy) when n = 0.
inline __m512 Expm1NonPositive(__m512 x) {
  __m512 n, r;
  Reduce(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), n, r);
  const __m512 p = Expm1Poly(r);
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_add_ps(_mm512_scalef_ps(p, n), _mm512_sub_ps(_mm512_scalef_ps(one, n), one));
}

// tanh(y) = sign(y) * -t / (t + 2) with t = expm1(-2|y|) in (-1, 0]: no overflow, and
// relative accuracy near 0 comes from expm1.
inline __m512 Tanh(__m512 y) {
  const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(0x80000000u)));
  const __m512 a = _mm512_andnot_ps(sign, y);
  const __m512 t = Expm1NonPositive(_mm512_mul_ps(a, _mm512_set1_ps(-2.0f)));
  const __m512 th = _mm512_div_ps(_mm512_sub_ps(_mm512_setzero_ps(), t),
                                  _mm512_add_ps(t, _mm512_set1_ps(2.0f)));
  const __m512 out = _mm512_or_ps(th, _mm512_and_ps(sign, y));
  return _mm512_mask_mov_ps(out, _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q), y);  // NaN stays NaN
}

// 1 / (1 + e^-x), the scalar path's formula.
inline __m512 Sigmoid(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

}  // namespace

// x[c] = cap > 0 ? cap * tanh((x[c] + b[c]) / cap) : x[c] + b[c] for c < n; b may be null.
void BiasSoftCapRowAvx512(float* x, const float* b, int64_t n, float cap) {
  const __m512 capv = _mm512_set1_ps(cap);
  for (int64_t c = 0; c < n; c += kLanes) {
    const __mmask16 m = TailMask(n - c);
    __m512 v = _mm512_maskz_loadu_ps(m, x + c);
    if (b != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, b + c));
    if (cap > 0.0f) v = _mm512_mul_ps(capv, Tanh(_mm512_div_ps(v, capv)));
    _mm512_mask_storeu_ps(x + c, m, v);
  }
}

// y[c] = g[c] / (1 + exp(-g[c])) * u[c].
void SwiGluRowAvx512(const float* g, const float* u, float* y, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t c = 0; c < n; c += kLanes) {
    const __mmask16 m = TailMask(n - c);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + c);
    const __m512 den = _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), gv)));
    _mm512_mask_storeu_ps(y + c, m, _mm512_mul_ps(_mm512_div_ps(gv, den),
                                                  _mm512_maskz_loadu_ps(m, u + c)));
  }
}

// y[c] = ((h[c] - mean) * inv * w[c] (+ b[c])) * sigmoid(o[c]): HeadNormGate's output loop.
void NormGateRowAvx512(const float* h, const float* o, const float* w, const float* b,
                       float mean, float inv, float* y, int64_t n) {
  const __m512 meanv = _mm512_set1_ps(mean), invv = _mm512_set1_ps(inv);
  for (int64_t c = 0; c < n; c += kLanes) {
    const __mmask16 m = TailMask(n - c);
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, h + c), meanv),
                                           invv),
                             _mm512_maskz_loadu_ps(m, w + c));
    if (b != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, b + c));
    _mm512_mask_storeu_ps(y + c, m,
                          _mm512_mul_ps(v, Sigmoid(_mm512_maskz_loadu_ps(m, o + c))));
  }
}

// x[c] = exp(x[c]).
void ExpRowAvx512(float* x, int64_t n) {
  for (int64_t c = 0; c < n; c += kLanes) {
    const __mmask16 m = TailMask(n - c);
    _mm512_mask_storeu_ps(x + c, m, Exp(_mm512_maskz_loadu_ps(m, x + c)));
  }
}

}  // namespace xlstmd::kernels::cpu
