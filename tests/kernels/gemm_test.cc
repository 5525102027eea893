// cpu::Gemm against a double-precision reference on odd shapes, padded strides, both weight
// storage dtypes and every ISA this CPU supports; and batch invariance: a row's result is
// bit-identical whatever M, the other rows, the tile position or the thread split.
//
// Tolerance: the kernels sum k products in f32 with at most ceil(k/8) sequential additions per
// lane plus a 3- or 4-level tree, so |y - ref| <= (ceil(k/8) + 6) * 2^-24 * (sum_k |x*w| +
// |y0|) bounds every ISA's rounding error (a first-order worst case, not a statistical one).
// The bf16 reference multiplies by the bf16-rounded weights, which is what the kernel sees.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/testing/reference_ops.h"
#include "tests/testing/isa.h"

namespace xlstmd::kernels::cpu {
namespace {

using ::xlstmd::testing::ReferenceF32ToBf16;
using ::xlstmd::testing::ReferenceMatMul;
using ::xlstmd::testing::RoundToBf16;

// The ISAs this run tests (tests/testing/isa.h).
std::vector<Isa> SupportedIsas() { return ::xlstmd::testing::TestIsas(); }

// A weight matrix in test-owned storage. `values` holds what the kernel reads, as f32
// (bf16-rounded for kBF16), with the same stride.
struct TestWeights {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  std::vector<float> values;
  std::vector<char> packed;  // the packed copy (PackGemmWeights) AVX-512 and AVX2 read
  CpuMatrix w;

  TestWeights(int64_t rows, int64_t cols, int64_t ld, DType dtype, std::mt19937& rng)
      : values(rows * ld + 1, 0.0f) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < ld; ++c) {
        // Poison the stride padding: the kernel must never let it reach a result.
        values[r * ld + c] = c < cols ? dist(rng) : std::nanf("");
      }
    }
    w = CpuMatrix(dtype, rows, cols, ld, nullptr, nullptr, 0);
    if (dtype == DType::kBF16) {
      bf16.resize(values.size());
      for (size_t i = 0; i < values.size(); ++i) {
        bf16[i] = ReferenceF32ToBf16(values[i]);
        values[i] = RoundToBf16(values[i]);
      }
      w.data = bf16.data();
    } else {
      f32 = values;
      w.data = f32.data();
    }
    packed.resize(PackedGemmBytes(dtype, rows, cols));
    if (!packed.empty()) {
      PackGemmWeights(w, packed.data());
      w.packed = packed.data();
    }
  }
};

std::vector<float> RandomVector(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& e : v) e = dist(rng);
  return v;
}

std::string Label(Isa isa, DType dtype, int64_t m, int64_t k, int64_t n, bool acc) {
  return std::string(IsaName(isa)) + " " + DTypeName(dtype) + " m=" + std::to_string(m) +
         " k=" + std::to_string(k) + " n=" + std::to_string(n) + " acc=" + std::to_string(acc);
}

DType DTypeOf(int i) { return i == 0 ? DType::kF32 : DType::kBF16; }

// Runs one shape on every ISA, with and without accumulation, and checks the error bound.
void CheckShape(ThreadPool& pool, DType dtype, int64_t m, int64_t k, int64_t n,
                std::mt19937& rng) {
  const int64_t ldx = k + 3, ldw = k + 5, ldy = n + 2;  // padded, unaligned strides
  TestWeights tw(n, k, ldw, dtype, rng);
  std::vector<float> x = RandomVector(m * ldx, rng);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t c = k; c < ldx; ++c) x[i * ldx + c] = std::nanf("");  // must never be read
  }
  const std::vector<float> y0 = RandomVector(m * ldy, rng, 4.0f);
  const auto ref = ReferenceMatMul(x.data(), m, k, ldx, tw.values.data(), n, ldw);
  const double unit = std::ldexp(1.0, -24) * (static_cast<double>((k + 7) / 8) + 6);
  for (Isa isa : SupportedIsas()) {
    for (bool use_packed : {false, true}) {  // AVX-512 and AVX2 read `packed` when present
      tw.w.packed = use_packed && !tw.packed.empty() ? tw.packed.data() : nullptr;
      for (bool acc : {false, true}) {
        std::vector<float> y = y0;
        Gemm(pool, isa, MatMulParams{x.data(), &tw.w, y.data(), m, ldx, ldy, acc});
        int bad = 0;
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < ldy; ++j) {
            const float got = y[i * ldy + j];
            if (j >= n) {  // beyond the n outputs: untouched
              if (std::memcmp(&got, &y0[i * ldy + j], sizeof(float)) != 0) ++bad;
              continue;
            }
            const double base = acc ? y0[i * ldy + j] : 0.0;
            const double want = base + ref.y[i * n + j];
            const double tol = unit * (ref.abs_sum[i * n + j] + std::fabs(base));
            if (!(std::fabs(got - want) <= tol) && bad++ < 3) {
              ADD_FAILURE() << Label(isa, dtype, m, k, n, acc) << " y[" << i << "," << j
                            << "] = " << got << ", want " << want << " +- " << tol;
            }
          }
        }
        EXPECT_EQ(bad, 0) << Label(isa, dtype, m, k, n, acc) << " packed=" << use_packed;
      }
    }
  }
}

TEST(GemmTest, MatchesReferenceOnOddShapes) {
  ThreadPool pool(2);
  std::mt19937 rng(1234);
  for (int d = 0; d < 2; ++d) {
    for (int64_t m : {1, 2, 3, 5, 17, 64, 67}) {
      for (int64_t k : {1, 7, 16, 31, 129, 1000}) {
        for (int64_t n : {1, 3, 15, 33, 257}) CheckShape(pool, DTypeOf(d), m, k, n, rng);
      }
    }
  }
}

// Long k and enough rows to span several L2-sized M blocks and the row-split path.
TEST(GemmTest, MatchesReferenceOnLargeShapes) {
  ThreadPool pool(2);
  std::mt19937 rng(99);
  for (int d = 0; d < 2; ++d) {
    CheckShape(pool, DTypeOf(d), 130, 3001, 50, rng);
    CheckShape(pool, DTypeOf(d), 2000, 256, 20, rng);  // narrow N: rows split across threads
    CheckShape(pool, DTypeOf(d), 9, 4100, 70, rng);
  }
}

TEST(GemmTest, EmptyReductionGivesZeroOrKeepsY) {
  ThreadPool pool(1);
  std::mt19937 rng(5);
  for (int d = 0; d < 2; ++d) {
    TestWeights tw(/*rows=*/9, /*cols=*/0, /*ld=*/0, DTypeOf(d), rng);
    const float x[1] = {1.0f};
    for (Isa isa : SupportedIsas()) {
      // M = 2 takes the packed kernel's streamed path, M = 5 its blocked one.
      for (int64_t m : {2, 5}) {
        std::vector<float> y(m * 9, 3.0f);
        Gemm(pool, isa, MatMulParams{x, &tw.w, y.data(), m, 0, 9, /*accumulate=*/true});
        for (float v : y) EXPECT_EQ(v, 3.0f) << IsaName(isa) << " m=" << m;
        Gemm(pool, isa, MatMulParams{x, &tw.w, y.data(), m, 0, 9, /*accumulate=*/false});
        for (float v : y) EXPECT_EQ(v, 0.0f) << IsaName(isa) << " m=" << m;
      }
    }
  }
}

// Every row of an M=37 product, computed alone or inside sub-batches of other sizes (which
// take the streamed, direct and panel paths), with 1 or 2 threads, must be bit-identical. The
// last shape is big enough that even M=1 is split across the two threads.
TEST(GemmTest, BatchInvariant) {
  constexpr int64_t kRows = 37;
  struct Case {
    int64_t k, n;
    std::vector<int64_t> batches;
  };
  const Case cases[] = {{1000, 257, {1, 2, 3, 5, 8, 16, 37}},
                        {31, 257, {1, 2, 3, 5, 8, 16, 37}},
                        {2055, 257, {1, 3, 5, 16, 37}},
                        {4000, 1000, {1, 37}}};
  std::mt19937 rng(7);
  ThreadPool pool1(1), pool2(2);
  for (int d = 0; d < 2; ++d) {
    for (const Case& c : cases) {
      const int64_t n = c.n, k = c.k, ldx = k + 1;
      TestWeights tw(n, k, k + 9, DTypeOf(d), rng);
      const std::vector<float> x = RandomVector(kRows * ldx, rng);
      const std::vector<float> y0 = RandomVector(kRows * n, rng);
      for (Isa isa : SupportedIsas()) {
        for (bool use_packed : {false, true}) {
          tw.w.packed = use_packed ? tw.packed.data() : nullptr;
          for (bool acc : {false, true}) {
            std::vector<float> full = y0;
            Gemm(pool1, isa, MatMulParams{x.data(), &tw.w, full.data(), kRows, ldx, n, acc});
            for (ThreadPool* pool : {&pool1, &pool2}) {
              for (int64_t batch : c.batches) {
                std::vector<float> part = y0;
                for (int64_t r = 0; r < kRows; r += batch) {
                  const int64_t m = std::min(batch, kRows - r);
                  Gemm(
                      *pool, isa,
                      MatMulParams{x.data() + r * ldx, &tw.w, part.data() + r * n, m, ldx, n, acc});
                }
                for (int64_t r = 0; r < kRows; ++r) {
                  EXPECT_EQ(std::memcmp(&full[r * n], &part[r * n], n * sizeof(float)), 0)
                      << Label(isa, DTypeOf(d), batch, k, n, acc) << " row " << r
                      << " threads=" << pool->Threads() << " packed=" << use_packed;
                }
              }
            }
          }
        }
      }
    }
  }
}

// The AVX2 packed kernel runs the same FMA chain per element as the AVX-512 one, so on a CPU
// with both their results are identical bit for bit, on the streamed (M <= 3) and blocked paths.
TEST(GemmTest, PackedAvx2IsBitIdenticalToPackedAvx512) {
  const std::vector<Isa> isas = SupportedIsas();
  if (std::count(isas.begin(), isas.end(), Isa::kAvx512) == 0 ||
      std::count(isas.begin(), isas.end(), Isa::kAvx2) == 0) {
    GTEST_SKIP() << "needs both AVX-512 and AVX2 in this run (a CPU with both, no ISA cap)";
  }
  ThreadPool pool(2);
  std::mt19937 rng(7);
  for (int d = 0; d < 2; ++d) {
    for (int64_t m : {1, 2, 3, 4, 7, 13, 64}) {
      for (int64_t k : {1, 31, 129, 300}) {
        const int64_t n = 97, ldx = k + 1, ldy = n + 3;
        TestWeights tw(n, k, k + 2, DTypeOf(d), rng);
        const std::vector<float> x = RandomVector(m * ldx, rng);
        const std::vector<float> y0 = RandomVector(m * ldy, rng);
        for (bool acc : {false, true}) {
          std::vector<float> a = y0, b = y0;
          Gemm(pool, Isa::kAvx512, MatMulParams{x.data(), &tw.w, a.data(), m, ldx, ldy, acc});
          Gemm(pool, Isa::kAvx2, MatMulParams{x.data(), &tw.w, b.data(), m, ldx, ldy, acc});
          EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
              << Label(Isa::kAvx2, DTypeOf(d), m, k, n, acc);
        }
      }
    }
  }
}

}  // namespace
}  // namespace xlstmd::kernels::cpu
