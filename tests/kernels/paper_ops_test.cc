// The paper-family ops (headwise projection, causal conv with its state window, the sLSTM
// cell) and the family-B modes of the row ops (LayerNorm, GLU activations, the outnorm with
// skip and SiLU gate, the accumulating group norm) against double-precision references, on
// every ISA this CPU runs; plus the decode-step contract: padding rows, and a row bit-identical
// alone or in a batch.
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/testing/isa.h"

namespace xlstmd::kernels {
namespace {

using cpu::Isa;

std::vector<float> Randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

double MaxDiff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

class PaperOpsTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    BackendOptions o;
    o.threads = 2;
    auto be = cpu::CpuBackend::Create(o, GetParam());
    ASSERT_TRUE(be.ok()) << be.status();
    be_ = std::move(*be);
  }
  std::unique_ptr<Backend> be_;
};

TEST_P(PaperOpsTest, HeadwiseMatchesReference) {
  struct Shape {
    int64_t blocks, out, in;
  };
  for (const Shape s : {Shape{32, 4, 4}, Shape{4, 16, 16}, Shape{3, 5, 7}, Shape{2, 33, 19}}) {
    const int64_t rows = 37, ldx = s.blocks * s.in + 3, ldy = s.blocks * s.out + 5;
    const auto x = Randn(rows * ldx, 1), w = Randn(s.blocks * s.out * s.in, 2),
               b = Randn(s.blocks * s.out, 3);
    std::vector<float> y(rows * ldy, 0.0f);
    be_->Headwise(
        {x.data(), w.data(), b.data(), y.data(), rows, s.blocks, s.out, s.in, ldx, ldy, 0.5f});
    double worst = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t p = 0; p < s.blocks; ++p)
        for (int64_t o = 0; o < s.out; ++o) {
          double acc = b[p * s.out + o];
          for (int64_t i = 0; i < s.in; ++i)
            acc += double(w[(p * s.in + i) * s.out + o]) * x[r * ldx + p * s.in + i];
          worst = std::max(worst, std::fabs(0.5 * acc - y[r * ldy + p * s.out + o]));
        }
    EXPECT_LT(worst, 1e-4) << s.blocks << "x" << s.out << "x" << s.in;
    // A row alone gives the same bits as in the batch.
    std::vector<float> y1(ldy, 0.0f);
    be_->Headwise({x.data() + 11 * ldx, w.data(), b.data(), y1.data(), 1, s.blocks, s.out, s.in,
                   ldx, ldy, 0.5f});
    EXPECT_EQ(0, std::memcmp(y1.data(), y.data() + 11 * ldy, s.blocks * s.out * sizeof(float)));
  }
}

// Double reference of the conv over a whole token history (zeros before it).
std::vector<double> RefConv(const std::vector<float>& hist, int64_t t, const std::vector<float>& w,
                            const std::vector<float>& b, int64_t d, int64_t ks, bool silu) {
  std::vector<double> y(d);
  for (int64_t c = 0; c < d; ++c) {
    double acc = b[c];
    for (int64_t j = 0; j < ks; ++j) {
      const int64_t tau = t - ks + 1 + j;
      if (tau >= 0) acc += double(w[j * d + c]) * hist[tau * d + c];
    }
    y[c] = silu ? acc / (1.0 + std::exp(-acc)) : acc;
  }
  return y;
}

TEST_P(PaperOpsTest, CausalConvCarriesItsWindowAcrossCalls) {
  for (int64_t ks : {1, 2, 4, 6}) {
    const int64_t d = 37, stride = 256, T = 11;
    const auto w = Randn(ks * d, 5), b = Randn(d, 6), hist = Randn(T * d, 7);
    std::vector<float> arena(3 * stride, 0.0f);
    // Slot 2: tokens in pieces of 1, 2, 3 (shorter than the window) and 5; rows are packed.
    int64_t done = 0;
    for (int64_t piece : {1, 2, 3, 5}) {
      std::vector<float> y(piece * d);
      const int32_t slot = 2;
      const int64_t begin = 0, len = piece;
      RowSequences seqs{&slot, &begin, &len, &begin, &len, 1};
      be_->CausalConv({hist.data() + done * d, w.data(), b.data(), y.data(), seqs, d, ks, d, d,
                       true, arena.data(), stride, 16});
      for (int64_t t = 0; t < piece; ++t) {
        const std::vector<float> got(y.begin() + t * d, y.begin() + (t + 1) * d);
        EXPECT_LT(MaxDiff(got, RefConv(hist, done + t, w, b, d, ks, true)), 1e-5)
            << "ks " << ks << " t " << done + t;
      }
      done += piece;
    }
    // Decode steps: slot 2 continues, slot 0 starts fresh, and a padding row (slot -1).
    const int32_t slots[3] = {2, -1, 0};
    std::vector<float> x(3 * d), y(3 * d, 1.0f);
    std::memcpy(x.data(), hist.data() + (T - 1) * d, d * sizeof(float));  // unused by the ref below
    RowSequences step{slots, nullptr, nullptr, nullptr, nullptr, 3};
    std::vector<float> before(arena);
    be_->CausalConv({x.data(), w.data(), b.data(), y.data(), step, d, ks, d, d, false, arena.data(),
                     stride, 16});
    for (int64_t c = 0; c < d; ++c) EXPECT_EQ(y[d + c], 0.0f) << "padding row";
    for (int64_t i = stride; i < 2 * stride; ++i)
      EXPECT_EQ(arena[i], before[i]) << "slot 1 untouched";
    // The fresh slot's output uses only its own input.
    for (int64_t c = 0; c < d; ++c) {
      EXPECT_NEAR(y[2 * d + c], b[c] + w[(ks - 1) * d + c] * x[2 * d + c], 1e-5);
    }
  }
}

// Double reference of one sLSTM step for one session; state h, c, n, m [dim].
struct RefSlstm {
  std::vector<double> h, c, n, m;
  explicit RefSlstm(int64_t dim) : h(dim, 0), c(dim, 0), n(dim, 0), m(dim, 0) {}
  std::vector<double> Step(const float* gx, const std::vector<float>& R,
                           const std::vector<float>& B, int64_t heads, int64_t dh) {
    const int64_t dim = heads * dh;
    std::vector<double> out(dim);
    std::vector<double> hp = h;
    for (int64_t j = 0; j < heads; ++j)
      for (int64_t u = 0; u < dh; ++u) {
        double raw[4];
        for (int g = 0; g < 4; ++g) {
          double acc = gx[g * dim + j * dh + u] + B[(j * 4 + g) * dh + u];
          for (int64_t dd = 0; dd < dh; ++dd)
            acc += hp[j * dh + dd] * R[(j * dh + dd) * 4 * dh + g * dh + u];
          raw[g] = acc;
        }
        const int64_t k = j * dh + u;
        const double lf = std::min(raw[1], 0.0) - std::log1p(std::exp(-std::fabs(raw[1])));
        const double lfm = m[k] + lf;
        const double mn = n[k] == 0.0 ? raw[0] : std::max(raw[0], lfm);
        const double ia = std::min(std::exp(raw[0] - mn), 1.0),
                     fa = std::min(std::exp(lfm - mn), 1.0);
        c[k] = fa * c[k] + ia * std::tanh(raw[2]);
        n[k] = fa * n[k] + ia;
        m[k] = mn;
        h[k] = out[k] = 1.0 / (1.0 + std::exp(-raw[3])) * c[k] / n[k];
      }
    return out;
  }
};

TEST_P(PaperOpsTest, SlstmPrefillAndStepsMatchReferenceAndBatchInvariance) {
  const int64_t heads = 3, dh = 13, dim = heads * dh, T = 9, stride = 4 * 48, ldg = 4 * dim + 2;
  const auto R = Randn(heads * dh * 4 * dh, 11, 0.3f), B = Randn(heads * 4 * dh, 12, 2.0f);
  const auto gx = Randn(T * ldg, 13, 2.0f);
  const int64_t ho = 0, co = 48, no = 96, mo = 144;
  std::vector<float> arena(4 * stride, 0.0f);
  RefSlstm ref(dim);
  // Slot 1: prefill 5 tokens, then 4 decode steps batched with other sessions.
  {
    std::vector<float> h(5 * dim);
    const int32_t slot = 1;
    const int64_t begin = 0, len = 5;
    RowSequences seqs{&slot, &begin, &len, &begin, &len, 1};
    be_->SlstmSequence({gx.data(), R.data(), B.data(), h.data(), seqs, heads, dh, ldg, dim,
                        arena.data(), stride, ho, co, no, mo});
    for (int64_t t = 0; t < 5; ++t) {
      const auto want = ref.Step(gx.data() + t * ldg, R, B, heads, dh);
      EXPECT_LT(MaxDiff(std::vector<float>(h.begin() + t * dim, h.begin() + (t + 1) * dim), want),
                1e-4);
    }
  }
  std::vector<float> alone_arena = arena;
  for (int64_t t = 5; t < T; ++t) {
    const auto want = ref.Step(gx.data() + t * ldg, R, B, heads, dh);
    // Batched: rows (slot 3 fresh, padding, slot 1); the same token for every real row.
    const int32_t slots[3] = {3, -1, 1};
    std::vector<float> x(3 * ldg);
    for (int r = 0; r < 3; ++r)
      std::memcpy(x.data() + r * ldg, gx.data() + t * ldg, ldg * sizeof(float));
    std::vector<float> h(3 * dim, 7.0f);
    RowSequences step{slots, nullptr, nullptr, nullptr, nullptr, 3};
    be_->SlstmSequence({x.data(), R.data(), B.data(), h.data(), step, heads, dh, ldg, dim,
                        arena.data(), stride, ho, co, no, mo});
    const std::vector<float> row(h.begin() + 2 * dim, h.end());
    EXPECT_LT(MaxDiff(row, want), 1e-4) << "t " << t;
    for (int64_t c = 0; c < dim; ++c) EXPECT_EQ(h[dim + c], 0.0f) << "padding row";
    // Alone: the same session in a batch of one.
    const int32_t one = 1;
    std::vector<float> h1(dim);
    RowSequences step1{&one, nullptr, nullptr, nullptr, nullptr, 1};
    be_->SlstmSequence({gx.data() + t * ldg, R.data(), B.data(), h1.data(), step1, heads, dh, ldg,
                        dim, alone_arena.data(), stride, ho, co, no, mo});
    EXPECT_EQ(0, std::memcmp(h1.data(), row.data(), dim * sizeof(float))) << "t " << t;
  }
  EXPECT_EQ(
      0, std::memcmp(alone_arena.data() + stride, arena.data() + stride, stride * sizeof(float)));
  for (int64_t i = 0; i < stride; ++i) EXPECT_EQ(arena[i], 0.0f) << "slot 0 untouched";
}

TEST_P(PaperOpsTest, LayerNormGluActsAndPaperNormModes) {
  const int64_t rows = 5, dim = 24, heads = 3, dh = 8;
  const auto x = Randn(rows * dim, 21, 3.0f), w = Randn(dim, 22), o = Randn(rows * dim, 23, 2.0f);
  const auto skip = Randn(dim, 24), xs = Randn(rows * dim, 25);
  std::vector<float> y(rows * dim);
  be_->RmsNorm({x.data(), w.data(), nullptr, y.data(), rows, dim, dim, dim, 1e-5f, true});
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < dim; ++c) mean += x[r * dim + c];
    mean /= dim;
    for (int64_t c = 0; c < dim; ++c) var += (x[r * dim + c] - mean) * (x[r * dim + c] - mean);
    var /= dim;
    for (int64_t c = 0; c < dim; ++c)
      EXPECT_NEAR(y[r * dim + c], (x[r * dim + c] - mean) / std::sqrt(var + 1e-5) * w[c], 1e-4);
  }
  const GluAct acts[] = {GluAct::kSilu,   GluAct::kGelu,    GluAct::kRelu,
                         GluAct::kReluSq, GluAct::kSigmoid, GluAct::kSelu};
  for (GluAct act : acts) {
    be_->SwiGlu({x.data(), o.data(), y.data(), rows, dim, dim, dim, act});
    for (int64_t i = 0; i < rows * dim; ++i) {
      const double g = x[i];
      double a = 0;
      switch (act) {
        case GluAct::kSilu:
          a = g / (1 + std::exp(-g));
          break;
        case GluAct::kGelu:
          a = 0.5 * g * (1 + std::erf(g / std::sqrt(2.0)));
          break;
        case GluAct::kRelu:
          a = g > 0 ? g : 0;
          break;
        case GluAct::kReluSq:
          a = g > 0 ? g * g : 0;
          break;
        case GluAct::kSigmoid:
          a = 1 / (1 + std::exp(-g));
          break;
        case GluAct::kSelu:
          a = 1.0507009873554805 * (g > 0 ? g : 1.6732632423543772 * std::expm1(g));
          break;
      }
      EXPECT_NEAR(y[i], a * o[i], 1e-4 * (1 + std::fabs(a * o[i]))) << static_cast<int>(act);
    }
  }
  // Outnorm + skip + SiLU gate, and the accumulating group norm without a gate.
  std::vector<float> acc(rows * dim, 1.5f);
  be_->HeadNormGate({x.data(), o.data(), w.data(), nullptr, y.data(), rows, heads, dh, dim, dim,
                     dim, 1e-5f, GateAct::kSilu, skip.data(), xs.data(), dim, false});
  be_->HeadNormGate({x.data(), nullptr, w.data(), nullptr, acc.data(), rows, heads, dh, dim, 0, dim,
                     1e-5f, GateAct::kNone, nullptr, nullptr, 0, true});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < heads; ++j) {
      double mean = 0, var = 0;
      for (int64_t c = 0; c < dh; ++c) mean += x[r * dim + j * dh + c];
      mean /= dh;
      for (int64_t c = 0; c < dh; ++c) var += std::pow(x[r * dim + j * dh + c] - mean, 2);
      var /= dh;
      for (int64_t c = 0; c < dh; ++c) {
        const int64_t i = r * dim + j * dh + c;
        const double n = (x[i] - mean) / std::sqrt(var + 1e-5) * w[j * dh + c];
        const double gate = o[i] / (1 + std::exp(-o[i]));
        EXPECT_NEAR(y[i], (n + skip[j * dh + c] * xs[i]) * gate, 1e-4);
        EXPECT_NEAR(acc[i], 1.5 + n, 1e-4);
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Isas, PaperOpsTest, ::testing::ValuesIn(::xlstmd::testing::TestIsas()),
                         [](const ::testing::TestParamInfo<Isa>& i) {
                           return std::string(cpu::IsaName(i.param));
                         });

}  // namespace
}  // namespace xlstmd::kernels
