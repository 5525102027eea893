// Conformance of the family-A runtime with the official implementation's outputs in
// ../shared/golden: logits (full, step, two turns), states, greedy continuations, for f32 and
// bf16 weight storage, with the tolerances stated in each golden.json (never loosened).
#include <algorithm>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/model/xlstm_model.h"
#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "tests/testing/golden.h"
#include "tests/testing/isa.h"

namespace xlstmd {
namespace {

using core::LogitsMode;
using core::PrefillOptions;
using core::PrefillSequence;
using core::XlstmModel;
using kernels::DType;

struct Case {
  std::string golden;  // golden directory whose expected values are used
  std::string weights; // model directory loaded (same, or the f32 twin rounded to bf16)
  DType storage;
};

// Keeps ctest's test names readable (gtest would print the struct's bytes).
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.weights << " as " << kernels::DTypeName(c.storage);
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  std::string n = absl::StrCat(info.param.weights, "_as_", kernels::DTypeName(info.param.storage));
  std::replace(n.begin(), n.end(), '-', '_');
  return n;
}

class GoldenTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    // A per-ISA run (tests/testing/isa.h) whose ISA this CPU lacks: the backend would quietly
    // fall back to another ISA, so nothing here would test the one asked for.
    if (const std::string why = testing::IsaSkipReason(); !why.empty()) GTEST_SKIP() << why;
    auto g = testing::LoadGolden(GetParam().golden);
    ASSERT_TRUE(g.ok()) << g.status();
    golden_ = std::move(*g);
    kernels::BackendOptions opts;
    opts.threads = 2;
    opts.weight_dtype = GetParam().storage;
    auto be = kernels::CreateBackend("cpu", opts);
    ASSERT_TRUE(be.ok()) << be.status();
    backend_ = std::move(*be);
    auto m = XlstmModel::Load(testing::GoldenDir(GetParam().weights), backend_.get());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    ASSERT_TRUE(model_->AllocateSlots(8).ok());
  }

  std::vector<float> PrefillAll(const std::vector<int32_t>& tokens, int32_t slot,
                                int64_t chunk) {
    std::vector<float> logits;
    PrefillOptions o;
    o.chunk_size = chunk;
    o.logits = LogitsMode::kAll;
    const PrefillSequence s{tokens, slot};
    EXPECT_TRUE(model_->Prefill({&s, 1}, o, &logits).ok());
    return logits;
  }

  std::vector<float> StepAll(const std::vector<int32_t>& tokens, int32_t slot) {
    std::vector<float> all, one;
    for (int32_t t : tokens) {
      EXPECT_TRUE(model_->Step({&t, 1}, {&slot, 1}, &one).ok());
      all.insert(all.end(), one.begin(), one.end());
    }
    return all;
  }

  void ExpectLogits(const std::vector<float>& got, const std::string& name) {
    const std::vector<float> want = golden_.F32(name);
    ASSERT_EQ(got.size(), want.size()) << name;
    EXPECT_EQ(testing::WorstViolation(got, want, golden_.logits_atol, golden_.logits_rtol), 0.0)
        << name << ": max |diff| " << testing::MaxAbsDiff(got, want) << " vs atol "
        << golden_.logits_atol;
  }

  // C and n within 1e-4 of their max magnitude; m within 1e-4 absolute (golden README).
  void ExpectState(int32_t slot, const std::string& prefix) {
    std::vector<float> st(model_->state_layout().floats_per_slot());
    model_->ReadSlot(slot, st.data());
    const auto& L = model_->state_layout();
    const int64_t H = L.heads(), K = L.dqk(), V = L.dv();
    for (int64_t b = 0; b < L.num_blocks(); ++b) {
      const auto& o = L.block(b);
      const std::string p = absl::StrCat(prefix, "/block_", b, "/");
      const std::vector<float> C(st.begin() + o.c_offset, st.begin() + o.c_offset + H * K * V);
      const std::vector<float> n(st.begin() + o.n_offset, st.begin() + o.n_offset + H * K);
      const std::vector<float> m(st.begin() + o.m_offset, st.begin() + o.m_offset + H);
      const auto wc = golden_.F32(p + "C"), wn = golden_.F32(p + "n"), wm = golden_.F32(p + "m");
      EXPECT_LE(testing::MaxAbsDiff(C, wc), 1e-4 * testing::MaxAbs(wc)) << p << "C";
      EXPECT_LE(testing::MaxAbsDiff(n, wn), 1e-4 * testing::MaxAbs(wn)) << p << "n";
      EXPECT_LE(testing::MaxAbsDiff(m, wm), 1e-4) << p << "m";
    }
  }

  testing::GoldenModel golden_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<XlstmModel> model_;
};

TEST_P(GoldenTest, FullLogitsAndStateViaPrefillAtSeveralChunkSizes) {
  // 7 divides none of the golden lengths > 7; 1 is pure stepping inside the chunk form.
  for (int64_t chunk : {1, 7, 16, 64}) {
    for (const auto& seq : golden_.sequences) {
      SCOPED_TRACE(absl::StrCat(seq.name, " chunk ", chunk));
      model_->ResetSlot(0);
      ExpectLogits(PrefillAll(seq.tokens, 0, chunk), seq.name + "/logits_full");
      ExpectState(0, seq.name + "/state");
    }
  }
}

TEST_P(GoldenTest, StepLogitsAndState) {
  for (const auto& seq : golden_.sequences) {
    SCOPED_TRACE(seq.name);
    model_->ResetSlot(3);
    ExpectLogits(StepAll(seq.tokens, 3), seq.name + "/logits_step");
    ExpectState(3, seq.name + "/state");
  }
}

TEST_P(GoldenTest, TwoTurnsContinueFromCarriedState) {
  for (const auto& seq : golden_.sequences) {
    if (!seq.split) continue;
    SCOPED_TRACE(seq.name);
    const std::vector<int32_t> t1(seq.tokens.begin(), seq.tokens.begin() + *seq.split);
    const std::vector<int32_t> t2(seq.tokens.begin() + *seq.split, seq.tokens.end());
    model_->ResetSlot(1);
    std::vector<float> logits = PrefillAll(t1, 1, 64);
    ExpectState(1, seq.name + "/state_after_turn1");
    const std::vector<float> l2 = PrefillAll(t2, 1, 64);
    logits.insert(logits.end(), l2.begin(), l2.end());
    ExpectLogits(logits, seq.name + "/logits_turns");
    ExpectState(1, seq.name + "/state");
  }
}

TEST_P(GoldenTest, GreedyContinuationMatches) {
  model_->ResetSlot(2);
  std::vector<float> logits;
  const PrefillSequence s{golden_.greedy_prompt, 2};
  ASSERT_TRUE(model_->Prefill({&s, 1}, PrefillOptions{}, &logits).ok());
  std::vector<int32_t> out;
  const int32_t slot = 2;
  while (out.size() < golden_.greedy_generated.size()) {
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    ASSERT_TRUE(model_->Step({&next, 1}, {&slot, 1}, &logits).ok());
  }
  EXPECT_EQ(out, golden_.greedy_generated);
}

// Four golden sequences as one batch of sessions: prefill together (different lengths), then
// step together while each session sits at a different position. Every row must equal the
// same sequence run alone, bit for bit (the kernels reduce in a batch-independent order).
TEST_P(GoldenTest, BatchOfFourEqualsAlone) {
  const auto& seqs = golden_.sequences;
  ASSERT_EQ(seqs.size(), 4u);
  const int64_t V = model_->vocab_size();
  std::vector<std::vector<float>> alone_prefill, alone_steps;
  for (size_t s = 0; s < 4; ++s) {
    model_->ResetSlot(0);
    alone_prefill.push_back(PrefillAll(seqs[s].tokens, 0, 16));
    alone_steps.push_back(StepAll(golden_.greedy_prompt, 0));  // continues after the sequence
  }
  std::vector<PrefillSequence> batch;
  for (size_t s = 0; s < 4; ++s) {
    model_->ResetSlot(4 + s);
    batch.push_back({seqs[s].tokens, static_cast<int32_t>(4 + s)});
  }
  std::vector<float> logits;
  PrefillOptions o;
  o.chunk_size = 16;
  o.logits = LogitsMode::kAll;
  ASSERT_TRUE(model_->Prefill(batch, o, &logits).ok());
  size_t off = 0;
  for (size_t s = 0; s < 4; ++s) {
    const std::vector<float> got(logits.begin() + off, logits.begin() + off + alone_prefill[s].size());
    EXPECT_EQ(got, alone_prefill[s]) << "prefill row block of " << seqs[s].name;
    off += alone_prefill[s].size();
  }
  // Staggered decode: session s starts feeding the prompt s steps late.
  const auto& prompt = golden_.greedy_prompt;
  const int64_t P = static_cast<int64_t>(prompt.size());
  std::vector<std::vector<float>> got(4);
  for (int64_t t = 0; t < P + 3; ++t) {
    std::vector<int32_t> toks, slots;
    std::vector<size_t> who;
    for (size_t s = 0; s < 4; ++s) {
      const int64_t pos = t - static_cast<int64_t>(s);
      if (pos < 0 || pos >= P) continue;
      toks.push_back(prompt[pos]);
      slots.push_back(static_cast<int32_t>(4 + s));
      who.push_back(s);
    }
    ASSERT_TRUE(model_->Step(toks, slots, &logits).ok());
    for (size_t r = 0; r < who.size(); ++r) {
      got[who[r]].insert(got[who[r]].end(), logits.begin() + r * V, logits.begin() + (r + 1) * V);
    }
  }
  for (size_t s = 0; s < 4; ++s) EXPECT_EQ(got[s], alone_steps[s]) << "decode of " << seqs[s].name;
}

INSTANTIATE_TEST_SUITE_P(
    Family, GoldenTest,
    ::testing::Values(Case{"xlstm-large-a1", "xlstm-large-a1", DType::kF32},
                      Case{"xlstm-large-a1-bf16", "xlstm-large-a1-bf16", DType::kBF16},
                      // The f32 checkpoint stored as bf16 at load: every weight rounded to
                      // nearest even, which makes it the bf16 twin, so the twin's goldens
                      // apply with their own tolerances.
                      Case{"xlstm-large-a1-bf16", "xlstm-large-a1", DType::kBF16}),
    CaseName);

}  // namespace
}  // namespace xlstmd
