// Every op of the Backend seam on the CUDA backend against the CPU backend, and batch
// invariance (a row's result bit-identical alone and in any batch, with shuffled and padded
// slots). Label `gpu`: skipped without a device unless XLSTMD_REQUIRE_GPU=1.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/backend_registry.h"
#include "tests/gpu/gpu_testutil.h"
#include "tests/testing/reference_ops.h"

namespace xlstmd::testing {
namespace {

using kernels::DType;

class CudaOpsTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    XLSTMD_GPU_OR_SKIP(gpu_, GetParam());
    auto cpu = kernels::CreateBackend("cpu", {2, GetParam()});
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    cpu_ = std::move(*cpu);
  }
  std::unique_ptr<kernels::Backend> gpu_, cpu_;
  std::mt19937 rng_{5};
};

// y = x W^T on both backends, for shapes around the kernel's vector and tile edges, through
// the decode kernel and the prefill path (cuBLASLt; with bf16 weights on x split into bf16
// hi + lo, which leaves up to 2^-16 of each x out, hence the looser bound).
TEST_P(CudaOpsTest, MatMulMatchesCpu) {
  for (int64_t k : {1, 7, 8, 64, 300, 1031}) {
    for (int64_t n : {1, 37, 130}) {
      const std::vector<float> w = Gaussian(n * k, rng_, 0.1f);
      auto wc = cpu_->UploadMatrix(w.data(), DType::kF32, n, k);
      auto wg = gpu_->UploadMatrix(w.data(), DType::kF32, n, k);
      ASSERT_TRUE(wc.ok() && wg.ok());
      kernels::WeightMatrixPtr pc(*wc, {cpu_.get()}), pg(*wg, {gpu_.get()});
      ASSERT_TRUE(gpu_->ReserveMatMul(300).ok());
      for (int64_t m : {1, 5, 33, 300}) {
        const std::vector<float> x = Gaussian(m * k, rng_);
        const std::vector<float> y0 = Gaussian(m * n, rng_);
        for (bool acc : {false, true}) {
          std::vector<float> yc = y0;
          cpu_->MatMul({x.data(), pc.get(), yc.data(), m, k, n, acc});
          for (bool prefill : {false, true}) {
            BackendArray xg(gpu_.get(), x), yg(gpu_.get(), y0);
            gpu_->MatMul({xg.get(), pg.get(), yg.get(), m, k, n, acc, prefill});
            const double bound = prefill && GetParam() == DType::kBF16 ? 5e-5 : 1e-5;
            EXPECT_LT(RelDiff(yg.Read(), yc), bound)
                << m << "x" << n << "x" << k << " acc " << acc << " prefill " << prefill;
          }
          ASSERT_TRUE(gpu_->Synchronize().ok());
        }
      }
    }
  }
}

// Row m of a batched product is bit-identical to the same row alone, for M = 1..300, on
// either path (the prefill one staged in windows of 64 rows, so windows are crossed too).
TEST_P(CudaOpsTest, MatMulIsBatchInvariant) {
  const int64_t n = 97, k = 515;
  const std::vector<float> w = Gaussian(n * k, rng_, 0.1f);
  auto wg = gpu_->UploadMatrix(w.data(), DType::kF32, n, k);
  ASSERT_TRUE(wg.ok());
  kernels::WeightMatrixPtr pg(*wg, {gpu_.get()});
  ASSERT_TRUE(gpu_->ReserveMatMul(64).ok());
  const std::vector<float> x = Gaussian(300 * k, rng_);
  BackendArray xg(gpu_.get(), x);
  for (bool prefill : {false, true}) {
    std::vector<std::vector<float>> alone(300);
    for (int64_t r = 0; r < 300; ++r) {
      BackendArray y(gpu_.get(), std::vector<float>(n));
      gpu_->MatMul({xg.get() + r * k, pg.get(), y.get(), 1, k, n, false, prefill});
      alone[r] = y.Read();
    }
    for (int64_t m = 1; m <= 300; m += (m < 40 ? 1 : 13)) {
      BackendArray y(gpu_.get(), std::vector<float>(m * n));
      gpu_->MatMul({xg.get(), pg.get(), y.get(), m, k, n, false, prefill});
      const std::vector<float> got = y.Read();
      for (int64_t r = 0; r < m; ++r) {
        ASSERT_EQ(std::memcmp(got.data() + r * n, alone[r].data(), n * sizeof(float)), 0)
            << "row " << r << " of M=" << m << " prefill " << prefill;
      }
    }
    ASSERT_TRUE(gpu_->Synchronize().ok());
  }
}

// The prefill path with row strides wider than the rows (x: k + 5, y: n + 3), accumulating,
// across 64-row staging windows: against the CPU, and each row bit-identical to itself alone.
TEST_P(CudaOpsTest, PrefillMatMulWithStridesAccumulatesExactlyPerRow) {
  const int64_t n = 41, k = 203, ldx = k + 5, ldy = n + 3, rows = 130;
  const std::vector<float> w = Gaussian(n * k, rng_, 0.1f);
  auto wc = cpu_->UploadMatrix(w.data(), DType::kF32, n, k);
  auto wg = gpu_->UploadMatrix(w.data(), DType::kF32, n, k);
  ASSERT_TRUE(wc.ok() && wg.ok());
  kernels::WeightMatrixPtr pc(*wc, {cpu_.get()}), pg(*wg, {gpu_.get()});
  ASSERT_TRUE(gpu_->ReserveMatMul(64).ok());
  const std::vector<float> x = Gaussian(rows * ldx, rng_);
  const std::vector<float> y0 = Gaussian(rows * ldy, rng_);
  std::vector<float> yc = y0;
  cpu_->MatMul({x.data(), pc.get(), yc.data(), rows, ldx, ldy, true});
  BackendArray xg(gpu_.get(), x), yg(gpu_.get(), y0);
  gpu_->MatMul({xg.get(), pg.get(), yg.get(), rows, ldx, ldy, true, true});
  const std::vector<float> all = yg.Read();
  const double bound = GetParam() == DType::kBF16 ? 5e-5 : 1e-5;
  EXPECT_LT(RelDiff(all, yc), bound);
  for (int64_t r = 0; r < rows; r += 7) {
    BackendArray y1(gpu_.get(), std::vector<float>(y0.begin() + r * ldy,
                                                   y0.begin() + (r + 1) * ldy));
    gpu_->MatMul({xg.get() + r * ldx, pg.get(), y1.get(), 1, ldx, ldy, true, true});
    const std::vector<float> one = y1.Read();
    ASSERT_EQ(std::memcmp(one.data(), all.data() + r * ldy, n * sizeof(float)), 0) << "row " << r;
  }
  ASSERT_TRUE(gpu_->Synchronize().ok());
}

// --cuda-math bf16: each x is rounded to bf16 before its product, on both paths, and nothing
// else changes: the CPU multiplying the rounded x (and bf16-rounded weights: bf16 math stores
// bf16) agrees to f32 summation-order noise, and rows stay bit-identical alone or batched.
TEST_P(CudaOpsTest, Bf16MathRoundsTheInputsOnly) {
  kernels::BackendOptions o;
  o.math = kernels::MathMode::kBf16;
  o.weight_dtype = GetParam();
  auto made = kernels::CreateBackend("cuda", o);
  ASSERT_TRUE(made.ok()) << made.status();
  std::unique_ptr<kernels::Backend> bf = std::move(*made);
  EXPECT_EQ(bf->WeightDType(), DType::kBF16);
  auto cpu = kernels::CreateBackend("cpu", {2, DType::kBF16});
  ASSERT_TRUE(cpu.ok());
  const int64_t n = 67, k = 515;
  const std::vector<float> w = Gaussian(n * k, rng_, 0.1f);
  auto wc = (*cpu)->UploadMatrix(w.data(), DType::kF32, n, k);
  auto wg = bf->UploadMatrix(w.data(), DType::kF32, n, k);
  ASSERT_TRUE(wc.ok() && wg.ok());
  kernels::WeightMatrixPtr pc(*wc, {cpu->get()}), pg(*wg, {bf.get()});
  EXPECT_EQ(bf->MatrixDType(pg.get()), DType::kBF16);
  ASSERT_TRUE(bf->ReserveMatMul(64).ok());
  const int64_t rows = 130;
  const std::vector<float> x = Gaussian(rows * k, rng_);
  std::vector<float> xr = x;
  for (float& v : xr) v = RoundToBf16(v);
  std::vector<float> yc(rows * n);
  (*cpu)->MatMul({xr.data(), pc.get(), yc.data(), rows, k, n, false});
  BackendArray xg(bf.get(), x);
  for (bool prefill : {false, true}) {
    BackendArray yg(bf.get(), std::vector<float>(rows * n));
    bf->MatMul({xg.get(), pg.get(), yg.get(), rows, k, n, false, prefill});
    const std::vector<float> all = yg.Read();
    EXPECT_LT(RelDiff(all, yc), 1e-5) << "prefill " << prefill;
    for (int64_t r = 0; r < rows; r += 9) {
      BackendArray y1(bf.get(), std::vector<float>(n));
      bf->MatMul({xg.get() + r * k, pg.get(), y1.get(), 1, k, n, false, prefill});
      ASSERT_EQ(std::memcmp(y1.Read().data(), all.data() + r * n, n * sizeof(float)), 0)
          << "row " << r << " prefill " << prefill;
    }
  }
  ASSERT_TRUE(bf->Synchronize().ok());
}

TEST_P(CudaOpsTest, RowOpsMatchCpu) {
  const int64_t rows = 7, dim = 300, heads = 3, dh = 100;
  const std::vector<float> x = Gaussian(rows * dim, rng_), w = Gaussian(dim, rng_),
                           b = Gaussian(dim, rng_), o = Gaussian(rows * dim, rng_);
  BackendArray xg(gpu_.get(), x), wg(gpu_.get(), w), bg(gpu_.get(), b), og(gpu_.get(), o);
  for (const float* bias : {static_cast<const float*>(nullptr), b.data()}) {
    const bool has_b = bias != nullptr;
    std::vector<float> yc(rows * dim);
    BackendArray yg(gpu_.get(), yc);
    cpu_->RmsNorm({x.data(), w.data(), bias, yc.data(), rows, dim, dim, dim, 1e-6f});
    gpu_->RmsNorm({xg.get(), wg.get(), has_b ? bg.get() : nullptr, yg.get(), rows, dim, dim, dim,
                   1e-6f});
    EXPECT_LT(RelDiff(yg.Read(), yc), 1e-5) << "rmsnorm";
    cpu_->HeadNormGate({x.data(), o.data(), w.data(), bias, yc.data(), rows, heads, dh, dim, dim,
                        dim, 1e-6f});
    gpu_->HeadNormGate({xg.get(), og.get(), wg.get(), has_b ? bg.get() : nullptr, yg.get(), rows,
                        heads, dh, dim, dim, dim, 1e-6f});
    EXPECT_LT(RelDiff(yg.Read(), yc), 1e-5) << "head norm";
  }
  for (float cap : {0.0f, 15.0f}) {
    std::vector<float> xc = x;
    BackendArray xs(gpu_.get(), x);
    cpu_->BiasSoftCap({xc.data(), b.data(), rows, dim, dim, cap});
    gpu_->BiasSoftCap({xs.get(), bg.get(), rows, dim, dim, cap});
    EXPECT_LT(RelDiff(xs.Read(), xc), 1e-5) << "cap " << cap;
  }
  std::vector<float> yc(rows * (dim / 2));
  BackendArray yg(gpu_.get(), yc);
  cpu_->SwiGlu({x.data(), x.data() + dim / 2, yc.data(), rows, dim / 2, dim, dim / 2});
  gpu_->SwiGlu({xg.get(), xg.get() + dim / 2, yg.get(), rows, dim / 2, dim, dim / 2});
  EXPECT_LT(RelDiff(yg.Read(), yc), 1e-5) << "swiglu";
  const std::vector<int32_t> pick = {6, 0, 2, 2};
  BackendIndex<int32_t> pg(gpu_.get(), pick);
  std::vector<float> gc(4 * dim);
  BackendArray gg(gpu_.get(), gc);
  cpu_->GatherRows({x.data(), pick.data(), gc.data(), 4, dim, dim, dim});
  gpu_->GatherRows({xg.get(), pg.get(), gg.get(), 4, dim, dim, dim});
  EXPECT_EQ(gg.Read(), gc) << "gather";
}

TEST_P(CudaOpsTest, EmbedMatchesCpuWithPadding) {
  const int64_t vocab = 50, dim = 77;
  const std::vector<float> table = Gaussian(vocab * dim, rng_);
  auto tc = cpu_->UploadMatrix(table.data(), DType::kF32, vocab, dim);
  auto tg = gpu_->UploadMatrix(table.data(), DType::kF32, vocab, dim);
  ASSERT_TRUE(tc.ok() && tg.ok());
  kernels::WeightMatrixPtr pc(*tc, {cpu_.get()}), pg(*tg, {gpu_.get()});
  const std::vector<int32_t> ids = {3, -1, 49, 0};
  BackendIndex<int32_t> ig(gpu_.get(), ids);
  std::vector<float> yc(4 * dim);
  BackendArray yg(gpu_.get(), yc);
  cpu_->Embed({pc.get(), ids.data(), yc.data(), 4, dim});
  gpu_->Embed({pg.get(), ig.get(), yg.get(), 4, dim});
  EXPECT_EQ(yg.Read(), yc);  // a gather: exact
}

// The mLSTM step and chunkwise prefill against the CPU, and the step's batch invariance with
// shuffled slots and slot -1 padding rows.
TEST_P(CudaOpsTest, MlstmMatchesCpuAndIsBatchInvariant) {
  const kernels::MlstmDims d{2, 16, 24, 1e-6f, 0.25f};
  const int64_t qk = d.heads * d.dqk, v = d.heads * d.dv, ld = 2 * qk + v + 2 * d.heads;
  const int64_t slot_floats = d.heads * (d.dqk * d.dv + d.dqk + 1);
  const int64_t slots = 6, rows = 40;
  const kernels::MlstmStateRef ref{nullptr, slot_floats, 0, d.heads * d.dqk * d.dv,
                                   d.heads * (d.dqk * d.dv + d.dqk)};
  const std::vector<float> in = Gaussian(rows * ld, rng_);
  const std::vector<float> arena0(slots * slot_floats, 0.0f);
  // Chunkwise: three sequences (lengths 17, 1, 22) from zero states, chunk 16 on both.
  const std::vector<int32_t> seq_slots = {4, 0, 2};
  const std::vector<int64_t> begin = {0, 17, 18}, len = {17, 1, 22};
  std::vector<float> ac = arena0, hc(rows * v);
  BackendArray inp(gpu_.get(), in), ag(gpu_.get(), arena0), hg(gpu_.get(), hc);
  BackendIndex<int32_t> sg(gpu_.get(), seq_slots);
  BackendIndex<int64_t> bg(gpu_.get(), begin), lg(gpu_.get(), len);
  auto chunk = [&](const float* base, float* h, const int32_t* sl, const int64_t* b,
                   const int64_t* l, float* arena) {
    kernels::MlstmStateRef r = ref;
    r.arena = arena;
    return kernels::MlstmChunkParams{base, base + qk, base + 2 * qk, base + 2 * qk + v,
                                     base + 2 * qk + v + d.heads, h, sl, b, l, begin.data(),
                                     len.data(), 3, 16, ld, ld, ld, ld, ld, v, d, r};
  };
  cpu_->MlstmChunkwise(chunk(in.data(), hc.data(), seq_slots.data(), begin.data(), len.data(),
                             ac.data()));
  gpu_->MlstmChunkwise(chunk(inp.get(), hg.get(), sg.get(), bg.get(), lg.get(), ag.get()));
  EXPECT_LT(RelDiff(hg.Read(), hc), 1e-4) << "chunkwise h";
  EXPECT_LT(RelDiff(ag.Read(), ac), 1e-4) << "chunkwise state";

  // Steps from those states: rows 0..5 (slots shuffled, two padding rows) vs each row alone.
  const std::vector<int32_t> step_slots = {2, -1, 4, 0, -1, 1};
  auto step = [&](const float* base, float* h, const int32_t* sl, int64_t batch, float* arena) {
    kernels::MlstmStateRef r = ref;
    r.arena = arena;
    return kernels::MlstmStepParams{base, base + qk, base + 2 * qk, base + 2 * qk + v,
                                    base + 2 * qk + v + d.heads, h, sl, batch, ld, ld, ld, ld,
                                    ld, v, d, r};
  };
  const std::vector<float> states = ag.Read();
  BackendArray batched_arena(gpu_.get(), states), hb(gpu_.get(), std::vector<float>(6 * v));
  BackendIndex<int32_t> ss(gpu_.get(), step_slots);
  gpu_->MlstmStep(step(inp.get(), hb.get(), ss.get(), 6, batched_arena.get()));
  std::vector<float> cpu_arena = states, hcs(6 * v);
  cpu_->MlstmStep(step(in.data(), hcs.data(), step_slots.data(), 6, cpu_arena.data()));
  const std::vector<float> hbv = hb.Read();
  EXPECT_LT(RelDiff(hbv, hcs), 1e-4) << "step h";
  EXPECT_LT(RelDiff(batched_arena.Read(), cpu_arena), 1e-4) << "step state";
  for (int64_t r = 0; r < 6; ++r) {
    if (step_slots[r] < 0) {
      for (int64_t c = 0; c < v; ++c) EXPECT_EQ(hbv[r * v + c], 0.0f);
      continue;
    }
    BackendArray one_arena(gpu_.get(), states), h1(gpu_.get(), std::vector<float>(v));
    BackendIndex<int32_t> s1(gpu_.get(), {step_slots[r]});
    gpu_->MlstmStep(step(inp.get() + r * ld, h1.get(), s1.get(), 1, one_arena.get()));
    EXPECT_EQ(std::memcmp(h1.Read().data(), hbv.data() + r * v, v * sizeof(float)), 0) << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Storage, CudaOpsTest, ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) {
                           return std::string(kernels::DTypeName(info.param));
                         });

}  // namespace
}  // namespace xlstmd::testing
