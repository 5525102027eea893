// Row-wise ops in plain float32. Every row is computed by the same sequence of operations
// whatever the other rows are, so the ops are batch invariant; the row split across threads
// only changes who computes a row. Reductions use eight interleaved partial sums (lane l
// takes elements l, l+8, ...) and a fixed tree: a fixed order like the GEMM's, and about
// 8x smaller rounding error than one running sum. On the AVX-512 and AVX2 ISAs the pointwise
// loops with exp/tanh (soft cap, SwiGLU, the output gate) run the vector math of vmath.h
// instead of calling libm per element, which made them the largest non-GEMM cost of batched
// decode.
#include "kernels/cpu/elementwise.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>

#include "kernels/cpu/gemm.h"

namespace xlstmd::kernels::cpu {

// elementwise_avx512.cc / elementwise_avx2.cc (vmath.h; entered only on their ISA).
void BiasSoftCapRowAvx512(float* x, const float* b, int64_t n, float cap);
void SwiGluRowAvx512(const float* g, const float* u, float* y, int64_t n);
void NormGateRowAvx512(const float* h, const float* o, const float* w, const float* b,
                       float mean, float inv, float* y, int64_t n);
void BiasSoftCapRowAvx2(float* x, const float* b, int64_t n, float cap);
void SwiGluRowAvx2(const float* g, const float* u, float* y, int64_t n);
void NormGateRowAvx2(const float* h, const float* o, const float* w, const float* b,
                     float mean, float inv, float* y, int64_t n);

namespace {

// Splitting rows across the pool pays once the call outweighs the hand-off. A sleeping
// worker takes ~55-60 us to wake (see gemm.cc), but inside a forward pass the worker is
// still spinning from the previous op (ThreadPool's 200 us spin), so the hand-off costs a
// few us; at ~1 ns per element, 32K elements (~30 us) is where two threads start to win.
// This puts the batch-64 row ops (64 x 1024: RmsNorm, HeadNormGate, Embed) on both threads,
// which the previous 128K threshold kept on one while the other spun.
constexpr int64_t kMinParallelElems = 1 << 15;
constexpr int kLanes = 8;

void ForRows(ThreadPool& pool, int64_t rows, int64_t row_elems,
             const std::function<void(int64_t, int64_t)>& fn) {
  if (rows <= 0) return;
  if (rows == 1 || rows * row_elems < kMinParallelElems) {
    fn(0, rows);
    return;
  }
  pool.ParallelFor(rows, 1, fn);
}

float ReduceLanes(const float* a) {
  float s4[4], s2[2];
  for (int i = 0; i < 4; ++i) s4[i] = a[i] + a[i + 4];
  for (int i = 0; i < 2; ++i) s2[i] = s4[i] + s4[i + 2];
  return s2[0] + s2[1];
}

float Sum(const float* x, int64_t n) {
  float acc[kLanes] = {};
  for (int64_t i = 0; i < n; ++i) acc[i % kLanes] += x[i];
  return ReduceLanes(acc);
}

// sum_i (x[i] - shift)^2
float SumSquares(const float* x, int64_t n, float shift) {
  float acc[kLanes] = {};
  for (int64_t i = 0; i < n; ++i) {
    const float d = x[i] - shift;
    acc[i % kLanes] += d * d;
  }
  return ReduceLanes(acc);
}

float Bf16ToF32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Upstream's act_fn choices for a gated FFN; gelu is the exact erf form (PyTorch's default).
float GluActivation(GluAct act, float g) {
  switch (act) {
    case GluAct::kSilu:
      return g / (1.0f + std::exp(-g));
    case GluAct::kGelu:
      return 0.5f * g * (1.0f + std::erf(g * 0.70710678118654752f));
    case GluAct::kRelu:
      return g > 0.0f ? g : 0.0f;
    case GluAct::kReluSq:
      return g > 0.0f ? g * g : 0.0f;
    case GluAct::kSigmoid:
      return Sigmoid(g);
    case GluAct::kSelu: {
      constexpr float kAlpha = 1.6732632423543772f, kScale = 1.0507009873554805f;
      return kScale * (g > 0.0f ? g : kAlpha * std::expm1(g));
    }
  }
  return g;
}

float GateActivation(GateAct act, float o) {
  switch (act) {
    case GateAct::kSigmoid:
      return Sigmoid(o);
    case GateAct::kSilu:
      return o / (1.0f + std::exp(-o));
    case GateAct::kNone:
      return 1.0f;
  }
  return 1.0f;
}

}  // namespace

void RmsNorm(ThreadPool& pool, const RmsNormParams& p) {
  ForRows(pool, p.rows, p.dim, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = p.x + r * p.ldx;
      float* y = p.y + r * p.ldy;
      const float n = static_cast<float>(p.dim);
      // LayerNorm: the biased variance around the mean (HeadNormGate's formula).
      const float mean = p.center ? Sum(x, p.dim) / n : 0.0f;
      const float mean_sq = SumSquares(x, p.dim, mean) / n;
      const float inv = 1.0f / std::sqrt(mean_sq + p.eps);
      // Read-then-write per element, so y may alias x.
      if (p.b != nullptr) {
        for (int64_t c = 0; c < p.dim; ++c) y[c] = (x[c] - mean) * inv * p.w[c] + p.b[c];
      } else {
        for (int64_t c = 0; c < p.dim; ++c) y[c] = (x[c] - mean) * inv * p.w[c];
      }
    }
  });
}

// Tables are stored as f32 or bf16 (the CPU backend's storage dtypes).
void Embed(ThreadPool& pool, const EmbedParams& p) {
  const CpuMatrix& t = *CpuMat(p.table);
  const int64_t dim = t.cols;
  ForRows(pool, p.rows, dim, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* y = p.y + r * p.ldy;
      const int64_t row = p.ids[r];
      if (row < 0) {  // padding row
        std::memset(y, 0, static_cast<size_t>(dim) * sizeof(float));
      } else if (t.data == nullptr) {  // packed-only (AVX-512 and AVX2 backends): strided gather
        const int64_t i0 = PackedGemmIndex(t.dtype, row, 0, dim);
        const int64_t step = PackedGemmIndex(t.dtype, row, 1, dim) - i0;
        for (int64_t c = 0; c < dim; ++c) {
          y[c] = t.dtype == DType::kBF16
                     ? Bf16ToF32(static_cast<const uint16_t*>(t.packed)[i0 + c * step])
                     : static_cast<const float*>(t.packed)[i0 + c * step];
        }
      } else if (t.dtype == DType::kBF16) {
        const uint16_t* src = static_cast<const uint16_t*>(t.data) + row * t.ld;
        for (int64_t c = 0; c < dim; ++c) y[c] = Bf16ToF32(src[c]);
      } else {
        const float* src = static_cast<const float*>(t.data) + row * t.ld;
        std::memcpy(y, src, static_cast<size_t>(dim) * sizeof(float));
      }
    }
  });
}

void BiasSoftCap(ThreadPool& pool, const BiasSoftCapParams& p, Isa isa) {
  ForRows(pool, p.rows, p.cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* x = p.x + r * p.ldx;
      if (isa != Isa::kScalar) {
        (isa == Isa::kAvx512 ? BiasSoftCapRowAvx512 : BiasSoftCapRowAvx2)(x, p.b, p.cols, p.cap);
        continue;
      }
      if (p.b != nullptr) {
        for (int64_t c = 0; c < p.cols; ++c) x[c] += p.b[c];
      }
      if (p.cap > 0.0f) {
        for (int64_t c = 0; c < p.cols; ++c) x[c] = p.cap * std::tanh(x[c] / p.cap);
      }
    }
  });
}

void SwiGlu(ThreadPool& pool, const SwiGluParams& p, Isa isa) {
  ForRows(pool, p.rows, p.dim, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* g = p.gate + r * p.ld_in;
      const float* u = p.up + r * p.ld_in;
      float* y = p.y + r * p.ldy;
      if (p.act != GluAct::kSilu) {
        for (int64_t c = 0; c < p.dim; ++c) y[c] = GluActivation(p.act, g[c]) * u[c];
        continue;
      }
      if (isa != Isa::kScalar) {
        (isa == Isa::kAvx512 ? SwiGluRowAvx512 : SwiGluRowAvx2)(g, u, y, p.dim);
        continue;
      }
      for (int64_t c = 0; c < p.dim; ++c) {
        const float gc = g[c];
        y[c] = gc / (1.0f + std::exp(-gc)) * u[c];
      }
    }
  });
}

void HeadNormGate(ThreadPool& pool, const HeadNormGateParams& p, Isa isa) {
  const int64_t width = p.heads * p.dh;
  // Family A's form (sigmoid gate, no skip, overwrite) has vector loops; the paper family's
  // forms run the generic loop below.
  const bool family_a = p.gate == GateAct::kSigmoid && p.skip == nullptr && !p.accumulate;
  ForRows(pool, p.rows, width, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < p.heads; ++j) {
        const int64_t c0 = j * p.dh;
        const float* h = p.h + r * p.ldh + c0;
        const float* o = p.gate != GateAct::kNone ? p.o + r * p.ldo + c0 : nullptr;
        const float* w = p.w + c0;
        const float* b = p.b != nullptr ? p.b + c0 : nullptr;
        float* y = p.y + r * p.ldy + c0;
        const float n = static_cast<float>(p.dh);
        const float mean = Sum(h, p.dh) / n;
        const float var = SumSquares(h, p.dh, mean) / n;  // biased, as LayerNorm
        const float inv = 1.0f / std::sqrt(var + p.eps);
        if (!family_a) {
          const float* skip = p.skip != nullptr ? p.skip + c0 : nullptr;
          const float* xs = p.skip != nullptr ? p.xs + r * p.ldxs + c0 : nullptr;
          for (int64_t c = 0; c < p.dh; ++c) {
            float v = (h[c] - mean) * inv * w[c];
            if (b != nullptr) v += b[c];
            if (skip != nullptr) v += skip[c] * xs[c];
            if (o != nullptr) v *= GateActivation(p.gate, o[c]);
            y[c] = p.accumulate ? y[c] + v : v;
          }
          continue;
        }
        if (isa != Isa::kScalar) {
          (isa == Isa::kAvx512 ? NormGateRowAvx512 : NormGateRowAvx2)(h, o, w, b, mean, inv, y,
                                                                      p.dh);
          continue;
        }
        for (int64_t c = 0; c < p.dh; ++c) {
          float v = (h[c] - mean) * inv * w[c];
          if (b != nullptr) v += b[c];
          y[c] = v * Sigmoid(o[c]);
        }
      }
    }
  });
}

void GatherRows(ThreadPool& pool, const GatherRowsParams& p) {
  ForRows(pool, p.n, p.cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      std::memcpy(p.y + r * p.ldy, p.x + static_cast<int64_t>(p.rows[r]) * p.ldx,
                  static_cast<size_t>(p.cols) * sizeof(float));
    }
  });
}

}  // namespace xlstmd::kernels::cpu
