// The row-wise CPU ops against double-precision references (tests/testing/reference_ops.h) on
// odd sizes with padded strides, with and without bias, in place where the contract allows,
// on 1 and 2 threads (big shapes take the parallel path); plus batch invariance (a row computed
// alone is bit-identical to the same row inside a batch) and the embedding gather.
//
// Tolerances, relative to max(1, |reference|): 2e-5 for the norms (f32 sums over up to 1024
// elements in 8 lanes: at most 128 sequential additions, 128 * 2^-24 = 7.6e-6, plus the rsqrt
// and products), 1e-6 for the pointwise ops (a few f32 roundings and libm's tanh/exp,
// each within 2 ulp).
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/cpu_matrix.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/testing/reference_ops.h"
#include "tests/testing/isa.h"

namespace xlstmd::kernels::cpu {
namespace {

using ::xlstmd::testing::ReferenceBf16ToF32;
using ::xlstmd::testing::ReferenceF32ToBf16;

// The ISAs this run tests (tests/testing/isa.h): every op is checked on each (the AVX-512
// loops and the portable ones the AVX2 and scalar settings use).
std::vector<Isa> SupportedIsas() { return ::xlstmd::testing::TestIsas(); }

constexpr double kNormTol = 2e-5;
constexpr double kPointwiseTol = 1e-6;

struct Shape {
  int64_t rows, dim;
};
// Small odd shapes plus one big enough (160 x 1024) for the rows to be split across threads.
const Shape kShapes[] = {{1, 1}, {1, 7}, {3, 64}, {17, 257}, {5, 1000}, {160, 1024}};

std::vector<float> Random(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& e : v) e = dist(rng);
  return v;
}

// Compares a strided f32 result with a dense double reference.
void ExpectNear(const float* y, int64_t ldy, const std::vector<double>& ref, int64_t rows,
                int64_t cols, double tol, const std::string& what) {
  int bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double want = ref[r * cols + c];
      const double got = y[r * ldy + c];
      if (!(std::fabs(got - want) <= tol * std::max(1.0, std::fabs(want))) && bad++ < 3) {
        ADD_FAILURE() << what << " [" << r << "," << c << "] = " << got << ", want " << want;
      }
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

std::string Name(const char* op, const Shape& s, int threads, bool bias) {
  return std::string(op) + " rows=" + std::to_string(s.rows) + " dim=" + std::to_string(s.dim) +
         " threads=" + std::to_string(threads) + " bias=" + std::to_string(bias);
}

TEST(ElementwiseTest, RmsNormMatchesReference) {
  std::mt19937 rng(1);
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (const Shape& s : kShapes) {
      for (bool bias : {false, true}) {
        const int64_t ld = s.dim + 5;
        std::vector<float> x = Random(s.rows * ld, rng, -3, 3);
        const std::vector<float> w = Random(s.dim, rng, 0.5, 1.5), b = Random(s.dim, rng, -1, 1);
        const float* bp = bias ? b.data() : nullptr;
        const auto ref = testing::ReferenceRmsNorm(x.data(), s.rows, s.dim, ld, w.data(), bp, 1e-5);
        std::vector<float> y(s.rows * (s.dim + 2));
        RmsNorm(pool, {x.data(), w.data(), bp, y.data(), s.rows, s.dim, ld, s.dim + 2, 1e-5f});
        ExpectNear(y.data(), s.dim + 2, ref, s.rows, s.dim, kNormTol, Name("rms", s, threads, bias));
        // In place (y aliases x) gives the same bits.
        RmsNorm(pool, {x.data(), w.data(), bp, x.data(), s.rows, s.dim, ld, ld, 1e-5f});
        for (int64_t r = 0; r < s.rows; ++r) {
          EXPECT_EQ(std::memcmp(&x[r * ld], &y[r * (s.dim + 2)], s.dim * sizeof(float)), 0);
        }
      }
    }
  }
}

TEST(ElementwiseTest, BiasSoftCapMatchesReference) {
  std::mt19937 rng(2);
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (const Shape& s : kShapes) {
      for (float cap : {0.0f, 15.0f}) {
        for (bool bias : {false, true}) {
          const int64_t ld = s.dim + 3;
          std::vector<float> x = Random(s.rows * ld, rng, -40, 40);
          const std::vector<float> b = Random(s.dim, rng, -5, 5);
          const float* bp = bias ? b.data() : nullptr;
          const auto ref = testing::ReferenceBiasSoftCap(x.data(), s.rows, s.dim, ld, bp, cap);
          for (Isa isa : SupportedIsas()) {
            std::vector<float> y = x;
            BiasSoftCap(pool, {y.data(), bp, s.rows, s.dim, ld, cap}, isa);
            ExpectNear(y.data(), ld, ref, s.rows, s.dim, kPointwiseTol,
                       Name("softcap", s, threads, bias) + " cap=" + std::to_string(cap) + " " +
                           IsaName(isa));
          }
        }
      }
    }
  }
}

TEST(ElementwiseTest, SwiGluMatchesReference) {
  std::mt19937 rng(3);
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (const Shape& s : kShapes) {
      const int64_t ld_in = 2 * s.dim + 1;  // gate and up interleaved in one buffer
      const std::vector<float> in = Random(s.rows * ld_in, rng, -20, 20);
      const float* gate = in.data();
      const float* up = in.data() + s.dim;
      const auto ref = testing::ReferenceSwiGlu(gate, up, s.rows, s.dim, ld_in);
      for (Isa isa : SupportedIsas()) {
        std::vector<float> y(s.rows * (s.dim + 1));
        SwiGlu(pool, {gate, up, y.data(), s.rows, s.dim, ld_in, s.dim + 1}, isa);
        ExpectNear(y.data(), s.dim + 1, ref, s.rows, s.dim, kPointwiseTol,
                   Name("swiglu", s, threads, false) + " " + IsaName(isa));
      }
    }
  }
}

TEST(ElementwiseTest, HeadNormGateMatchesReference) {
  std::mt19937 rng(4);
  struct HeadShape {
    int64_t rows, heads, dh;
  };
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (const HeadShape& s : {HeadShape{1, 1, 1}, HeadShape{3, 4, 7}, HeadShape{17, 2, 129},
                               HeadShape{5, 8, 64}, HeadShape{80, 4, 512}}) {
      for (bool bias : {false, true}) {
        const int64_t width = s.heads * s.dh, ldh = width + 3, ldo = width + 1;
        // An offset keeps the mean far from 0, which stresses the mean subtraction.
        const std::vector<float> h = Random(s.rows * ldh, rng, 2, 6);
        const std::vector<float> o = Random(s.rows * ldo, rng, -8, 8);
        const std::vector<float> w = Random(width, rng, 0.5, 1.5), b = Random(width, rng, -1, 1);
        const float* bp = bias ? b.data() : nullptr;
        const auto ref = testing::ReferenceHeadNormGate(h.data(), o.data(), w.data(), bp, s.rows,
                                                        s.heads, s.dh, ldh, ldo, 1e-6);
        for (Isa isa : SupportedIsas()) {
          std::vector<float> y(s.rows * width);
          HeadNormGate(pool, {h.data(), o.data(), w.data(), bp, y.data(), s.rows, s.heads, s.dh,
                              ldh, ldo, width, 1e-6f}, isa);
          ExpectNear(y.data(), width, ref, s.rows, width, kNormTol,
                     Name("headnorm", Shape{s.rows, width}, threads, bias) + " " + IsaName(isa));
        }
      }
    }
  }
}

TEST(ElementwiseTest, EmbedGathersAndConverts) {
  ThreadPool pool(2);
  std::mt19937 rng(5);
  const int64_t vocab = 50, dim = 33, ld = 40, rows = 5000;  // big enough to go parallel
  const std::vector<float> f32 = Random(vocab * ld, rng, -2, 2);
  std::vector<uint16_t> bf16(f32.size());
  for (size_t i = 0; i < f32.size(); ++i) bf16[i] = ReferenceF32ToBf16(f32[i]);
  std::vector<int32_t> ids(rows);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % vocab);
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const void* data = dt == DType::kF32 ? static_cast<const void*>(f32.data()) : bf16.data();
    const CpuMatrix table(dt, vocab, dim, ld, const_cast<void*>(data), nullptr, 0);
    std::vector<float> y(rows * (dim + 1), -7.0f);
    Embed(pool, {&table, ids.data(), y.data(), rows, dim + 1});
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < dim; ++c) {
        const size_t src = ids[r] * ld + c;
        const float want = dt == DType::kF32 ? f32[src] : ReferenceBf16ToF32(bf16[src]);
        ASSERT_EQ(y[r * (dim + 1) + c], want) << "row " << r << " col " << c;
      }
      EXPECT_EQ(y[r * (dim + 1) + dim], -7.0f);  // the stride gap is left alone
    }
  }
}

// Each op on a 160-row batch (split across threads) vs the same rows one at a time.
TEST(ElementwiseTest, BatchInvariant) {
  ThreadPool pool(2);
  std::mt19937 rng(6);
  const int64_t rows = 160, dim = 1024, heads = 4;
  const std::vector<float> x = Random(rows * dim, rng, -3, 3), o = Random(rows * dim, rng, -3, 3);
  const std::vector<float> w = Random(dim, rng, 0.5, 1.5), b = Random(dim, rng, -1, 1);
  std::vector<float> batch(rows * dim), single(rows * dim);
  Isa isa = Isa::kScalar;
  auto run_all = [&](auto op) {
    op(0, rows, batch.data());
    for (int64_t r = 0; r < rows; ++r) op(r, 1, single.data() + r * dim);
    EXPECT_EQ(std::memcmp(batch.data(), single.data(), batch.size() * sizeof(float)), 0)
        << IsaName(isa);
  };
  for (Isa each : SupportedIsas()) {
  isa = each;
  run_all([&](int64_t r0, int64_t n, float* y) {
    RmsNorm(pool, {x.data() + r0 * dim, w.data(), b.data(), y, n, dim, dim, dim, 1e-5f});
  });
  run_all([&](int64_t r0, int64_t n, float* y) {
    SwiGlu(pool, {x.data() + r0 * dim, o.data() + r0 * dim, y, n, dim, dim, dim}, isa);
  });
  run_all([&](int64_t r0, int64_t n, float* y) {
    HeadNormGate(pool, {x.data() + r0 * dim, o.data() + r0 * dim, w.data(), b.data(), y, n, heads,
                        dim / heads, dim, dim, dim, 1e-6f}, isa);
  });
  run_all([&](int64_t r0, int64_t n, float* y) {
    std::memcpy(y, x.data() + r0 * dim, n * dim * sizeof(float));
    BiasSoftCap(pool, {y, b.data(), n, dim, dim, 2.0f}, isa);
  });
  }
}

// The vector exp/tanh/sigmoid (vmath.h, AVX-512 and AVX2) over their whole float range, one element per row so every
// value also goes through the masked row tail: huge and tiny arguments (overflow to inf,
// underflow through the subnormals to 0), zeros of both signs, tiny |x| where tanh(x) ~ x
// needs relative accuracy, NaN. Checked against double references with the pointwise
// tolerance relative to max(|want|, 1e-30) for tanh near 0 (relative accuracy there matters:
// the soft cap multiplies it by 15-30).
TEST(ElementwiseTest, TranscendentalsOverTheirRange) {
  ThreadPool pool(1);
  std::vector<float> xs = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-7f, -3e-6f, 0.01f, -0.2f, 0.34f,
                           0.35f, -0.36f, 0.7f, 1.0f, -1.5f, 3.0f, 9.0f, -9.5f, 20.0f, -30.0f,
                           80.0f, 88.5f, 88.8f, 95.0f, -86.0f, -87.5f, -95.0f, -103.0f, -110.0f,
                           -1e30f, 1e30f, INFINITY, -INFINITY};
  std::mt19937 rng(9);
  for (float v : Random(2000, rng, -100, 100)) xs.push_back(v);
  for (float v : Random(2000, rng, -1, 1)) xs.push_back(v);
  const int64_t n = static_cast<int64_t>(xs.size());
  for (Isa isa : SupportedIsas()) {
    // Soft cap with cap 1: tanh itself.
    std::vector<float> t = xs;
    BiasSoftCap(pool, {t.data(), nullptr, n, 1, 1, 1.0f}, isa);
    // SwiGLU with up = 1: silu(x) = x * sigmoid(x).
    std::vector<float> in(2 * n), y(n);
    for (int64_t i = 0; i < n; ++i) {
      in[2 * i] = xs[i];
      in[2 * i + 1] = 1.0f;
    }
    SwiGlu(pool, {in.data(), in.data() + 1, y.data(), n, 1, 2, 1}, isa);
    for (int64_t i = 0; i < n; ++i) {
      const double x = xs[i];
      const double want_t = std::tanh(x);
      EXPECT_LE(std::fabs(t[i] - want_t), kPointwiseTol * std::max(std::fabs(want_t), 1e-30))
          << IsaName(isa) << " tanh(" << x << ") = " << t[i];
      if (std::isinf(x)) {  // silu(inf) = inf; silu(-inf) = -inf / inf, NaN on both paths
        if (x > 0) {
          EXPECT_EQ(y[i], x) << IsaName(isa);
        } else {
          EXPECT_TRUE(std::isnan(y[i])) << IsaName(isa) << " silu(-inf) = " << y[i];
        }
        continue;
      }
      const double want_s = x / (1.0 + std::exp(-x));
      EXPECT_LE(std::fabs(y[i] - want_s), kPointwiseTol * std::max(1.0, std::fabs(want_s)))
          << IsaName(isa) << " silu(" << x << ") = " << y[i];
    }
    std::vector<float> nan = {NAN};
    BiasSoftCap(pool, {nan.data(), nullptr, 1, 1, 1, 1.0f}, isa);
    EXPECT_TRUE(std::isnan(nan[0])) << IsaName(isa);
  }
}

}  // namespace
}  // namespace xlstmd::kernels::cpu
