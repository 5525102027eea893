// Paper-family kernels on the CPU (xlstm-spec.md 4.2-4.4). The channel loops are in
// paper_portable.inc, compiled per ISA; the sLSTM's recurrent product is the mLSTM cell's
// register-tiled MatAcc, batched over the sessions of a decode step (one small GEMM per head).
#include "kernels/cpu/paper_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/mlstm_cpu.h"

namespace xlstmd::kernels::cpu {

// paper_avx512.cc / paper_avx2.cc and the vmath rows (elementwise_avx*.cc).
void HeadwiseNarrowAvx512(const float* x, int64_t ldx, int64_t rows, const float* w, int64_t blocks,
                          int64_t out, int64_t in, const float* b, float alpha, float* y,
                          int64_t ldy);
void ConvSeqAvx512(const float* x, int64_t ldx, int64_t len, const float* w, int64_t ldw,
                   const float* b, float* win, int64_t ldwin, int64_t ks, int64_t n, float* y,
                   int64_t ldy);
void HeadwiseNarrowAvx2(const float* x, int64_t ldx, int64_t rows, const float* w, int64_t blocks,
                        int64_t out, int64_t in, const float* b, float alpha, float* y,
                        int64_t ldy);
void ConvSeqAvx2(const float* x, int64_t ldx, int64_t len, const float* w, int64_t ldw,
                 const float* b, float* win, int64_t ldwin, int64_t ks, int64_t n, float* y,
                 int64_t ldy);
void SiluRowAvx512(float* x, int64_t n);
void SiluRowAvx2(float* x, int64_t n);

namespace {

namespace scalar {
#pragma GCC push_options
#pragma GCC optimize("no-tree-vectorize", "no-tree-slp-vectorize")
#include "kernels/cpu/paper_portable.inc"
#pragma GCC pop_options
}  // namespace scalar

// Rows of a headwise projection handed to one task. MatAcc streams a wide block's weights once
// per call whatever the row count, so a task takes a whole decode batch of up to 64 rows;
// blocks still split across threads (narrow projections split by row tiles only).
constexpr int64_t kRowTile = 64;
// Channels of one conv task: sequences are split into column strips so a single long prompt
// still uses every thread.
constexpr int64_t kConvStrip = 256;
// Sessions of one sLSTM task in a decode step: a head's recurrent kernel (1 MiB at DH 256) is
// streamed once per task, so a task takes up to 64 sessions; heads split across threads.
constexpr int64_t kSlstmRowTile = 64;

// All blocks of a narrow headwise projection (in < 8) for `rows` rows.
void HeadwiseNarrow(Isa isa, const float* x, int64_t ldx, int64_t rows, const float* w,
                    int64_t blocks, int64_t out, int64_t in, const float* b, float alpha, float* y,
                    int64_t ldy) {
  if (isa == Isa::kAvx512) {
    HeadwiseNarrowAvx512(x, ldx, rows, w, blocks, out, in, b, alpha, y, ldy);
  } else if (isa == Isa::kAvx2) {
    HeadwiseNarrowAvx2(x, ldx, rows, w, blocks, out, in, b, alpha, y, ldy);
  } else {
    scalar::HeadwiseNarrowPortable(x, ldx, rows, w, blocks, out, in, b, alpha, y, ldy);
  }
}

// One wide block (in >= 8) for `rows` rows: a small GEMM through MatAcc (register-tiled),
// whose per-element chain over i does not depend on the row count.
void HeadwiseWide(Isa isa, const float* x, int64_t ldx, int64_t rows, const float* w, int64_t out,
                  int64_t in, const float* b, float alpha, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) std::fill(y + r * ldy, y + r * ldy + out, 0.0f);
  MatAcc(isa, x, ldx, rows, in, w, out, out, y, ldy);
  for (int64_t r = 0; r < rows; ++r) {
    float* yr = y + r * ldy;
    for (int64_t o = 0; o < out; ++o) yr[o] = alpha * (yr[o] + (b != nullptr ? b[o] : 0.0f));
  }
}

void ConvSeq(Isa isa, const float* x, int64_t ldx, int64_t len, const float* w, int64_t ldw,
             const float* b, float* win, int64_t ldwin, int64_t ks, int64_t n, float* y,
             int64_t ldy) {
  if (isa == Isa::kAvx512) {
    ConvSeqAvx512(x, ldx, len, w, ldw, b, win, ldwin, ks, n, y, ldy);
  } else if (isa == Isa::kAvx2) {
    ConvSeqAvx2(x, ldx, len, w, ldw, b, win, ldwin, ks, n, y, ldy);
  } else {
    scalar::ConvSeqPortable(x, ldx, len, w, ldw, b, win, ldwin, ks, n, y, ldy);
  }
}

void SiluRow(Isa isa, float* x, int64_t n) {
  if (isa == Isa::kAvx512) {
    SiluRowAvx512(x, n);
  } else if (isa == Isa::kAvx2) {
    SiluRowAvx2(x, n);
  } else {
    for (int64_t c = 0; c < n; ++c) x[c] = x[c] / (1.0f + std::exp(-x[c]));
  }
}

inline float LogSigmoid(float x) { return std::min(x, 0.0f) - std::log1p(std::exp(-std::fabs(x))); }

// One sLSTM unit update (spec 4.4); returns the new h. The n == 0 test is per unit and per
// session: a fresh state takes m = i.
inline float SlstmUnit(float ir, float fr, float zr, float orw, float* c, float* n, float* m) {
  const float n_prev = *n;
  const float lfm = *m + LogSigmoid(fr);
  const float m_new = n_prev == 0.0f ? ir : std::max(ir, lfm);
  const float ia = std::min(std::exp(ir - m_new), 1.0f);
  const float fa = std::min(std::exp(lfm - m_new), 1.0f);
  const float c_new = fa * *c + ia * std::tanh(zr);
  const float n_new = fa * n_prev + ia;
  *c = c_new;
  *n = n_new;
  *m = m_new;
  return 1.0f / (1.0f + std::exp(-orw)) * c_new / n_new;
}

// Gate pre-activations of head j for one row: gx + the recurrent part `rec` ([4*dh], gate-major)
// + bias, then the unit updates. Writes h into the state and the output row.
void SlstmHeadRow(const SlstmParams& p, int64_t j, const float* gx, const float* rec, float* base,
                  float* hout) {
  const int64_t dh = p.dh, dim = p.heads * dh;
  const float* bj = p.b + j * 4 * dh;
  float* h = base + p.h_offset + j * dh;
  float* c = base + p.c_offset + j * dh;
  float* n = base + p.n_offset + j * dh;
  float* m = base + p.m_offset + j * dh;
  for (int64_t u = 0; u < dh; ++u) {
    const int64_t col = j * dh + u;
    const float ir = gx[col] + rec[u] + bj[u];
    const float fr = gx[dim + col] + rec[dh + u] + bj[dh + u];
    const float zr = gx[2 * dim + col] + rec[2 * dh + u] + bj[2 * dh + u];
    const float orw = gx[3 * dim + col] + rec[3 * dh + u] + bj[3 * dh + u];
    const float hv = SlstmUnit(ir, fr, zr, orw, c + u, n + u, m + u);
    h[u] = hv;
    hout[u] = hv;
  }
}

// A decode step: per (head, tile of sessions), the tile's previous h rows are gathered and
// multiplied by the head's recurrent kernel in one small GEMM.
void SlstmStep(ThreadPool& pool, const SlstmParams& p, Isa isa) {
  const int64_t dh = p.dh, rows = p.seqs.num_seqs;
  const int64_t tiles = (rows + kSlstmRowTile - 1) / kSlstmRowTile;
  pool.ParallelFor(p.heads * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> hprev(static_cast<size_t>(kSlstmRowTile * dh));
    std::vector<float> rec(static_cast<size_t>(kSlstmRowTile * 4 * dh));
    for (int64_t x = begin; x < end; ++x) {
      const int64_t j = x / tiles, r0 = (x % tiles) * kSlstmRowTile;
      const int64_t nr = std::min(kSlstmRowTile, rows - r0);
      for (int64_t k = 0; k < nr; ++k) {
        const int32_t slot = p.seqs.slots[r0 + k];
        float* dst = hprev.data() + k * dh;
        if (slot < 0) {
          std::fill(dst, dst + dh, 0.0f);
        } else {
          const float* src = p.arena + slot * p.slot_stride + p.h_offset + j * dh;
          std::memcpy(dst, src, static_cast<size_t>(dh) * sizeof(float));
        }
      }
      std::fill(rec.begin(), rec.begin() + nr * 4 * dh, 0.0f);
      MatAcc(isa, hprev.data(), dh, nr, dh, p.r + j * dh * 4 * dh, 4 * dh, 4 * dh, rec.data(),
             4 * dh);
      for (int64_t k = 0; k < nr; ++k) {
        const int64_t row = r0 + k;
        const int32_t slot = p.seqs.slots[row];
        float* hout = p.h + row * p.ldh + j * dh;
        if (slot < 0) {  // padding row
          std::fill(hout, hout + dh, 0.0f);
          continue;
        }
        SlstmHeadRow(p, j, p.gx + row * p.ldg, rec.data() + k * 4 * dh,
                     p.arena + slot * p.slot_stride, hout);
      }
    }
  });
}

}  // namespace

void Headwise(ThreadPool& pool, const HeadwiseParams& p, Isa isa) {
  if (p.rows <= 0) return;
  const int64_t tiles = (p.rows + kRowTile - 1) / kRowTile;
  const int64_t work = p.rows * p.blocks * p.out * p.in;
  const bool narrow = p.in < 8;
  // Narrow projections split by row tiles (every block of a row in one call, so the vector
  // code can pair blocks); wide ones by (block, row tile).
  const int64_t tasks = narrow ? tiles : p.blocks * tiles;
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t x = begin; x < end; ++x) {
      const int64_t blk = narrow ? 0 : x / tiles, r0 = (x % tiles) * kRowTile;
      const int64_t nr = std::min(kRowTile, p.rows - r0);
      const float* xs = p.x + r0 * p.ldx;
      float* ys = p.y + r0 * p.ldy;
      if (narrow) {
        HeadwiseNarrow(isa, xs, p.ldx, nr, p.w, p.blocks, p.out, p.in, p.b, p.alpha, ys, p.ldy);
        continue;
      }
      HeadwiseWide(isa, xs + blk * p.in, p.ldx, nr, p.w + blk * p.in * p.out, p.out, p.in,
                   p.b != nullptr ? p.b + blk * p.out : nullptr, p.alpha, ys + blk * p.out, p.ldy);
    }
  };
  // Below ~32K multiply-adds the hand-off to a worker costs more than it saves.
  if (work < (1 << 15) || tasks == 1) {
    run(0, tasks);
  } else {
    pool.ParallelFor(tasks, 1, run);
  }
}

void CausalConv(ThreadPool& pool, const CausalConvParams& p, Isa isa) {
  const RowSequences& s = p.seqs;
  const int64_t strips = (p.dim + kConvStrip - 1) / kConvStrip;
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t x = begin; x < end; ++x) {
      const int64_t sq = x / strips, c0 = (x % strips) * kConvStrip;
      const int64_t n = std::min(kConvStrip, p.dim - c0);
      const int64_t r0 = s.row_begin != nullptr ? s.row_begin[sq] : sq;
      const int64_t len = s.length != nullptr ? s.length[sq] : 1;
      if (len <= 0) continue;
      float* y = p.y + r0 * p.ldy + c0;
      const int32_t slot = s.slots[sq];
      if (slot < 0) {  // padding row of a decode step
        for (int64_t t = 0; t < len; ++t) std::fill(y + t * p.ldy, y + t * p.ldy + n, 0.0f);
        continue;
      }
      float* win = p.arena + slot * p.slot_stride + p.window_offset + c0;
      ConvSeq(isa, p.x + r0 * p.ldx + c0, p.ldx, len, p.w + c0, p.dim,
              p.b != nullptr ? p.b + c0 : nullptr, win, p.dim, p.ks, n, y, p.ldy);
      if (p.silu) {
        for (int64_t t = 0; t < len; ++t) SiluRow(isa, y + t * p.ldy, n);
      }
    }
  };
  const int64_t tasks = s.num_seqs * strips;
  int64_t rows = 0;
  for (int64_t sq = 0; sq < s.num_seqs; ++sq) rows += s.length != nullptr ? s.length[sq] : 1;
  if (rows * p.dim * p.ks < (1 << 15)) {
    run(0, tasks);
  } else {
    pool.ParallelFor(tasks, 1, run);
  }
}

void SlstmSequence(ThreadPool& pool, const SlstmParams& p, Isa isa) {
  if (p.seqs.row_begin == nullptr) {
    SlstmStep(pool, p, isa);
    return;
  }
  // Prefill: heads are independent (block-diagonal recurrence), so each (sequence, head) pair
  // runs its own time loop; a step's recurrent product is the same MatAcc as in decode.
  const int64_t dh = p.dh;
  pool.ParallelFor(p.seqs.num_seqs * p.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> hprev(static_cast<size_t>(dh));
    std::vector<float> rec(static_cast<size_t>(4 * dh));
    for (int64_t x = begin; x < end; ++x) {
      const int64_t sq = x / p.heads, j = x % p.heads;
      const int64_t r0 = p.seqs.row_begin[sq], len = p.seqs.length[sq];
      float* base = p.arena + p.seqs.slots[sq] * p.slot_stride;
      for (int64_t t = 0; t < len; ++t) {
        std::memcpy(hprev.data(), base + p.h_offset + j * dh,
                    static_cast<size_t>(dh) * sizeof(float));
        std::fill(rec.begin(), rec.end(), 0.0f);
        MatAcc(isa, hprev.data(), dh, 1, dh, p.r + j * dh * 4 * dh, 4 * dh, 4 * dh, rec.data(),
               4 * dh);
        const int64_t row = r0 + t;
        SlstmHeadRow(p, j, p.gx + row * p.ldg, rec.data(), base, p.h + row * p.ldh + j * dh);
      }
    }
  });
}

}  // namespace xlstmd::kernels::cpu
