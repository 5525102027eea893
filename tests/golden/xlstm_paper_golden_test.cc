// Conformance of the family-B runtime (the xLSTM paper's xLSTMLMModel: mLSTM blocks with causal
// conv, sLSTM blocks) with the official implementation's outputs in ../shared/golden/
// xlstm-paper-b1: logits of a full prefill at several chunk sizes, step by step and in two
// turns, every state (conv windows included) and the greedy continuation, within golden.json's
// tolerances, on every ISA the CPU backend dispatches to (tests/testing/isa.h).
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/model/xlstm_model.h"
#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "tests/testing/golden.h"
#include "tests/testing/golden_runs.h"
#include "tests/testing/isa.h"

namespace xlstmd {
namespace {

using core::LogitsMode;
using core::PrefillOptions;
using core::PrefillSequence;
using core::XlstmModel;

constexpr char kModel[] = "xlstm-paper-b1";

class PaperGoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = testing::IsaSkipReason(); !why.empty()) GTEST_SKIP() << why;
    auto g = testing::LoadGolden(kModel);
    ASSERT_TRUE(g.ok()) << g.status();
    golden_ = std::move(*g);
    kernels::BackendOptions opts;
    opts.threads = 2;
    opts.weight_dtype = kernels::DType::kF32;
    auto be = kernels::CreateBackend("cpu", opts);
    ASSERT_TRUE(be.ok()) << be.status();
    backend_ = std::move(*be);
    auto m = XlstmModel::Load(testing::GoldenDir(kModel), backend_.get());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    ASSERT_TRUE(model_->AllocateSlots(8).ok());
  }

  std::vector<float> PrefillAll(const std::vector<int32_t>& tokens, int32_t slot, int64_t chunk) {
    return testing::PrefillAll(*model_, tokens, slot, chunk);
  }
  std::vector<float> StepAll(const std::vector<int32_t>& tokens, int32_t slot) {
    return testing::StepAll(*model_, tokens, slot);
  }
  void ExpectLogits(const std::vector<float>& got, const std::string& name) {
    testing::ExpectGoldenLogits(golden_, got, name);
  }

  // Relative to the tensor's largest magnitude (C, n, c, h, conv windows) or absolute (m).
  static void ExpectClose(const float* got, const std::vector<float>& want, bool relative,
                          const std::string& what) {
    const std::vector<float> g(got, got + want.size());
    const double tol = relative ? 1e-4 * std::max(testing::MaxAbs(want), 1e-30) : 1e-4;
    EXPECT_LE(testing::MaxAbsDiff(g, want), tol) << what;
  }

  void ExpectState(int32_t slot, const std::string& prefix) {
    const auto& L = model_->state_layout();
    std::vector<float> st(L.floats_per_slot());
    model_->ReadSlot(slot, st.data());
    for (int64_t b = 0; b < L.num_blocks(); ++b) {
      const auto& o = L.block(b);
      const std::string p = absl::StrCat(prefix, "/block_", b, "/");
      if (o.slstm) {
        ExpectClose(&st[o.h_offset], golden_.F32(p + "slstm/h"), true, p + "slstm/h");
        ExpectClose(&st[o.c_offset], golden_.F32(p + "slstm/c"), true, p + "slstm/c");
        ExpectClose(&st[o.n_offset], golden_.F32(p + "slstm/n"), true, p + "slstm/n");
        ExpectClose(&st[o.m_offset], golden_.F32(p + "slstm/m"), false, p + "slstm/m");
      } else {
        ExpectClose(&st[o.c_offset], golden_.F32(p + "mlstm/C"), true, p + "mlstm/C");
        ExpectClose(&st[o.n_offset], golden_.F32(p + "mlstm/n"), true, p + "mlstm/n");
        ExpectClose(&st[o.m_offset], golden_.F32(p + "mlstm/m"), false, p + "mlstm/m");
      }
      // The golden window holds the last KS inputs; the state keeps the last KS - 1 (the
      // newest input is always this step's own).
      const std::vector<float> conv = golden_.F32(p + "conv");
      ASSERT_GE(o.conv_offset, 0) << p;
      const int64_t d = o.slstm ? model_->config().embedding_dim
                                : model_->config().paper.m_inner(model_->config().embedding_dim);
      const std::vector<float> tail(conv.begin() + d, conv.end());
      ExpectClose(&st[o.conv_offset], tail, true, p + "conv");
    }
  }

  testing::GoldenModel golden_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<XlstmModel> model_;
};

TEST_F(PaperGoldenTest, FullLogitsAndStateViaPrefillAtSeveralChunkSizes) {
  for (int64_t chunk : {1, 7, 16, 64}) {
    for (const auto& seq : golden_.sequences) {
      SCOPED_TRACE(absl::StrCat(seq.name, " chunk ", chunk));
      model_->ResetSlot(0);
      ExpectLogits(PrefillAll(seq.tokens, 0, chunk), seq.name + "/logits_full");
      ExpectState(0, seq.name + "/state");
    }
  }
}

TEST_F(PaperGoldenTest, StepLogitsAndState) {
  for (const auto& seq : golden_.sequences) {
    SCOPED_TRACE(seq.name);
    model_->ResetSlot(3);
    ExpectLogits(StepAll(seq.tokens, 3), seq.name + "/logits_step");
    ExpectState(3, seq.name + "/state");
  }
}

TEST_F(PaperGoldenTest, TwoTurnsContinueFromCarriedState) {
  for (const auto& seq : golden_.sequences) {
    if (!seq.split) continue;
    SCOPED_TRACE(seq.name);
    const std::vector<int32_t> t1(seq.tokens.begin(), seq.tokens.begin() + *seq.split);
    const std::vector<int32_t> t2(seq.tokens.begin() + *seq.split, seq.tokens.end());
    for (int64_t chunk : {7, 64}) {
      model_->ResetSlot(1);
      std::vector<float> logits = PrefillAll(t1, 1, chunk);
      ExpectState(1, seq.name + "/state_after_turn1");
      const std::vector<float> l2 = PrefillAll(t2, 1, chunk);
      logits.insert(logits.end(), l2.begin(), l2.end());
      ExpectLogits(logits, seq.name + "/logits_turns");
      ExpectState(1, seq.name + "/state");
    }
  }
}

TEST_F(PaperGoldenTest, GreedyContinuationMatches) {
  EXPECT_EQ(testing::GreedyIds(*model_, golden_, 2), golden_.greedy_generated);
}

// The golden sequences as one batch of sessions, prefilled together, then stepped together at
// staggered positions: every row equals the same session run alone, bit for bit.
TEST_F(PaperGoldenTest, BatchEqualsAloneBitForBit) {
  testing::ExpectBatchEqualsAlone(*model_, golden_);
}

}  // namespace
}  // namespace xlstmd
