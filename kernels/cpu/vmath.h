// Vector exp, expm1, tanh and sigmoid, and the pointwise row loops built on them (logit soft
// cap, SwiGLU, the mLSTM output gate, exp rows), written once over simd.h's vector types and
// compiled per ISA (elementwise_avx512.cc, elementwise_avx2.cc).
//
// Why: with libm's scalar expf/tanhf these loops cost ~5-10 ns per element, which at batch 64
// is the largest non-GEMM cost of a decode step (the logit soft cap alone is 64 x 50304 tanh
// per step) and a visible share of prefill (SwiGLU over 2048 x 2752 per block).
//
// Accuracy: exp(x) = 2^n * e^r with n = round(x / ln 2), r = x - n ln 2 (two-constant
// Cody-Waite reduction, |r| <= ln2 / 2) and e^r from its Taylor series to r^7 (truncation
// < 1e-8 relative); 2^n is applied by S::Scale2, which overflows to +inf and underflows
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
// Included only by ISA files after simd.h (internal linkage throughout; see simd.h).
#ifndef XLSTMD_KERNELS_CPU_VMATH_H_
#define XLSTMD_KERNELS_CPU_VMATH_H_

#include "kernels/cpu/simd.h"

namespace xlstmd::kernels::cpu {
namespace {

// Shared argument reduction: n = round(x log2 e), r = x - n ln 2 in two FMA steps (ln 2 split
// into its float value and the remainder; FMA keeps n * hi exact inside the subtraction).
template <typename S>
inline void Reduce(typename S::V x, typename S::V& n, typename S::V& r) {
  n = S::RoundNearest(S::Mul(x, S::Set(1.44269504088896341f)));
  r = S::Fnma(n, S::Set(0.693147182464599609375f), x);
  r = S::Fnma(n, S::Set(-1.904654299957768e-09f), r);
}

// e^r - 1 for |r| <= ln2 / 2: r * (1 + r/2 + r^2/6 + ... + r^6/5040), Horner form.
template <typename S>
inline typename S::V Expm1Poly(typename S::V r) {
  typename S::V p = S::Set(1.0f / 5040.0f);
  p = S::Fma(p, r, S::Set(1.0f / 720.0f));
  p = S::Fma(p, r, S::Set(1.0f / 120.0f));
  p = S::Fma(p, r, S::Set(1.0f / 24.0f));
  p = S::Fma(p, r, S::Set(1.0f / 6.0f));
  p = S::Fma(p, r, S::Set(0.5f));
  p = S::Fma(p, r, S::Set(1.0f));
  return S::Mul(p, r);
}

// Inputs are clamped to [-104, 89] first: beyond it the float result is 0 or +inf anyway, and
// the clamp keeps n in [-150, 128]. NaN passes through.
template <typename S>
inline typename S::V Exp(typename S::V x) {
  typename S::V n, r;
  Reduce<S>(S::Min(S::Max(x, S::Set(-104.0f)), S::Set(89.0f)), n, r);
  const typename S::V e = S::Add(Expm1Poly<S>(r), S::Set(1.0f));
  return S::KeepNan(S::Scale2(e, n), x);
}

// e^x - 1 for x <= 0 (all tanh needs): 2^n (p + 1) - 1 = 2^n p + (2^n - 1), which is p
// itself (full relative accuracy) when n = 0.
template <typename S>
inline typename S::V Expm1NonPositive(typename S::V x) {
  typename S::V n, r;
  Reduce<S>(S::Max(x, S::Set(-104.0f)), n, r);
  const typename S::V one = S::Set(1.0f);
  return S::Add(S::Scale2(Expm1Poly<S>(r), n), S::Sub(S::Scale2(one, n), one));
}

// tanh(y) = sign(y) * -t / (t + 2) with t = expm1(-2|y|) in (-1, 0]: no overflow, and
// relative accuracy near 0 comes from expm1.
template <typename S>
inline typename S::V Tanh(typename S::V y) {
  const typename S::V t = Expm1NonPositive<S>(S::Mul(S::Abs(y), S::Set(-2.0f)));
  const typename S::V th = S::Div(S::Sub(S::Zero(), t), S::Add(t, S::Set(2.0f)));
  return S::KeepNan(S::Or(th, S::SignOf(y)), y);  // NaN stays NaN
}

// 1 / (1 + e^-x), the scalar path's formula.
template <typename S>
inline typename S::V Sigmoid(typename S::V x) {
  const typename S::V one = S::Set(1.0f);
  return S::Div(one, S::Add(one, Exp<S>(S::Sub(S::Zero(), x))));
}

// x[c] = cap > 0 ? cap * tanh((x[c] + b[c]) / cap) : x[c] + b[c] for c < n; b may be null.
template <typename S>
void BiasSoftCapRow(float* x, const float* b, int64_t n, float cap) {
  const typename S::V capv = S::Set(cap);
  for (int64_t c = 0; c < n; c += S::kLanes) {
    const auto t = S::MakeTail(static_cast<int>(Min(n - c, S::kLanes)));
    typename S::V v = S::Load(x + c, t);
    if (b != nullptr) v = S::Add(v, S::Load(b + c, t));
    if (cap > 0.0f) v = S::Mul(capv, Tanh<S>(S::Div(v, capv)));
    S::Store(x + c, v, t);
  }
}

// y[c] = g[c] / (1 + exp(-g[c])) * u[c].
template <typename S>
void SwiGluRow(const float* g, const float* u, float* y, int64_t n) {
  const typename S::V one = S::Set(1.0f);
  for (int64_t c = 0; c < n; c += S::kLanes) {
    const auto t = S::MakeTail(static_cast<int>(Min(n - c, S::kLanes)));
    const typename S::V gv = S::Load(g + c, t);
    const typename S::V den = S::Add(one, Exp<S>(S::Sub(S::Zero(), gv)));
    S::Store(y + c, S::Mul(S::Div(gv, den), S::Load(u + c, t)), t);
  }
}

// y[c] = ((h[c] - mean) * inv * w[c] (+ b[c])) * sigmoid(o[c]): HeadNormGate's output loop.
template <typename S>
void NormGateRow(const float* h, const float* o, const float* w, const float* b, float mean,
                 float inv, float* y, int64_t n) {
  const typename S::V meanv = S::Set(mean), invv = S::Set(inv);
  for (int64_t c = 0; c < n; c += S::kLanes) {
    const auto t = S::MakeTail(static_cast<int>(Min(n - c, S::kLanes)));
    typename S::V v = S::Mul(S::Mul(S::Sub(S::Load(h + c, t), meanv), invv), S::Load(w + c, t));
    if (b != nullptr) v = S::Add(v, S::Load(b + c, t));
    S::Store(y + c, S::Mul(v, Sigmoid<S>(S::Load(o + c, t))), t);
  }
}

// x[c] = x[c] / (1 + exp(-x[c])) (SiLU, SwiGLU's formula), in place.
template <typename S>
void SiluRow(float* x, int64_t n) {
  const typename S::V one = S::Set(1.0f);
  for (int64_t c = 0; c < n; c += S::kLanes) {
    const auto t = S::MakeTail(static_cast<int>(Min(n - c, S::kLanes)));
    const typename S::V v = S::Load(x + c, t);
    S::Store(x + c, S::Div(v, S::Add(one, Exp<S>(S::Sub(S::Zero(), v)))), t);
  }
}

// x[c] = exp(x[c]).
template <typename S>
void ExpRow(float* x, int64_t n) {
  for (int64_t c = 0; c < n; c += S::kLanes) {
    const auto t = S::MakeTail(static_cast<int>(Min(n - c, S::kLanes)));
    S::Store(x + c, Exp<S>(S::Load(x + c, t)), t);
  }
}

}  // namespace
}  // namespace xlstmd::kernels::cpu

// The four entry points an ISA file exports (declared in elementwise.cc and mlstm_cpu.cc),
// e.g. XLSTMD_VMATH_ENTRY_POINTS(Avx2, Avx2Vec) defines SwiGluRowAvx2 and the rest. Used inside
// namespace xlstmd::kernels::cpu.
#define XLSTMD_VMATH_ENTRY_POINTS(SUFFIX, VEC)                                              \
  void BiasSoftCapRow##SUFFIX(float* x, const float* b, int64_t n, float cap) {             \
    BiasSoftCapRow<VEC>(x, b, n, cap);                                                      \
  }                                                                                         \
  void SwiGluRow##SUFFIX(const float* g, const float* u, float* y, int64_t n) {             \
    SwiGluRow<VEC>(g, u, y, n);                                                             \
  }                                                                                         \
  void NormGateRow##SUFFIX(const float* h, const float* o, const float* w, const float* b, \
                           float mean, float inv, float* y, int64_t n) {                    \
    NormGateRow<VEC>(h, o, w, b, mean, inv, y, n);                                          \
  }                                                                                         \
  void ExpRow##SUFFIX(float* x, int64_t n) { ExpRow<VEC>(x, n); }                         \
  void SiluRow##SUFFIX(float* x, int64_t n) { SiluRow<VEC>(x, n); }

#endif  // XLSTMD_KERNELS_CPU_VMATH_H_
