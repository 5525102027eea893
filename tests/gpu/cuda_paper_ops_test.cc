// The family-B (xLSTM paper) ops and op modes on the CUDA backend against the CPU backend:
// LayerNorm (RmsNorm center), the gated-FFN activations, the head norm's gates / skip /
// accumulate, the headwise projection, the causal conv with its state window and the sLSTM
// cell, in prefill (sequences of several lengths, incl. shorter than the conv window) and in
// decode steps with slot -1 padding rows. Batch invariance: a row or sequence computed alone
// is bit-identical to the same one inside a batch. Label `gpu`: skipped without a device
// unless XLSTMD_REQUIRE_GPU=1.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/backend_registry.h"
#include "tests/gpu/gpu_testutil.h"

namespace xlstmd::testing {
namespace {

using kernels::DType;
using kernels::GateAct;
using kernels::GluAct;

// Sessions of a recurrent op in host memory; `begin` empty means a decode step (sequence r is
// row r, one token).
struct HostSeqs {
  std::vector<int32_t> slots;
  std::vector<int64_t> begin, len;
  bool step() const { return begin.empty(); }
  kernels::RowSequences View() const {
    const int64_t* b = step() ? nullptr : begin.data();
    const int64_t* l = step() ? nullptr : len.data();
    return {slots.data(), b, l, b, l, static_cast<int64_t>(slots.size())};
  }
};

// The same sessions with the index arrays in GPU memory (host ranges kept for planning).
class DeviceSeqs {
 public:
  DeviceSeqs(kernels::Backend* be, const HostSeqs& h)
      : host_(h), slots_(be, h.slots), begin_(be, h.begin), len_(be, h.len) {}
  kernels::RowSequences View() const {
    kernels::RowSequences v = host_.View();
    v.slots = slots_.get();
    if (!host_.step()) {
      v.row_begin = begin_.get();
      v.length = len_.get();
    }
    return v;
  }

 private:
  HostSeqs host_;
  BackendIndex<int32_t> slots_;
  BackendIndex<int64_t> begin_, len_;
};

bool SameBits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, static_cast<size_t>(n) * sizeof(float)) == 0;
}

class CudaPaperOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    XLSTMD_GPU_OR_SKIP(gpu_, DType::kF32);
    auto cpu = kernels::CreateBackend("cpu", {2, DType::kF32});
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    cpu_ = std::move(*cpu);
  }
  std::unique_ptr<kernels::Backend> gpu_, cpu_;
  std::mt19937 rng_{11};
};

TEST_F(CudaPaperOpsTest, LayerNormMatchesCpuAndRunsInPlace) {
  const int64_t rows = 5;
  for (int64_t dim : {1, 63, 300, 2500}) {
    const int64_t ld = dim + 3;
    // An offset mean makes a one-pass variance visibly wrong.
    std::vector<float> x = Gaussian(rows * ld, rng_);
    for (float& v : x) v += 4.0f;
    const std::vector<float> w = Gaussian(dim, rng_), b = Gaussian(dim, rng_);
    BackendArray xg(gpu_.get(), x), wg(gpu_.get(), w), bg(gpu_.get(), b);
    for (bool bias : {false, true}) {
      std::vector<float> yc(rows * dim);
      BackendArray yg(gpu_.get(), yc);
      cpu_->RmsNorm({x.data(), w.data(), bias ? b.data() : nullptr, yc.data(), rows, dim, ld, dim,
                     1e-5f, true});
      gpu_->RmsNorm({xg.get(), wg.get(), bias ? bg.get() : nullptr, yg.get(), rows, dim, ld, dim,
                     1e-5f, true});
      const std::vector<float> out = yg.Read();
      EXPECT_LT(RelDiff(out, yc), 1e-5) << "dim " << dim << " bias " << bias;
      // In place (y = x, same stride): the same bits as out of place.
      BackendArray inplace(gpu_.get(), x);
      gpu_->RmsNorm({inplace.get(), wg.get(), bias ? bg.get() : nullptr, inplace.get(), rows, dim,
                     ld, ld, 1e-5f, true});
      const std::vector<float> got = inplace.Read();
      for (int64_t r = 0; r < rows; ++r) {
        EXPECT_TRUE(SameBits(got.data() + r * ld, out.data() + r * dim, dim)) << r;
      }
    }
  }
}

TEST_F(CudaPaperOpsTest, GluActivationsMatchCpu) {
  const int64_t rows = 4, dim = 300, ld = 2 * dim + 5;
  const std::vector<float> in = Gaussian(rows * ld, rng_, 3.0f);
  BackendArray ig(gpu_.get(), in);
  for (GluAct act : {GluAct::kSilu, GluAct::kGelu, GluAct::kRelu, GluAct::kReluSq, GluAct::kSigmoid,
                     GluAct::kSelu}) {
    std::vector<float> yc(rows * dim);
    BackendArray yg(gpu_.get(), yc);
    cpu_->SwiGlu({in.data(), in.data() + dim, yc.data(), rows, dim, ld, dim, act});
    gpu_->SwiGlu({ig.get(), ig.get() + dim, yg.get(), rows, dim, ld, dim, act});
    EXPECT_LT(RelDiff(yg.Read(), yc), 1e-5) << "act " << static_cast<int>(act);
  }
}

// Every combination of gate, skip, bias and accumulate, with distinct row strides.
TEST_F(CudaPaperOpsTest, HeadNormGateModesMatchCpu) {
  const int64_t rows = 6, heads = 4, dh = 48, width = heads * dh;
  const int64_t ldh = width + 3, ldo = width + 7, ldxs = width + 1, ldy = width + 2;
  const std::vector<float> h = Gaussian(rows * ldh, rng_), o = Gaussian(rows * ldo, rng_, 2.0f),
                           xs = Gaussian(rows * ldxs, rng_), w = Gaussian(width, rng_),
                           b = Gaussian(width, rng_), skip = Gaussian(width, rng_),
                           y0 = Gaussian(rows * ldy, rng_);
  BackendArray hg(gpu_.get(), h), og(gpu_.get(), o), xsg(gpu_.get(), xs), wg(gpu_.get(), w),
      bg(gpu_.get(), b), sg(gpu_.get(), skip);
  for (GateAct gate : {GateAct::kSigmoid, GateAct::kSilu, GateAct::kNone}) {
    for (int mode = 0; mode < 8; ++mode) {
      const bool bias = mode & 1, with_skip = mode & 2, acc = mode & 4;
      const bool use_o = gate != GateAct::kNone;
      kernels::HeadNormGateParams pc{h.data(), use_o ? o.data() : nullptr,
                                     w.data(), bias ? b.data() : nullptr,
                                     nullptr,  rows,
                                     heads,    dh,
                                     ldh,      ldo,
                                     ldy,      1e-5f,
                                     gate};
      kernels::HeadNormGateParams pg{hg.get(), use_o ? og.get() : nullptr,
                                     wg.get(), bias ? bg.get() : nullptr,
                                     nullptr,  rows,
                                     heads,    dh,
                                     ldh,      ldo,
                                     ldy,      1e-5f,
                                     gate};
      if (with_skip) {
        pc.skip = skip.data();
        pc.xs = xs.data();
        pc.ldxs = ldxs;
        pg.skip = sg.get();
        pg.xs = xsg.get();
        pg.ldxs = ldxs;
      }
      pc.accumulate = pg.accumulate = acc;
      std::vector<float> yc = y0;
      BackendArray yg(gpu_.get(), y0);
      pc.y = yc.data();
      pg.y = yg.get();
      cpu_->HeadNormGate(pc);
      gpu_->HeadNormGate(pg);
      EXPECT_LT(RelDiff(yg.Read(), yc), 1e-5)
          << "gate " << static_cast<int>(gate) << " bias " << bias << " skip " << with_skip
          << " accumulate " << acc;
    }
  }
}

TEST_F(CudaPaperOpsTest, HeadwiseMatchesCpuAndIsBatchInvariant) {
  struct Shape {
    int64_t blocks, out, in;
  };
  const int64_t rows = 37;
  for (const Shape s : {Shape{32, 4, 4}, Shape{4, 16, 16}, Shape{3, 5, 7}, Shape{2, 300, 257}}) {
    const int64_t ldx = s.blocks * s.in + 5, ldy = s.blocks * s.out + 2;
    const std::vector<float> x = Gaussian(rows * ldx, rng_);
    const std::vector<float> w = Gaussian(s.blocks * s.out * s.in, rng_, 0.2f);
    const std::vector<float> b = Gaussian(s.blocks * s.out, rng_);
    BackendArray xg(gpu_.get(), x), wg(gpu_.get(), w), bg(gpu_.get(), b);
    for (bool bias : {false, true}) {
      const float alpha = bias ? 0.125f : 1.0f;
      std::vector<float> yc(rows * ldy);
      BackendArray yg(gpu_.get(), yc);
      cpu_->Headwise({x.data(), w.data(), bias ? b.data() : nullptr, yc.data(), rows, s.blocks,
                      s.out, s.in, ldx, ldy, alpha});
      gpu_->Headwise({xg.get(), wg.get(), bias ? bg.get() : nullptr, yg.get(), rows, s.blocks,
                      s.out, s.in, ldx, ldy, alpha});
      const std::vector<float> batch = yg.Read();
      EXPECT_LT(RelDiff(batch, yc), 1e-5) << s.blocks << "x" << s.out << "x" << s.in;
      for (int64_t r : {int64_t{0}, int64_t{17}, rows - 1}) {
        BackendArray one(gpu_.get(), std::vector<float>(ldy));
        gpu_->Headwise({xg.get() + r * ldx, wg.get(), bias ? bg.get() : nullptr, one.get(), 1,
                        s.blocks, s.out, s.in, ldx, ldy, alpha});
        EXPECT_TRUE(SameBits(one.Read().data(), batch.data() + r * ldy, s.blocks * s.out)) << r;
      }
    }
  }
}

// A conv layer in a slot arena: slot s's window [ks-1, dim] starts `kOffset` floats in.
struct ConvSetup {
  static constexpr int64_t kOffset = 5;
  int64_t dim, ks, ld;
  int64_t slot_stride() const { return (ks - 1) * dim + kOffset + 3; }
  kernels::CausalConvParams Params(const float* x, const float* w, const float* b, float* y,
                                   kernels::RowSequences seqs, bool silu, float* arena) const {
    return {x, w, b, y, seqs, dim, ks, ld, ld, silu, arena, slot_stride(), kOffset};
  }
};

// Prefill of four sequences (two shorter than the window, continuing from random windows)
// against the CPU; the same sequences split over two calls give the same bits on the GPU.
TEST_F(CudaPaperOpsTest, CausalConvSequencesMatchCpuAndSplitExactly) {
  const int64_t slots = 6, dim = 70, ld = 75;
  const HostSeqs seqs{{3, 0, 5, 1}, {0, 9, 10, 12}, {9, 1, 2, 6}};
  const int64_t rows = 18;
  for (int64_t ks : {1, 2, 4}) {
    const ConvSetup cs{dim, ks, ld};
    const std::vector<float> x = Gaussian(rows * ld, rng_), w = Gaussian(ks * dim, rng_, 0.5f),
                             b = Gaussian(dim, rng_);
    const std::vector<float> arena0 = Gaussian(slots * cs.slot_stride(), rng_);
    BackendArray xg(gpu_.get(), x), wg(gpu_.get(), w), bg(gpu_.get(), b);
    DeviceSeqs dseqs(gpu_.get(), seqs);
    for (int mode = 0; mode < 4; ++mode) {
      const bool silu = mode & 1, bias = mode & 2;
      std::vector<float> yc(rows * ld), ac = arena0;
      BackendArray yg(gpu_.get(), yc), ag(gpu_.get(), arena0);
      cpu_->CausalConv(cs.Params(x.data(), w.data(), bias ? b.data() : nullptr, yc.data(),
                                 seqs.View(), silu, ac.data()));
      gpu_->CausalConv(cs.Params(xg.get(), wg.get(), bias ? bg.get() : nullptr, yg.get(),
                                 dseqs.View(), silu, ag.get()));
      const std::vector<float> y_full = yg.Read(), a_full = ag.Read();
      const std::string what = "ks " + std::to_string(ks) + " mode " + std::to_string(mode);
      EXPECT_LT(RelDiff(y_full, yc), 1e-5) << what;
      EXPECT_EQ(a_full, ac) << what;  // windows are copies of inputs: exact

      // Each sequence cut after `cut` rows (0 < cut < len), both halves in separate calls.
      BackendArray ys(gpu_.get(), std::vector<float>(rows * ld)), as(gpu_.get(), arena0);
      HostSeqs first = seqs, second = seqs;
      for (size_t i = 0; i < seqs.slots.size(); ++i) {
        const int64_t cut = seqs.len[i] > 1 ? 1 + static_cast<int64_t>(i) % (seqs.len[i] - 1) : 1;
        first.len[i] = std::min(cut, seqs.len[i]);
        second.begin[i] = seqs.begin[i] + first.len[i];
        second.len[i] = seqs.len[i] - first.len[i];
      }
      DeviceSeqs d1(gpu_.get(), first), d2(gpu_.get(), second);
      for (const DeviceSeqs* d : {&d1, &d2}) {
        gpu_->CausalConv(cs.Params(xg.get(), wg.get(), bias ? bg.get() : nullptr, ys.get(),
                                   d->View(), silu, as.get()));
      }
      EXPECT_EQ(ys.Read(), y_full) << what << " split";
      EXPECT_EQ(as.Read(), a_full) << what << " split";
    }
  }
}

// Decode steps with shuffled slots and padding rows, against the CPU and row by row alone.
TEST_F(CudaPaperOpsTest, CausalConvStepMatchesCpuAndIsBatchInvariant) {
  const int64_t slots = 5, dim = 130, ld = 133, ks = 4;
  const ConvSetup cs{dim, ks, ld};
  const HostSeqs step{{2, -1, 4, 0, -1, 1}, {}, {}};
  const int64_t rows = 6;
  const std::vector<float> x = Gaussian(rows * ld, rng_), w = Gaussian(ks * dim, rng_, 0.5f),
                           b = Gaussian(dim, rng_);
  const std::vector<float> arena0 = Gaussian(slots * cs.slot_stride(), rng_);
  BackendArray xg(gpu_.get(), x), wg(gpu_.get(), w), bg(gpu_.get(), b), ag(gpu_.get(), arena0);
  std::vector<float> yc(rows * ld, 7.0f), ac = arena0;
  BackendArray yg(gpu_.get(), yc);
  DeviceSeqs dstep(gpu_.get(), step);
  cpu_->CausalConv(
      cs.Params(x.data(), w.data(), b.data(), yc.data(), step.View(), true, ac.data()));
  gpu_->CausalConv(cs.Params(xg.get(), wg.get(), bg.get(), yg.get(), dstep.View(), true, ag.get()));
  const std::vector<float> yb = yg.Read();
  EXPECT_LT(RelDiff(yb, yc), 1e-5);
  EXPECT_EQ(ag.Read(), ac);
  for (int64_t r = 0; r < rows; ++r) {
    if (step.slots[r] < 0) {
      for (int64_t c = 0; c < dim; ++c) EXPECT_EQ(yb[r * ld + c], 0.0f) << r;
      continue;
    }
    const HostSeqs one{{step.slots[r]}, {}, {}};
    DeviceSeqs done(gpu_.get(), one);
    BackendArray y1(gpu_.get(), std::vector<float>(ld)), a1(gpu_.get(), arena0);
    gpu_->CausalConv(
        cs.Params(xg.get() + r * ld, wg.get(), bg.get(), y1.get(), done.View(), true, a1.get()));
    EXPECT_TRUE(SameBits(y1.Read().data(), yb.data() + r * ld, dim)) << r;
  }
}

// An sLSTM layer: heads of dh units, gate inputs [rows, 4*dim] with a padded stride, state
// (h, c, n, m) at scattered offsets in each slot.
struct SlstmSetup {
  int64_t heads, dh;
  int64_t dim() const { return heads * dh; }
  int64_t ldg() const { return 4 * dim() + 3; }
  int64_t ldh() const { return dim() + 1; }
  int64_t slot_stride() const { return 4 * dim() + 9; }
  kernels::SlstmParams Params(const float* gx, const float* r, const float* b, float* h,
                              kernels::RowSequences seqs, float* arena) const {
    kernels::SlstmParams p{gx, r, b, h, seqs, heads, dh, ldg(), ldh(), arena, slot_stride(),
                           0,  0, 0, 0};
    // h, c, n, m with gaps between them, none at the slot's start.
    p.h_offset = 2;
    p.c_offset = 2 + dim();
    p.n_offset = 5 + 2 * dim();
    p.m_offset = 7 + 3 * dim();
    return p;
  }
};

class CudaSlstmTest : public CudaPaperOpsTest,
                      public ::testing::WithParamInterface<std::pair<int64_t, int64_t>> {};

// Prefill of three sessions from zero state, then a decode step from those states with a fresh
// session and padding rows: against the CPU, and bit for bit against the same work done alone
// (a sequence alone; a step row alone; a prefill as a chain of single steps).
TEST_P(CudaSlstmTest, MatchesCpuAndIsBatchInvariant) {
  const SlstmSetup ss{GetParam().first, GetParam().second};
  const int64_t slots = 6, rows = 21, dim = ss.dim();
  const HostSeqs seqs{{4, 0, 2}, {0, 7, 8}, {7, 1, 13}};
  // Large input-gate values drive the stabiliser m far from 0, as in the goldens.
  const std::vector<float> gx = Gaussian(rows * ss.ldg(), rng_, 3.0f);
  const std::vector<float> r =
      Gaussian(ss.heads * ss.dh * 4 * ss.dh, rng_, 1.0f / std::sqrt(static_cast<float>(ss.dh)));
  const std::vector<float> b = Gaussian(4 * dim, rng_);
  const std::vector<float> zero(slots * ss.slot_stride(), 0.0f);
  BackendArray gg(gpu_.get(), gx), rg(gpu_.get(), r), bg(gpu_.get(), b), ag(gpu_.get(), zero);
  std::vector<float> hc(rows * ss.ldh()), ac = zero;
  BackendArray hg(gpu_.get(), hc);
  DeviceSeqs dseqs(gpu_.get(), seqs);
  cpu_->SlstmSequence(ss.Params(gx.data(), r.data(), b.data(), hc.data(), seqs.View(), ac.data()));
  gpu_->SlstmSequence(ss.Params(gg.get(), rg.get(), bg.get(), hg.get(), dseqs.View(), ag.get()));
  const std::vector<float> h_pre = hg.Read(), states = ag.Read();
  EXPECT_LT(RelDiff(h_pre, hc), 1e-4) << "prefill h";
  EXPECT_LT(RelDiff(states, ac), 1e-4) << "prefill state";

  for (size_t i = 0; i < seqs.slots.size(); ++i) {
    const HostSeqs one{{seqs.slots[i]}, {seqs.begin[i]}, {seqs.len[i]}};
    DeviceSeqs done(gpu_.get(), one);
    BackendArray a1(gpu_.get(), zero), h1(gpu_.get(), std::vector<float>(rows * ss.ldh()));
    gpu_->SlstmSequence(ss.Params(gg.get(), rg.get(), bg.get(), h1.get(), done.View(), a1.get()));
    const std::vector<float> h_one = h1.Read(), a_one = a1.Read();
    const int64_t at = seqs.begin[i] * ss.ldh(), n = seqs.len[i] * ss.ldh();
    EXPECT_TRUE(SameBits(h_one.data() + at, h_pre.data() + at, n)) << "sequence " << i;
    const int64_t s0 = seqs.slots[i] * ss.slot_stride();
    EXPECT_TRUE(SameBits(a_one.data() + s0, states.data() + s0, ss.slot_stride())) << i;

    // The same sequence as one decode step per row.
    BackendArray a2(gpu_.get(), zero), h2(gpu_.get(), std::vector<float>(rows * ss.ldh()));
    const HostSeqs step1{{seqs.slots[i]}, {}, {}};
    DeviceSeqs dstep1(gpu_.get(), step1);
    for (int64_t t = seqs.begin[i]; t < seqs.begin[i] + seqs.len[i]; ++t) {
      gpu_->SlstmSequence(ss.Params(gg.get() + t * ss.ldg(), rg.get(), bg.get(),
                                    h2.get() + t * ss.ldh(), dstep1.View(), a2.get()));
    }
    const std::vector<float> h_steps = h2.Read();
    EXPECT_TRUE(SameBits(h_steps.data() + at, h_pre.data() + at, n)) << "stepped " << i;
    EXPECT_TRUE(SameBits(a2.Read().data() + s0, states.data() + s0, ss.slot_stride())) << i;
  }

  // A decode step: slot 1 and 3 are fresh (n == 0 takes m = i), two padding rows.
  const HostSeqs step{{2, -1, 4, 1, 0, -1, 3}, {}, {}};
  const int64_t srows = static_cast<int64_t>(step.slots.size());
  DeviceSeqs dstep(gpu_.get(), step);
  BackendArray sa(gpu_.get(), states), sh(gpu_.get(), std::vector<float>(srows * ss.ldh(), 3.0f));
  std::vector<float> ca = states, ch(srows * ss.ldh(), 3.0f);
  cpu_->SlstmSequence(ss.Params(gx.data(), r.data(), b.data(), ch.data(), step.View(), ca.data()));
  gpu_->SlstmSequence(ss.Params(gg.get(), rg.get(), bg.get(), sh.get(), dstep.View(), sa.get()));
  const std::vector<float> hs = sh.Read();
  EXPECT_LT(RelDiff(hs, ch), 1e-4) << "step h";
  EXPECT_LT(RelDiff(sa.Read(), ca), 1e-4) << "step state";
  for (int64_t row = 0; row < srows; ++row) {
    const float* got = hs.data() + row * ss.ldh();
    if (step.slots[row] < 0) {
      for (int64_t c = 0; c < dim; ++c) EXPECT_EQ(got[c], 0.0f) << row;
      continue;
    }
    const HostSeqs one{{step.slots[row]}, {}, {}};
    DeviceSeqs done(gpu_.get(), one);
    BackendArray a1(gpu_.get(), states), h1(gpu_.get(), std::vector<float>(ss.ldh()));
    gpu_->SlstmSequence(
        ss.Params(gg.get() + row * ss.ldg(), rg.get(), bg.get(), h1.get(), done.View(), a1.get()));
    EXPECT_TRUE(SameBits(h1.Read().data(), got, dim)) << "step row " << row;
  }
}

// (heads, dh): small heads; dh not a multiple of 32; 4*dh over 1024 (threads loop columns).
INSTANTIATE_TEST_SUITE_P(Heads, CudaSlstmTest,
                         ::testing::Values(std::pair<int64_t, int64_t>{4, 16},
                                           std::pair<int64_t, int64_t>{3, 20},
                                           std::pair<int64_t, int64_t>{2, 300}),
                         [](const auto& info) {
                           return std::to_string(info.param.first) + "x" +
                                  std::to_string(info.param.second);
                         });

}  // namespace
}  // namespace xlstmd::testing
