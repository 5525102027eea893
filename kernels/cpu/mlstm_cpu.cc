// mLSTM cell on the CPU (xlstm-spec.md 2.1 recurrent step, 2.3 chunkwise form).
//
// Work is split over (session, head) pairs: each pair owns its slice of the state, so the
// split never changes the arithmetic (batch invariance). The heavy loops (the step's C
// update and read-out, the chunkwise form's small dense products and exps) have AVX-512
// versions in mlstm_avx512.cc / elementwise_avx512.cc, chosen by the backend's ISA; the
// portable loops (mlstm_portable.inc) are compiled twice, scalar here and auto-vectorised for
// AVX2 in mlstm_avx2.cc, and the ISA setting picks one, so XLSTMD_CPU_ISA=scalar runs truly
// scalar code. Results are reproducible on one machine and ISA setting.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/mlstm_cpu.h"

namespace xlstmd::kernels::cpu {

// AVX-512 helpers (mlstm_avx512.cc, elementwise_avx512.cc), entered only after dispatch.
void MatAccAvx512(const float* a, int64_t lda, int64_t rows, int64_t kdim, const float* b,
                  int64_t ldb, int64_t n, float* out, int64_t ldo);
void ExpRowAvx512(float* x, int64_t n);
void ExpRowAvx2(float* x, int64_t n);
float StepCoreAvx512(const float* q, const float* k, const float* v, float fa, float ia, float* C,
                     float* n, float* h, const MlstmDims& d);
// The portable loops compiled for AVX2 + FMA (mlstm_avx2.cc).
float StepCoreAvx2(const float* q, const float* k, const float* v, float fa, float ia, float* C,
                   float* n, float* h, const MlstmDims& d);
void MatAccAvx2(const float* a, int64_t lda, int64_t rows, int64_t kdim, const float* b,
                int64_t ldb, int64_t n, float* out, int64_t ldo, float* row_acc);

namespace {

// The scalar ISA setting runs these loops as plain scalar code: no auto-vectorisation, so it
// really tests the scalar path (a CPU without AVX2 runs exactly this).
namespace scalar {
#pragma GCC push_options
#pragma GCC optimize("no-tree-vectorize", "no-tree-slp-vectorize")
#include "kernels/cpu/mlstm_portable.inc"
#pragma GCC pop_options
}  // namespace scalar

// Stable log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)).
inline float LogSigmoid(float x) { return std::min(x, 0.0f) - std::log1p(std::exp(-std::fabs(x))); }

// One step of one head. C [dqk, dv], n [dqk], m scalar are updated in place; h [dv] out.
void StepHead(Isa isa, const float* q, const float* k, const float* v, float it, float ft,
              float* C, float* n, float* m, float* h, const MlstmDims& d) {
  const float lf = LogSigmoid(ft);
  const float m_old = *m;
  const float m_new = std::max(lf + m_old, it);
  const float fa = std::exp(lf + m_old - m_new);
  const float ia = std::exp(it - m_new);
  const float qn = isa == Isa::kAvx512 ? StepCoreAvx512(q, k, v, fa, ia, C, n, h, d)
                    : isa == Isa::kAvx2  ? StepCoreAvx2(q, k, v, fa, ia, C, n, h, d)
                                         : scalar::StepCorePortable(q, k, v, fa, ia, C, n, h, d);
  const float den = std::max(std::fabs(qn), std::exp(-m_new)) + d.eps;
  const float inv = 1.0f / den;
  for (int64_t c = 0; c < d.dv; ++c) h[c] *= inv;
  *m = m_new;
}

// The chunkwise form as a handful of small dense products (MatAcc) over per-chunk copies of
// q, k and v in product-friendly layouts, plus exp over whole rows. Why: the direct loops
// (one dot product or axpy per (row, column) pair) ran at ~10 GFLOP/s and made the mLSTM
// cell ~30% of a 2048-token prefill; as register-tiled products it is a few percent.

void ExpRow(Isa isa, float* x, int64_t n) {
  if (isa == Isa::kAvx512) {
    ExpRowAvx512(x, n);
  } else if (isa == Isa::kAvx2) {
    ExpRowAvx2(x, n);
  } else {
    for (int64_t c = 0; c < n; ++c) x[c] = std::exp(x[c]);
  }
}

// Per-thread scratch for one chunk of one head (L = the chunk size).
struct ChunkScratch {
  std::vector<float> b, a, mrow, winter, den;
  std::vector<float> qs;   // [L, dqk] q * q_scale
  std::vector<float> kt;   // [dqk, L] k transposed
  std::vector<float> vs;   // [L, dv]
  std::vector<float> logd; // [L, L] log decay, then the weights exp(logd - m_r)
  std::vector<float> sp;   // [L, L] q.k scores, then the causal weights P
  std::vector<float> num;  // [L, dv]
  std::vector<float> wk;   // [dqk, L] state-update weights a_r * k[r, a]
  void Resize(int64_t L, int64_t dqk, int64_t dv) {
    for (auto* v : {&b, &a, &mrow, &winter, &den}) v->resize(L);
    qs.resize(L * dqk);
    kt.resize(dqk * L);
    vs.resize(L * dv);
    logd.resize(L * L);
    sp.resize(L * L);
    num.resize(L * dv);
    wk.resize(dqk * L);
  }
};

struct HeadIo {
  const float *q, *k, *v, *i, *f;
  float* h;
  int64_t ldq, ldk, ldv, ldi, ldf, ldh;
};

// Outputs of one chunk of Lc rows starting at the HeadIo's base pointers, from boundary state
// (C, n, m); then advances the boundary state past the chunk. Every loop bound and product
// shape depends on Lc and the head dims only, so a sequence's result does not depend on what
// else is in the call.
void ChunkHead(Isa isa, const HeadIo& io, int64_t Lc, float* C, float* n, float* m,
               const MlstmDims& d, ChunkScratch& s) {
  const int64_t dqk = d.dqk, dv = d.dv;
  // Chunk copies: scaled q rows, k transposed (so q.k^T and the state update read rows of
  // it), v rows packed.
  for (int64_t r = 0; r < Lc; ++r) {
    const float* qr = io.q + r * io.ldq;
    const float* kr = io.k + r * io.ldk;
    float* qsr = s.qs.data() + r * dqk;
    for (int64_t a = 0; a < dqk; ++a) qsr[a] = qr[a] * d.q_scale;
    for (int64_t a = 0; a < dqk; ++a) s.kt[a * Lc + r] = kr[a];
    std::memcpy(s.vs.data() + r * dv, io.v + r * io.ldv, static_cast<size_t>(dv) * sizeof(float));
  }
  // Local cumulative log forget gates.
  float acc = 0.0f;
  for (int64_t r = 0; r < Lc; ++r) {
    acc += LogSigmoid(io.f[r * io.ldf]);
    s.b[r] = acc;
  }
  const float g = s.b[Lc - 1];
  const float m_k = *m;
  // Row stabilisers, then the causal decay weights exp(logD[r, c] - m_r) for c <= r.
  for (int64_t r = 0; r < Lc; ++r) {
    float* ld = s.logd.data() + r * Lc;
    float mi = -INFINITY;
    for (int64_t c = 0; c <= r; ++c) {
      ld[c] = s.b[r] - s.b[c] + io.i[c * io.ldi];
      mi = std::max(mi, ld[c]);
    }
    const float m_inter = s.b[r] + m_k;
    s.mrow[r] = std::max(m_inter, mi);
    s.winter[r] = std::exp(m_inter - s.mrow[r]);
    for (int64_t c = 0; c <= r; ++c) ld[c] -= s.mrow[r];
    ExpRow(isa, ld, r + 1);
  }
  // Scores q_r . k_c (full square; only c <= r is used), then P = decay * score.
  std::fill(s.sp.begin(), s.sp.begin() + Lc * Lc, 0.0f);
  MatAcc(isa, s.qs.data(), dqk, Lc, dqk, s.kt.data(), Lc, Lc, s.sp.data(), Lc);
  for (int64_t r = 0; r < Lc; ++r) {
    float* pr = s.sp.data() + r * Lc;
    const float* ld = s.logd.data() + r * Lc;
    float dsum = 0.0f;
    for (int64_t c = 0; c <= r; ++c) {
      pr[c] *= ld[c];
      dsum += pr[c];
    }
    std::fill(pr + r + 1, pr + Lc, 0.0f);
    s.den[r] = s.winter[r] * scalar::Dot(s.qs.data() + r * dqk, n, dqk) + dsum;
  }
  // Inter-chunk part (q_r^T C_k) * w_inter, then the intra-chunk part P V.
  std::fill(s.num.begin(), s.num.begin() + Lc * dv, 0.0f);
  MatAcc(isa, s.qs.data(), dqk, Lc, dqk, C, dv, dv, s.num.data(), dv);
  for (int64_t r = 0; r < Lc; ++r) {
    float* nr = s.num.data() + r * dv;
    const float w = s.winter[r];
    for (int64_t c = 0; c < dv; ++c) nr[c] *= w;
  }
  MatAcc(isa, s.sp.data(), Lc, Lc, Lc, s.vs.data(), dv, dv, s.num.data(), dv);
  for (int64_t r = 0; r < Lc; ++r) {
    const float inv = 1.0f / (std::max(std::fabs(s.den[r]), std::exp(-s.mrow[r])) + d.eps);
    const float* nr = s.num.data() + r * dv;
    float* hr = io.h + r * io.ldh;
    for (int64_t c = 0; c < dv; ++c) hr[c] = nr[c] * inv;
  }
  // Boundary state update: C = decay C + sum_r (a_r k_r) v_r^T, n likewise.
  float m_next = g + m_k;
  for (int64_t r = 0; r < Lc; ++r) {
    s.a[r] = g - s.b[r] + io.i[r * io.ldi];
    m_next = std::max(m_next, s.a[r]);
  }
  const float decay = std::exp(g + m_k - m_next);
  for (int64_t r = 0; r < Lc; ++r) s.a[r] = std::exp(s.a[r] - m_next);
  for (int64_t a = 0; a < dqk; ++a) {
    const float* kta = s.kt.data() + a * Lc;
    float* wka = s.wk.data() + a * Lc;
    float na = n[a] * decay;
    for (int64_t r = 0; r < Lc; ++r) {
      wka[r] = s.a[r] * kta[r];
      na += wka[r];
    }
    n[a] = na;
  }
  for (int64_t x = 0; x < dqk * dv; ++x) C[x] *= decay;
  MatAcc(isa, s.wk.data(), Lc, dqk, Lc, s.vs.data(), dv, dv, C, dv);
  *m = m_next;
}

// One (session, head) pair x = b * heads + j of a recurrent step.
void StepPair(const MlstmStepParams& p, Isa isa, int64_t x) {
  const MlstmDims d = p.dims;
  const int64_t b = x / d.heads, j = x % d.heads;
  if (p.slots[b] < 0) {  // padding row: no state, h = 0
    std::memset(p.h + b * p.ldh + j * d.dv, 0, static_cast<size_t>(d.dv) * sizeof(float));
    return;
  }
  float* base = p.state.arena + p.slots[b] * p.state.slot_stride;
  StepHead(isa, p.q + b * p.ldq + j * d.dqk, p.k + b * p.ldk + j * d.dqk,
           p.v + b * p.ldv + j * d.dv, p.i[b * p.ldi + j], p.f[b * p.ldf + j],
           base + p.state.c_offset + j * d.dqk * d.dv, base + p.state.n_offset + j * d.dqk,
           base + p.state.m_offset + j, p.h + b * p.ldh + j * d.dv, d);
}

}  // namespace

void MatAcc(Isa isa, const float* a, int64_t lda, int64_t rows, int64_t kdim, const float* b,
            int64_t ldb, int64_t n, float* out, int64_t ldo) {
  if (isa == Isa::kAvx512) {
    MatAccAvx512(a, lda, rows, kdim, b, ldb, n, out, ldo);
  } else {
    thread_local std::vector<float> row_acc;
    if (row_acc.size() < static_cast<size_t>(n)) row_acc.resize(static_cast<size_t>(n));
    if (isa == Isa::kAvx2) {
      MatAccAvx2(a, lda, rows, kdim, b, ldb, n, out, ldo, row_acc.data());
    } else {
      scalar::MatAccPortable(a, lda, rows, kdim, b, ldb, n, out, ldo, row_acc.data());
    }
  }
}

void MlstmStep(ThreadPool& pool, const MlstmStepParams& p, Isa isa) {
  const MlstmDims d = p.dims;
  const int64_t pairs = p.batch * d.heads;
  // (session, head) pairs are claimed in small groups from a shared counter rather than split
  // in static halves: the step streams each head's C from DRAM (batch 64: 16 MiB per block),
  // and on this shared host one core is often slowed by another tenant, so a static split
  // waits for the slower half. Who runs a pair never changes its arithmetic.
  if (pairs <= 1 || pool.Threads() == 1) {
    for (int64_t x = 0; x < pairs; ++x) StepPair(p, isa, x);
    return;
  }
  const int64_t grab = std::max<int64_t>(1, pairs / (8 * pool.Threads()));
  int64_t next = 0;
  pool.RunOnAll([&](int) {
    for (;;) {
      const int64_t begin = __atomic_fetch_add(&next, grab, __ATOMIC_RELAXED);
      if (begin >= pairs) return;
      const int64_t end = std::min(pairs, begin + grab);
      for (int64_t x = begin; x < end; ++x) StepPair(p, isa, x);
    }
  });
}

void MlstmChunkwise(ThreadPool& pool, const MlstmChunkParams& p, Isa isa) {
  const MlstmDims d = p.dims;
  // Scratch grows with L^2: never size it past the longest sequence of the call.
  int64_t longest = 1;
  for (int64_t sq = 0; sq < p.num_seqs; ++sq) longest = std::max(longest, p.length[sq]);
  const int64_t L = std::clamp<int64_t>(p.chunk_size, 1, longest);
  const int64_t pairs = p.num_seqs * d.heads;
  pool.ParallelFor(pairs, 1, [&](int64_t begin, int64_t end) {
    ChunkScratch s;
    s.Resize(L, d.dqk, d.dv);
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
        ChunkHead(isa, io, std::min(L, len - t0), C, n, m, d, s);
      }
    }
  });
}

}  // namespace xlstmd::kernels::cpu
