// Quantized weights (kernels/quant.h, kernels/cpu/gemm_quant.h): the f16 conversion against
// the compiler's _Float16, the quantizers' error bounds, the GEMM against a double-precision
// evaluation of the grouped formula, every ISA kernel bit-identical to the scalar one (the
// arithmetic is defined once for all ISAs), batch invariance across M, paths and threads, and
// the backend's two upload paths (quantize at load, pre-quantized) giving the same matrix.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_quant.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/quant.h"
#include "tests/testing/isa.h"

namespace xlstmd::kernels::cpu {
namespace {

using ::testing::HasSubstr;

std::vector<float> Gaussian(size_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (float& e : v) e = d(rng);
  return v;
}

// A quantized matrix in canonical form plus its packed copy, as the backend would hold it.
struct QuantWeights {
  DType dtype;
  int64_t rows, cols;
  std::vector<uint8_t> codes, scales;
  std::vector<char> packed;
  CpuMatrix w;

  QuantWeights(DType dt, int64_t r, int64_t c, std::mt19937& rng) : dtype(dt), rows(r), cols(c) {
    const std::vector<float> src = Gaussian(static_cast<size_t>(r * c), rng);
    const size_t cb = QuantCodeBytesPerRow(dt, c), sb = QuantScaleBytesPerRow(dt, c);
    codes.resize(r * cb);
    scales.resize(r * sb);
    for (int64_t i = 0; i < r; ++i) {
      EXPECT_TRUE(QuantizeRow(dt, src.data() + i * c, c, codes.data() + i * cb,
                              scales.data() + i * sb).ok());
    }
    packed.resize(QuantPackedBytes(dt, r, c));
    PackQuantized(View(), packed.data());
    w = CpuMatrix(dt, r, c, c, nullptr, packed.data(), packed.size());
  }
  QuantizedMatrixView View() const {
    return {dtype, rows, cols, codes.data(), scales.data()};
  }
};

TEST(QuantTest, HalfConversionMatchesFloat16) {
#ifndef __FLT16_MAX__
  // clang 14 (the sanitizer builds) has no _Float16 on x86; the GCC suite runs this.
  GTEST_SKIP() << "this compiler has no _Float16 to compare with";
#else
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    const _Float16 ref = std::bit_cast<_Float16>(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(static_cast<float>(ref)));
      continue;
    }
    ASSERT_EQ(std::bit_cast<uint32_t>(f), std::bit_cast<uint32_t>(static_cast<float>(ref)))
        << std::hex << h;
    ASSERT_EQ(FloatToHalf(f), h) << std::hex << h;
  }
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const float f = std::bit_cast<float>(bits(rng));
    if (std::isnan(f)) continue;
    const uint16_t want = std::bit_cast<uint16_t>(static_cast<_Float16>(f));
    ASSERT_EQ(FloatToHalf(f), want) << f;
  }
#endif
}

TEST(QuantTest, Int8RowBound) {
  std::mt19937 rng(1);
  const std::vector<float> w = Gaussian(1000, rng);
  std::vector<int8_t> q(w.size());
  float s = 0;
  ASSERT_TRUE(QuantizeRow(DType::kI8, w.data(), 1000, q.data(), &s).ok());
  float amax = 0;
  for (float v : w) amax = std::max(amax, std::fabs(v));
  EXPECT_FLOAT_EQ(s, amax / 127.0f);
  int extremes = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_LE(std::fabs(w[i] - q[i] * s), 0.5f * s * 1.0001f) << i;
    extremes += std::abs(q[i]) == 127;
  }
  EXPECT_GE(extremes, 1);
  // All zeros: scale 0, codes 0.
  std::vector<float> zeros(40, 0.0f);
  ASSERT_TRUE(QuantizeRow(DType::kI8, zeros.data(), 40, q.data(), &s).ok());
  EXPECT_EQ(s, 0.0f);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(q[i], 0);
}

TEST(QuantTest, Q4RowBoundAndPadding) {
  std::mt19937 rng(2);
  const int64_t cols = 77;  // three groups, the last partial
  const std::vector<float> w = Gaussian(cols, rng);
  std::vector<uint8_t> codes(Q4RowBytes(cols), 0xFF);
  std::vector<uint16_t> scales(Q4Groups(cols));
  ASSERT_TRUE(QuantizeRow(DType::kQ4, w.data(), cols, codes.data(), scales.data()).ok());
  const QuantizedMatrixView v{DType::kQ4, 1, cols, codes.data(), scales.data()};
  ASSERT_TRUE(ValidateQuantized(v).ok());
  for (int64_t c = 0; c < cols; ++c) {
    const float d = QuantScaleAt(v, 0, c);
    const int q = QuantCodeAt(v, 0, c);
    EXPECT_GE(q, -8);
    EXPECT_LE(q, 7);
    // Within half a step, or a whole step on the clamped (+7) side.
    EXPECT_LE(std::fabs(w[c] - q * d), std::fabs(d) * (q == 7 ? 1.001f : 0.5001f)) << c;
  }
  for (int64_t c = cols; c < Q4Groups(cols) * kQ4Group; ++c) EXPECT_EQ(QuantCodeAt(v, 0, c), 0);
  // Each group's largest element maps to -8 exactly.
  for (int64_t g = 0; g < Q4Groups(cols); ++g) {
    int64_t arg = g * 32;
    for (int64_t c = g * 32; c < std::min<int64_t>(cols, g * 32 + 32); ++c) {
      if (std::fabs(w[c]) > std::fabs(w[arg])) arg = c;
    }
    EXPECT_EQ(QuantCodeAt(v, 0, arg), -8) << g;
  }
}

TEST(QuantTest, RejectsNonFiniteAndBadViews) {
  std::vector<float> w(64, 1.0f);
  w[40] = std::nanf("");
  std::vector<uint8_t> codes(64), scales(64);
  for (DType dt : {DType::kI8, DType::kQ4}) {
    absl::Status s = QuantizeRow(dt, w.data(), 64, codes.data(), scales.data());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("column 40"));
  }
  EXPECT_FALSE(QuantizeRow(DType::kBF16, w.data(), 64, codes.data(), scales.data()).ok());
  const float huge[2] = {1e30f, 1.0f};
  EXPECT_THAT(QuantizeRow(DType::kQ4, huge, 2, codes.data(), scales.data()).message(),
              HasSubstr("f16 range"));

  const float inf_scale = std::numeric_limits<float>::infinity();
  int8_t q = 1;
  EXPECT_FALSE(ValidateQuantized({DType::kI8, 1, 1, &q, &inf_scale}).ok());
  uint8_t nib[16] = {};
  uint16_t sc = FloatToHalf(0.5f);
  nib[1] = 0x10;  // column 3 of a 2-column row: padding must be zero
  EXPECT_THAT(ValidateQuantized({DType::kQ4, 1, 2, nib, &sc}).message(), HasSubstr("padding"));
  EXPECT_FALSE(ValidateQuantized({DType::kQ4, 1, 2, nullptr, &sc}).ok());
  EXPECT_FALSE(ValidateQuantized({DType::kBF16, 1, 2, nib, &sc}).ok());
}

// The grouped formula of gemm_quant.h in double precision, and the sum of |terms| for the
// rounding bound. q4's chains run over code + 8 from an offset of -8 times the x (gemm_quant.h),
// so their partial sums are bounded by |x| (|code| + 16) per element instead.
void Reference(const QuantWeights& qw, const float* x, double* y, double* abs_sum) {
  const QuantizedMatrixView v = qw.View();
  const double offset = qw.dtype == DType::kQ4 ? 16.0 : 0.0;
  for (int64_t n = 0; n < qw.rows; ++n) {
    double acc = 0, mag = 0;
    for (int64_t c = 0; c < qw.cols; ++c) {
      const int code = QuantCodeAt(v, n, c);
      const double xs = static_cast<double>(x[c]) * QuantScaleAt(v, n, c);
      acc += xs * code;
      mag += std::fabs(xs) * (std::abs(code) + offset);
    }
    y[n] = acc;
    abs_sum[n] = mag;
  }
}

std::string Label(Isa isa, DType dt, int64_t m, int64_t k, int64_t n, bool acc) {
  return std::string(IsaName(isa)) + " " + DTypeName(dt) + " m=" + std::to_string(m) +
         " k=" + std::to_string(k) + " n=" + std::to_string(n) + " acc=" + std::to_string(acc);
}

TEST(GemmQuantTest, ScalarMatchesReferenceAndIsasMatchScalarBitForBit) {
  ThreadPool pool(2);
  std::mt19937 rng(11);
  for (DType dt : {DType::kI8, DType::kQ4}) {
    for (int64_t m : {1, 2, 3, 4, 5, 13, 40}) {
      for (int64_t k : {1, 31, 32, 33, 100, 128, 129, 300}) {
        for (int64_t n : {1, 31, 32, 33, 95}) {
          QuantWeights qw(dt, n, k, rng);
          const int64_t ldx = k + 3, ldy = n + 2;
          const std::vector<float> x = Gaussian(m * ldx, rng);
          const std::vector<float> y0 = Gaussian(m * ldy, rng, 4.0f);
          std::vector<double> ref(n), mag(n);
          for (bool acc : {false, true}) {
            std::vector<float> ys = y0;
            Gemm(pool, Isa::kScalar, MatMulParams{x.data(), &qw.w, ys.data(), m, ldx, ldy, acc});
            for (int64_t i = 0; i < m; ++i) {
              Reference(qw, x.data() + i * ldx, ref.data(), mag.data());
              for (int64_t j = 0; j < ldy; ++j) {
                const float got = ys[i * ldy + j];
                if (j >= n) {
                  ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(y0[i * ldy + j]));
                  continue;
                }
                const double base = acc ? y0[i * ldy + j] : 0.0;
                // One chain of <= k FMAs per group, one FMA per group, one add.
                const double tol = std::ldexp(1.0, -24) * (k + 8) * (mag[j] + std::fabs(base));
                ASSERT_NEAR(got, base + ref[j], tol) << Label(Isa::kScalar, dt, m, k, n, acc);
              }
            }
            for (Isa isa : ::xlstmd::testing::TestIsas()) {
              if (isa == Isa::kScalar) continue;
              std::vector<float> yi = y0;
              Gemm(pool, isa, MatMulParams{x.data(), &qw.w, yi.data(), m, ldx, ldy, acc});
              ASSERT_EQ(std::memcmp(yi.data(), ys.data(), ys.size() * sizeof(float)), 0)
                  << Label(isa, dt, m, k, n, acc);
            }
          }
        }
      }
    }
  }
}

TEST(GemmQuantTest, EmptyReduction) {
  ThreadPool pool(2);
  std::mt19937 rng(5);
  for (DType dt : {DType::kI8, DType::kQ4}) {
    QuantWeights qw(dt, 9, 0, rng);
    for (Isa isa : ::xlstmd::testing::TestIsas()) {
      for (int64_t m : {1, 5}) {
        std::vector<float> y(m * 9, 3.0f);
        Gemm(pool, isa, MatMulParams{nullptr, &qw.w, y.data(), m, 0, 9, true});
        for (float v : y) EXPECT_EQ(v, 3.0f);
        Gemm(pool, isa, MatMulParams{nullptr, &qw.w, y.data(), m, 0, 9, false});
        for (float v : y) EXPECT_EQ(v, 0.0f);
      }
    }
  }
}

// A row's result does not depend on M (streamed vs blocked paths, strip heights), on the other
// rows, or on the thread split.
TEST(GemmQuantTest, BatchInvariant) {
  constexpr int64_t kRows = 37;
  ThreadPool pool1(1), pool2(2);
  std::mt19937 rng(9);
  for (DType dt : {DType::kI8, DType::kQ4}) {
    for (auto [k, n] : {std::pair<int64_t, int64_t>{1000, 257}, {45, 300}, {2055, 130}}) {
      QuantWeights qw(dt, n, k, rng);
      const int64_t ldx = k + 1;
      const std::vector<float> x = Gaussian(kRows * ldx, rng);
      const std::vector<float> y0 = Gaussian(kRows * n, rng);
      std::vector<Isa> isas = ::xlstmd::testing::TestIsas();
      isas.push_back(Isa::kScalar);
      for (Isa isa : isas) {
        for (bool acc : {false, true}) {
          std::vector<float> full = y0;
          Gemm(pool1, isa, MatMulParams{x.data(), &qw.w, full.data(), kRows, ldx, n, acc});
          for (ThreadPool* pool : {&pool1, &pool2}) {
            for (int64_t batch : {1, 2, 3, 4, 7, 16}) {
              std::vector<float> part = y0;
              for (int64_t r = 0; r < kRows; r += batch) {
                const int64_t m = std::min(batch, kRows - r);
                Gemm(*pool, isa,
                     MatMulParams{x.data() + r * ldx, &qw.w, part.data() + r * n, m, ldx, n, acc});
              }
              ASSERT_EQ(std::memcmp(full.data(), part.data(), full.size() * sizeof(float)), 0)
                  << Label(isa, dt, batch, k, n, acc) << " threads=" << pool->Threads();
            }
          }
        }
      }
    }
  }
}

// Quantize-at-load and pre-quantized upload make the same packed bytes; the quantized product
// stays close to the float one (a loose bound: a broken kernel is off by O(1)).
TEST(GemmQuantTest, BackendUploadPathsAgreeAndApproximateFloat) {
  std::mt19937 rng(4);
  const int64_t rows = 70, cols = 200;
  const std::vector<float> src = Gaussian(rows * cols, rng, 0.05f);
  auto be = CpuBackend::Create(BackendOptions{2, DType::kF32});
  ASSERT_TRUE(be.ok());
  auto wf = (*be)->UploadMatrix(src.data(), DType::kF32, rows, cols);
  ASSERT_TRUE(wf.ok());
  const std::vector<float> x = Gaussian(cols, rng);
  std::vector<float> yf(rows);
  (*be)->MatMul(MatMulParams{x.data(), *wf, yf.data(), 1, cols, rows, false});
  for (auto [dt, rel] : {std::pair<DType, double>{DType::kI8, 0.02}, {DType::kQ4, 0.25}}) {
    auto wq = (*be)->UploadMatrixAs(src.data(), DType::kF32, rows, cols, dt);
    ASSERT_TRUE(wq.ok()) << wq.status();
    EXPECT_EQ((*be)->MatrixDType(*wq), dt);
    EXPECT_EQ((*be)->MatrixBytes(*wq), QuantPackedBytes(dt, rows, cols));
    // The same through the canonical layout.
    std::vector<uint8_t> codes(rows * QuantCodeBytesPerRow(dt, cols));
    std::vector<uint8_t> scales(rows * QuantScaleBytesPerRow(dt, cols));
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_TRUE(QuantizeRow(dt, src.data() + r * cols, cols,
                              codes.data() + r * QuantCodeBytesPerRow(dt, cols),
                              scales.data() + r * QuantScaleBytesPerRow(dt, cols)).ok());
    }
    auto wp = (*be)->UploadQuantized({dt, rows, cols, codes.data(), scales.data()});
    ASSERT_TRUE(wp.ok()) << wp.status();
    EXPECT_EQ(std::memcmp(CpuMat(*wq)->packed, CpuMat(*wp)->packed, QuantPackedBytes(dt, rows, cols)),
              0);
    std::vector<float> yq(rows);
    (*be)->MatMul(MatMulParams{x.data(), *wq, yq.data(), 1, cols, rows, false});
    double err = 0, norm = 0;
    for (int64_t r = 0; r < rows; ++r) {
      err += (yq[r] - yf[r]) * (yq[r] - yf[r]);
      norm += yf[r] * yf[r];
    }
    EXPECT_LT(std::sqrt(err / norm), rel) << DTypeName(dt);
    EXPECT_GT(std::sqrt(err / norm), 0.0) << DTypeName(dt);
    (*be)->FreeMatrix(*wq);
    (*be)->FreeMatrix(*wp);
  }
  std::vector<float> bad = src;
  bad[5 * cols + 7] = std::numeric_limits<float>::infinity();
  auto wb = (*be)->UploadMatrixAs(bad.data(), DType::kF32, rows, cols, DType::kQ4);
  EXPECT_EQ(wb.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wb.status().message(), HasSubstr("row 5"));
  EXPECT_FALSE((*be)->UploadMatrixAs(src.data(), DType::kF32, rows, cols, DType::kF16).ok());
  (*be)->FreeMatrix(*wf);
}

}  // namespace
}  // namespace xlstmd::kernels::cpu
