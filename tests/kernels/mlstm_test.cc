// The mLSTM ops against a double-precision scalar reference of the recurrent step
// (xlstm-spec.md 2.1), on odd sizes, strided inputs, non-zero starting states and several
// sessions per call. The chunkwise form must agree with the step for every chunk size.
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_features.h"
#include "tests/testing/isa.h"

namespace xlstmd::kernels {
namespace {

struct Dims {
  int64_t heads, dqk, dv;
};

// Double-precision reference state for one session: C [H, dqk, dv], n [H, dqk], m [H].
struct RefState {
  std::vector<double> C, n, m;
  explicit RefState(const Dims& d)
      : C(d.heads * d.dqk * d.dv, 0.0), n(d.heads * d.dqk, 0.0), m(d.heads, 0.0) {}
};

double LogSigmoid(double x) { return std::min(x, 0.0) - std::log1p(std::exp(-std::fabs(x))); }

// One step of every head; inputs for one token row. Returns h [H*dv].
std::vector<double> RefStep(RefState& s, const Dims& d, const float* q, const float* k,
                            const float* v, const float* ig, const float* fg, double eps) {
  std::vector<double> h(d.heads * d.dv);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.dqk));
  for (int64_t j = 0; j < d.heads; ++j) {
    const double lf = LogSigmoid(fg[j]);
    const double m_new = std::max(lf + s.m[j], static_cast<double>(ig[j]));
    const double fa = std::exp(lf + s.m[j] - m_new), ia = std::exp(ig[j] - m_new);
    double qn = 0;
    std::vector<double> num(d.dv, 0.0);
    for (int64_t a = 0; a < d.dqk; ++a) {
      double& na = s.n[j * d.dqk + a];
      na = fa * na + ia * k[j * d.dqk + a];
      const double qa = q[j * d.dqk + a] * scale;
      qn += qa * na;
      for (int64_t c = 0; c < d.dv; ++c) {
        double& cc = s.C[(j * d.dqk + a) * d.dv + c];
        cc = fa * cc + ia * k[j * d.dqk + a] * v[j * d.dv + c];
        num[c] += qa * cc;
      }
    }
    const double den = std::max(std::fabs(qn), std::exp(-m_new)) + eps;
    for (int64_t c = 0; c < d.dv; ++c) h[j * d.dv + c] = num[c] / den;
    s.m[j] = m_new;
  }
  return h;
}

// Each case runs on every ISA this CPU supports (the AVX-512 kernels and the portable ones).
struct Case {
  Dims dims;
  cpu::Isa isa;
};

std::vector<Case> Cases() {
  const std::vector<cpu::Isa> isas = ::xlstmd::testing::TestIsas();
  std::vector<Case> out;
  // Odd sizes, the E=1024 head (dqk 64, dv 128: one full register block of the AVX-512
  // step), dv 83 (a masked tail), and heads past one block, which the AVX-512 step walks row
  // by row: dv 131 (a tail again) and xLSTM-7B's 256 x 512.
  for (const Dims& d : {Dims{1, 1, 1}, Dims{3, 5, 7}, Dims{2, 16, 32}, Dims{4, 33, 17},
                        Dims{2, 64, 128}, Dims{1, 19, 83}, Dims{1, 9, 131}, Dims{1, 256, 512}}) {
    for (cpu::Isa isa : isas) out.push_back({d, isa});
  }
  return out;
}

class MlstmOpsTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    BackendOptions o;
    o.threads = 2;
    auto be = cpu::CpuBackend::Create(o, GetParam().isa);
    ASSERT_TRUE(be.ok()) << be.status();
    backend_ = std::move(*be);
  }
  static Dims GetDims() { return GetParam().dims; }

  // Random token rows: per row [q | pad | k | pad | v | pad | i | f] with odd strides.
  void MakeInputs(int64_t rows, uint32_t seed) {
    const Dims d = GetDims();
    ld_ = d.heads * (2 * d.dqk + d.dv + 2) + 3;
    in_.assign(rows * ld_, 0.0f);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> gi(-8.0f, 15.0f), gf(-3.0f, 12.0f);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = in_.data() + r * ld_;
      for (int64_t c = 0; c < d.heads * (2 * d.dqk + d.dv); ++c) row[c] = nd(rng);
      for (int64_t j = 0; j < d.heads; ++j) {
        row[oi() + j] = gi(rng);
        row[of() + j] = gf(rng);
      }
    }
  }
  int64_t oq() const { return 0; }
  int64_t ok() const { return GetDims().heads * GetDims().dqk; }
  int64_t ov() const { return 2 * GetDims().heads * GetDims().dqk; }
  int64_t oi() const { return ov() + GetDims().heads * GetDims().dv; }
  int64_t of() const { return oi() + GetDims().heads; }

  int64_t SlotFloats() const {
    const Dims d = GetDims();
    return d.heads * d.dqk * d.dv + d.heads * d.dqk + d.heads + 5;  // odd padding on purpose
  }
  MlstmStateRef StateRef(float* arena) const {
    const Dims d = GetDims();
    return {arena, SlotFloats(), 0, d.heads * d.dqk * d.dv, d.heads * d.dqk * d.dv + d.heads * d.dqk};
  }
  MlstmDims KDims() const {
    const Dims d = GetDims();
    return {d.heads, d.dqk, d.dv, 1e-6f, 1.0f / std::sqrt(static_cast<float>(d.dqk))};
  }

  std::unique_ptr<Backend> backend_;
  std::vector<float> in_;
  int64_t ld_ = 0;
};

// Steps 3 sessions (slots 2, 0, 1) through 40 tokens, comparing every output with the
// double reference.
TEST_P(MlstmOpsTest, StepMatchesReference) {
  const Dims d = GetDims();
  const int64_t B = 3, T = 40;
  MakeInputs(B * T, 7);
  std::vector<float> arena(3 * SlotFloats(), 0.0f);
  std::vector<RefState> ref(B, RefState(d));
  const int32_t slots[B] = {2, 0, 1};
  const int64_t ldh = d.heads * d.dv + 1;
  std::vector<float> h(B * ldh);
  double worst = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* base = in_.data() + t * B * ld_;
    MlstmStepParams p{base + oq(), base + ok(), base + ov(), base + oi(), base + of(), h.data(),
                      slots, B, ld_, ld_, ld_, ld_, ld_, ldh, KDims(), StateRef(arena.data())};
    backend_->MlstmStep(p);
    for (int64_t b = 0; b < B; ++b) {
      const float* row = base + b * ld_;
      const auto want = RefStep(ref[b], d, row + oq(), row + ok(), row + ov(), row + oi(),
                                row + of(), 1e-6);
      for (int64_t c = 0; c < d.heads * d.dv; ++c) {
        worst = std::max(worst, std::fabs(h[b * ldh + c] - want[c]) / (1.0 + std::fabs(want[c])));
      }
    }
  }
  EXPECT_LT(worst, 2e-4);
  // The state itself: C relative to its max magnitude, m absolute.
  for (int64_t b = 0; b < B; ++b) {
    const float* st = arena.data() + slots[b] * SlotFloats();
    double cmax = 0, cerr = 0;
    for (size_t x = 0; x < ref[b].C.size(); ++x) {
      cmax = std::max(cmax, std::fabs(ref[b].C[x]));
      cerr = std::max(cerr, std::fabs(st[x] - ref[b].C[x]));
    }
    EXPECT_LE(cerr, 1e-4 * cmax + 1e-30);
    for (int64_t j = 0; j < d.heads; ++j) {
      EXPECT_NEAR(st[StateRef(nullptr).m_offset + j], ref[b].m[j], 1e-4);
    }
  }
}

// Three sequences of lengths 1, 29 and 70 in one chunkwise call, each continuing from a
// non-zero state, at chunk sizes that do and do not divide the lengths; outputs and final
// states must match stepping the same tokens.
TEST_P(MlstmOpsTest, ChunkwiseMatchesStepping) {
  const Dims d = GetDims();
  const int64_t lens[3] = {1, 29, 70};
  const int64_t total = 100;
  MakeInputs(total + 3 * 5, 11);  // 5 warm-up rows per sequence first
  const int64_t ldh = d.heads * d.dv;
  for (int64_t chunk : {1, 4, 16, 64, 100}) {
    SCOPED_TRACE(chunk);
    std::vector<float> a_step(3 * SlotFloats(), 0.0f), a_chunk(3 * SlotFloats(), 0.0f);
    const float* warm = in_.data() + total * ld_;
    for (int32_t s = 0; s < 3; ++s) {  // identical non-zero starting states
      for (int64_t t = 0; t < 5; ++t) {
        const float* row = warm + (s * 5 + t) * ld_;
        std::vector<float> h(ldh);
        for (float* ar : {a_step.data(), a_chunk.data()}) {
          MlstmStepParams p{row + oq(), row + ok(), row + ov(), row + oi(), row + of(), h.data(),
                            &s, 1, ld_, ld_, ld_, ld_, ld_, ldh, KDims(), StateRef(ar)};
          backend_->MlstmStep(p);
        }
      }
    }
    std::vector<float> h_step(total * ldh), h_chunk(total * ldh);
    const int32_t slots[3] = {1, 2, 0};
    const int64_t begin[3] = {0, 1, 30};
    for (int s = 0; s < 3; ++s) {
      for (int64_t t = 0; t < lens[s]; ++t) {
        const float* row = in_.data() + (begin[s] + t) * ld_;
        MlstmStepParams p{row + oq(), row + ok(), row + ov(), row + oi(), row + of(),
                          h_step.data() + (begin[s] + t) * ldh, &slots[s], 1, ld_, ld_, ld_, ld_,
                          ld_, ldh, KDims(), StateRef(a_step.data())};
        backend_->MlstmStep(p);
      }
    }
    const float* b = in_.data();
    MlstmChunkParams cp{b + oq(), b + ok(), b + ov(), b + oi(), b + of(), h_chunk.data(),
                        slots, begin, lens, begin, lens, 3, chunk, ld_, ld_, ld_, ld_, ld_, ldh,
                        KDims(),
                        StateRef(a_chunk.data())};
    backend_->MlstmChunkwise(cp);
    double worst = 0;
    for (size_t x = 0; x < h_step.size(); ++x) {
      worst = std::max(worst, std::fabs(h_step[x] - h_chunk[x]) / (1.0 + std::fabs(h_step[x])));
    }
    EXPECT_LT(worst, 2e-4);
    double smax = 0, serr = 0;
    for (size_t x = 0; x < a_step.size(); ++x) {
      smax = std::max(smax, static_cast<double>(std::fabs(a_step[x])));
      serr = std::max(serr, static_cast<double>(std::fabs(a_step[x] - a_chunk[x])));
    }
    EXPECT_LE(serr, 1e-4 * smax);
  }
}

INSTANTIATE_TEST_SUITE_P(OddSizes, MlstmOpsTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           const Dims& d = info.param.dims;
                           return std::string(cpu::IsaName(info.param.isa)) + "_h" +
                                  std::to_string(d.heads) + "_qk" + std::to_string(d.dqk) +
                                  "_v" + std::to_string(d.dv);
                         });

}  // namespace
}  // namespace xlstmd::kernels
