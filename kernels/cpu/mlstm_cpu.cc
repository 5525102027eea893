// mLSTM cell on the CPU (xlstm-spec.md 2.1 recurrent step, 2.3 chunkwise form).
//
// Work is split over (session, head) pairs: each pair owns its slice of the state, so the
// split never changes the arithmetic (batch invariance). The inner loops run over the value
// dimension and are compiled for several ISAs with GCC target clones; the clone is picked
// once per process by the CPU, which keeps results reproducible on one machine.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/mlstm_cpu.h"

namespace xlstmd::kernels::cpu {
namespace {

#if defined(__x86_64__) && !defined(__clang__)
#define XLSTMD_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define XLSTMD_CLONES
#endif

// Stable log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)).
inline float LogSigmoid(float x) { return std::min(x, 0.0f) - std::log1p(std::exp(-std::fabs(x))); }

// y[c] += a * x[c]
XLSTMD_CLONES void Axpy(float* __restrict y, const float* __restrict x, float a, int64_t n) {
  for (int64_t c = 0; c < n; ++c) y[c] += a * x[c];
}

XLSTMD_CLONES float Dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  // Eight partial sums in a fixed order: vectorisable, and deterministic per ISA clone.
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int l = 0; l < 8; ++l) s[l] += a[c + l] * b[c + l];
  for (; c < n; ++c) s[0] += a[c] * b[c];
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

// One step of one head. C [dqk, dv], n [dqk], m scalar are updated in place; h [dv] out.
// C is updated and read out in a single pass (it is the dominant memory traffic in decode).
XLSTMD_CLONES void StepHead(const float* q, const float* k, const float* v, float it, float ft,
                            float* C, float* n, float* m, float* h, const MlstmDims& d) {
  const float lf = LogSigmoid(ft);
  const float m_old = *m;
  const float m_new = std::max(lf + m_old, it);
  const float fa = std::exp(lf + m_old - m_new);
  const float ia = std::exp(it - m_new);
  std::fill(h, h + d.dv, 0.0f);
  float qn = 0.0f;
  for (int64_t a = 0; a < d.dqk; ++a) {
    float* row = C + a * d.dv;
    const float ka = ia * k[a];
    const float qa = q[a] * d.q_scale;
    for (int64_t c = 0; c < d.dv; ++c) {
      row[c] = fa * row[c] + ka * v[c];
      h[c] += qa * row[c];
    }
    n[a] = fa * n[a] + ia * k[a];
    qn += qa * n[a];
  }
  const float den = std::max(std::fabs(qn), std::exp(-m_new)) + d.eps;
  const float inv = 1.0f / den;
  for (int64_t c = 0; c < d.dv; ++c) h[c] *= inv;
  *m = m_new;
}

// Per-thread scratch for one chunk of one head.
struct ChunkScratch {
  std::vector<float> b, a, mrow, winter, logd, qk, num, den;
  void Resize(int64_t L, int64_t dv) {
    b.resize(L);
    a.resize(L);
    mrow.resize(L);
    winter.resize(L);
    logd.resize(L * L);
    qk.resize(L * L);
    num.resize(L * dv);
    den.resize(L);
  }
};

struct HeadIo {
  const float *q, *k, *v, *i, *f;
  float* h;
  int64_t ldq, ldk, ldv, ldi, ldf, ldh;
};

// Outputs of one chunk of Lc rows starting at the HeadIo's base pointers, from boundary state
// (C, n, m); then advances the boundary state past the chunk.
void ChunkHead(const HeadIo& io, int64_t Lc, float* C, float* n, float* m, const MlstmDims& d,
               ChunkScratch& s) {
  const int64_t dqk = d.dqk, dv = d.dv;
  // Local cumulative log forget gates.
  float acc = 0.0f;
  for (int64_t r = 0; r < Lc; ++r) {
    acc += LogSigmoid(io.f[r * io.ldf]);
    s.b[r] = acc;
  }
  const float g = s.b[Lc - 1];
  const float m_k = *m;
  for (int64_t r = 0; r < Lc; ++r) {
    float mi = -INFINITY;
    for (int64_t c = 0; c <= r; ++c) {
      const float ld = s.b[r] - s.b[c] + io.i[c * io.ldi];
      s.logd[r * Lc + c] = ld;
      mi = std::max(mi, ld);
    }
    const float m_inter = s.b[r] + m_k;
    s.mrow[r] = std::max(m_inter, mi);
    s.winter[r] = std::exp(m_inter - s.mrow[r]);
  }
  // Inter-chunk part: w_inter * (q_r/sqrt(dqk))^T C_k and the matching n term.
  for (int64_t r = 0; r < Lc; ++r) {
    const float* qr = io.q + r * io.ldq;
    float* nr = s.num.data() + r * dv;
    std::fill(nr, nr + dv, 0.0f);
    for (int64_t a = 0; a < dqk; ++a) Axpy(nr, C + a * dv, qr[a] * d.q_scale, dv);
    const float w = s.winter[r];
    for (int64_t c = 0; c < dv; ++c) nr[c] *= w;
    s.den[r] = w * Dot(qr, n, dqk) * d.q_scale;
  }
  // Intra-chunk part: P[r, c] = exp(logD - m_r) * q_r . k_c / sqrt(dqk).
  for (int64_t r = 0; r < Lc; ++r) {
    const float* qr = io.q + r * io.ldq;
    float* nr = s.num.data() + r * dv;
    float dsum = 0.0f;
    for (int64_t c = 0; c <= r; ++c) {
      const float p = std::exp(s.logd[r * Lc + c] - s.mrow[r]) *
                      (Dot(qr, io.k + c * io.ldk, dqk) * d.q_scale);
      dsum += p;
      Axpy(nr, io.v + c * io.ldv, p, dv);
    }
    const float den = s.den[r] + dsum;
    const float inv = 1.0f / (std::max(std::fabs(den), std::exp(-s.mrow[r])) + d.eps);
    float* hr = io.h + r * io.ldh;
    for (int64_t c = 0; c < dv; ++c) hr[c] = nr[c] * inv;
  }
  // Boundary state update.
  float m_next = g + m_k;
  for (int64_t r = 0; r < Lc; ++r) {
    s.a[r] = g - s.b[r] + io.i[r * io.ldi];
    m_next = std::max(m_next, s.a[r]);
  }
  const float decay = std::exp(g + m_k - m_next);
  for (int64_t r = 0; r < Lc; ++r) s.a[r] = std::exp(s.a[r] - m_next);
  for (int64_t a = 0; a < dqk; ++a) {
    float* row = C + a * dv;
    for (int64_t c = 0; c < dv; ++c) row[c] *= decay;
    float na = n[a] * decay;
    for (int64_t r = 0; r < Lc; ++r) {
      const float w = s.a[r] * io.k[r * io.ldk + a];
      Axpy(row, io.v + r * io.ldv, w, dv);
      na += w;
    }
    n[a] = na;
  }
  *m = m_next;
}

}  // namespace

void MlstmStep(ThreadPool& pool, const MlstmStepParams& p) {
  const MlstmDims d = p.dims;
  const int64_t pairs = p.batch * d.heads;
  pool.ParallelFor(pairs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t x = begin; x < end; ++x) {
      const int64_t b = x / d.heads, j = x % d.heads;
      float* base = p.state.arena + p.slots[b] * p.state.slot_stride;
      StepHead(p.q + b * p.ldq + j * d.dqk, p.k + b * p.ldk + j * d.dqk,
               p.v + b * p.ldv + j * d.dv, p.i[b * p.ldi + j], p.f[b * p.ldf + j],
               base + p.state.c_offset + j * d.dqk * d.dv, base + p.state.n_offset + j * d.dqk,
               base + p.state.m_offset + j, p.h + b * p.ldh + j * d.dv, d);
    }
  });
}

void MlstmChunkwise(ThreadPool& pool, const MlstmChunkParams& p) {
  const MlstmDims d = p.dims;
  const int64_t L = std::max<int64_t>(1, p.chunk_size);
  const int64_t pairs = p.num_seqs * d.heads;
  pool.ParallelFor(pairs, 1, [&](int64_t begin, int64_t end) {
    ChunkScratch s;
    s.Resize(L, d.dv);
    for (int64_t x = begin; x < end; ++x) {
      const int64_t sq = x / d.heads, j = x % d.heads;
      const int64_t len = p.length[sq], r0 = p.row_begin[sq];
      if (len <= 0) continue;
      float* base = p.state.arena + p.slots[sq] * p.state.slot_stride;
      float* C = base + p.state.c_offset + j * d.dqk * d.dv;
      float* n = base + p.state.n_offset + j * d.dqk;
      float* m = base + p.state.m_offset + j;
      for (int64_t t0 = 0; t0 < len; t0 += L) {
        const int64_t row = r0 + t0;
        const HeadIo io{p.q + row * p.ldq + j * d.dqk, p.k + row * p.ldk + j * d.dqk,
                        p.v + row * p.ldv + j * d.dv,  p.i + row * p.ldi + j,
                        p.f + row * p.ldf + j,         p.h + row * p.ldh + j * d.dv,
                        p.ldq, p.ldk, p.ldv, p.ldi, p.ldf, p.ldh};
        ChunkHead(io, std::min(L, len - t0), C, n, m, d, s);
      }
    }
  });
}

}  // namespace xlstmd::kernels::cpu
