// The device-shaped parts of the Backend seam on the CPU backend: buffer owners, pinned host
// memory, GatherRows, padding rows (id -1 / slot -1) and Synchronize's status.
#include <cstring>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/testing/isa.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::kernels {
namespace {

using ::xlstmd::testing::IsOk;

class BackendSeamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = testing::IsaSkipReason(); !why.empty()) GTEST_SKIP() << why;
    BackendOptions o;
    o.threads = 2;
    o.weight_dtype = DType::kF32;
    const std::vector<cpu::Isa> isas = testing::TestIsas();
    ASSERT_FALSE(isas.empty());
    auto be = cpu::CpuBackend::Create(o, isas.back());
    ASSERT_THAT(be, IsOk());
    be_ = std::move(*be);
  }
  std::unique_ptr<cpu::CpuBackend> be_;
};

TEST_F(BackendSeamTest, OwnersFreeAndMove) {
  auto dev = Allocate(*be_, 1000);
  ASSERT_THAT(dev, IsOk());
  EXPECT_EQ(dev->bytes(), 1000u);
  const unsigned char* p = dev->as<unsigned char>();
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(p[i], 0) << i;  // zeroed
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  DeviceBuffer moved = std::move(*dev);
  EXPECT_FALSE(*dev);
  EXPECT_EQ(moved.get(), p);
  moved.reset();
  EXPECT_FALSE(moved);
  auto host = AllocateHost(*be_, 4 << 20);  // the mmap path
  ASSERT_THAT(host, IsOk());
  std::memset(host->get(), 1, host->bytes());
  EXPECT_TRUE(be_->HostVisible());
  EXPECT_THAT(be_->Synchronize(), IsOk());
}

TEST_F(BackendSeamTest, GatherRowsPicksRowsInOrder) {
  const int64_t cols = 37, ldx = 40, ldy = 38;
  std::vector<float> x(9 * ldx);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  const std::vector<int32_t> rows = {8, 0, 3, 3};
  std::vector<float> y(rows.size() * ldy, -1.0f);
  be_->GatherRows({x.data(), rows.data(), y.data(), 4, cols, ldx, ldy});
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(y[r * ldy + c], x[rows[r] * ldx + c]);
    EXPECT_EQ(y[r * ldy + cols], -1.0f);  // the stride's tail is left alone
  }
}

TEST_F(BackendSeamTest, EmbedPaddingRowIsZero) {
  const int64_t vocab = 5, dim = 19;
  std::vector<float> table(vocab * dim, 3.0f);
  auto m = be_->UploadMatrix(table.data(), DType::kF32, vocab, dim);
  ASSERT_THAT(m, IsOk());
  WeightMatrixPtr t(*m, WeightMatrixDeleter{be_.get()});
  const std::vector<int32_t> ids = {2, -1, 4};
  std::vector<float> y(3 * dim, 7.0f);
  be_->Embed({t.get(), ids.data(), y.data(), 3, dim});
  for (int64_t c = 0; c < dim; ++c) {
    EXPECT_EQ(y[c], 3.0f);
    EXPECT_EQ(y[dim + c], 0.0f);
    EXPECT_EQ(y[2 * dim + c], 3.0f);
  }
}

// A padded batch (slot -1 rows) gives the real rows exactly what the unpadded batch gives,
// zero h for the padding, and leaves every other slot's state untouched.
TEST_F(BackendSeamTest, MlstmStepPaddingRowsTouchNoState) {
  const MlstmDims d{2, 8, 4, 1e-6f, 0.35f};
  const int64_t qk = d.heads * d.dqk, v = d.heads * d.dv;
  const int64_t slot_floats = d.heads * (d.dqk * d.dv + d.dqk + 1);
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  auto rand = [&](int64_t n) {
    std::vector<float> out(n);
    for (float& f : out) f = g(rng);
    return out;
  };
  const int64_t batch = 4;
  const std::vector<float> q = rand(batch * qk), k = rand(batch * qk), vv = rand(batch * v),
                           ig = rand(batch * d.heads), fg = rand(batch * d.heads);
  std::vector<float> arena_a = rand(4 * slot_floats);
  for (int64_t s = 0; s < 4; ++s) {  // m must be finite and the normaliser positive-ish
    for (int64_t j = 0; j < d.heads; ++j) arena_a[s * slot_floats + slot_floats - 1 - j] = 0.0f;
  }
  std::vector<float> arena_b = arena_a;
  auto ref = [&](float* arena) {
    return MlstmStateRef{arena, slot_floats, 0, d.heads * d.dqk * d.dv,
                         d.heads * (d.dqk * d.dv + d.dqk)};
  };
  // Padded: rows 0 and 2 real (slots 3, 1), rows 1 and 3 padding.
  const std::vector<int32_t> padded = {3, -1, 1, -1};
  std::vector<float> h_pad(batch * v, 9.0f);
  be_->MlstmStep({q.data(), k.data(), vv.data(), ig.data(), fg.data(), h_pad.data(),
                  padded.data(), batch, qk, qk, v, d.heads, d.heads, v, d, ref(arena_a.data())});
  // Unpadded: the same two rows alone (row strides doubled to skip the padding rows).
  const std::vector<int32_t> real = {3, 1};
  std::vector<float> h_real(2 * 2 * v, 9.0f);
  be_->MlstmStep({q.data(), k.data(), vv.data(), ig.data(), fg.data(), h_real.data(),
                  real.data(), 2, 2 * qk, 2 * qk, 2 * v, 2 * d.heads, 2 * d.heads, 2 * v, d,
                  ref(arena_b.data())});
  EXPECT_EQ(arena_a, arena_b);  // slots 0 and 2 untouched in both; 1 and 3 equal
  for (int64_t c = 0; c < v; ++c) {
    EXPECT_EQ(h_pad[c], h_real[c]);
    EXPECT_EQ(h_pad[2 * v + c], h_real[2 * v + c]);
    EXPECT_EQ(h_pad[v + c], 0.0f);
    EXPECT_EQ(h_pad[3 * v + c], 0.0f);
  }
}

}  // namespace
}  // namespace xlstmd::kernels
