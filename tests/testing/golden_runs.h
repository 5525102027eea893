// Runs shared by the golden conformance suites of both model families: whole-sequence prefill
// and step-by-step logits, the comparison with a golden logits tensor, the greedy
// continuation, and the check that a batch of sessions equals each session run alone.
#ifndef XLSTMD_TESTS_TESTING_GOLDEN_RUNS_H_
#define XLSTMD_TESTS_TESTING_GOLDEN_RUNS_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/model/xlstm_model.h"
#include "gtest/gtest.h"
#include "tests/testing/golden.h"

namespace xlstmd::testing {

// Logits of every position of `tokens` prefilled from the slot's state at chunk size `chunk`.
inline std::vector<float> PrefillAll(core::XlstmModel& model, const std::vector<int32_t>& tokens,
                                     int32_t slot, int64_t chunk) {
  std::vector<float> logits;
  core::PrefillOptions o;
  o.chunk_size = chunk;
  o.logits = core::LogitsMode::kAll;
  const core::PrefillSequence s{tokens, slot};
  EXPECT_TRUE(model.Prefill({&s, 1}, o, &logits).ok());
  return logits;
}

// Logits of every position of `tokens` fed one Step at a time.
inline std::vector<float> StepAll(core::XlstmModel& model, const std::vector<int32_t>& tokens,
                                  int32_t slot) {
  std::vector<float> all, one;
  for (int32_t t : tokens) {
    EXPECT_TRUE(model.Step({&t, 1}, {&slot, 1}, &one).ok());
    all.insert(all.end(), one.begin(), one.end());
  }
  return all;
}

// `got` within the golden model's stated logits tolerance of tensor `name`.
inline void ExpectGoldenLogits(const GoldenModel& golden, const std::vector<float>& got,
                               const std::string& name) {
  const std::vector<float> want = golden.F32(name);
  ASSERT_EQ(got.size(), want.size()) << name;
  EXPECT_EQ(WorstViolation(got, want, golden.logits_atol, golden.logits_rtol), 0.0)
      << name << ": max |diff| " << MaxAbsDiff(got, want) << " vs atol " << golden.logits_atol;
}

// The golden prompt prefilled into `slot`, then greedy steps: the generated ids.
inline std::vector<int32_t> GreedyIds(core::XlstmModel& model, const GoldenModel& golden,
                                      int32_t slot) {
  model.ResetSlot(slot);
  std::vector<float> logits;
  const core::PrefillSequence s{golden.greedy_prompt, slot};
  EXPECT_TRUE(model.Prefill({&s, 1}, core::PrefillOptions{}, &logits).ok());
  std::vector<int32_t> out;
  while (out.size() < golden.greedy_generated.size() && !logits.empty()) {
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    if (!model.Step({&next, 1}, {&slot, 1}, &logits).ok()) break;
  }
  return out;
}

// The golden sequences (at most 4; slots 4.. must be free, slot 0 is scratch) as one batch of
// sessions: prefilled together at chunk 16, then stepped together through the greedy prompt
// with session s starting s steps late. Every row must equal the same session run alone, bit
// for bit (the kernels reduce in a batch-independent order).
inline void ExpectBatchEqualsAlone(core::XlstmModel& model, const GoldenModel& golden) {
  const auto& seqs = golden.sequences;
  const int64_t V = model.vocab_size();
  const size_t n = seqs.size();
  ASSERT_LE(n, 4u);
  std::vector<std::vector<float>> alone_prefill, alone_steps;
  for (size_t s = 0; s < n; ++s) {
    model.ResetSlot(0);
    alone_prefill.push_back(PrefillAll(model, seqs[s].tokens, 0, 16));
    alone_steps.push_back(StepAll(model, golden.greedy_prompt, 0));  // continues the sequence
  }
  std::vector<core::PrefillSequence> batch;
  for (size_t s = 0; s < n; ++s) {
    model.ResetSlot(static_cast<int32_t>(4 + s));
    batch.push_back({seqs[s].tokens, static_cast<int32_t>(4 + s)});
  }
  std::vector<float> logits;
  core::PrefillOptions o;
  o.chunk_size = 16;
  o.logits = core::LogitsMode::kAll;
  ASSERT_TRUE(model.Prefill(batch, o, &logits).ok());
  size_t off = 0;
  for (size_t s = 0; s < n; ++s) {
    const std::vector<float> got(logits.begin() + off,
                                 logits.begin() + off + alone_prefill[s].size());
    EXPECT_EQ(got, alone_prefill[s]) << "prefill rows of " << seqs[s].name;
    off += alone_prefill[s].size();
  }
  const auto& prompt = golden.greedy_prompt;
  const int64_t P = static_cast<int64_t>(prompt.size());
  std::vector<std::vector<float>> got(n);
  for (int64_t t = 0; t + 1 < P + static_cast<int64_t>(n); ++t) {
    std::vector<int32_t> toks, slots;
    std::vector<size_t> who;
    for (size_t s = 0; s < n; ++s) {
      const int64_t pos = t - static_cast<int64_t>(s);
      if (pos < 0 || pos >= P) continue;
      toks.push_back(prompt[pos]);
      slots.push_back(static_cast<int32_t>(4 + s));
      who.push_back(s);
    }
    ASSERT_TRUE(model.Step(toks, slots, &logits).ok());
    for (size_t r = 0; r < who.size(); ++r) {
      got[who[r]].insert(got[who[r]].end(), logits.begin() + r * V, logits.begin() + (r + 1) * V);
    }
  }
  for (size_t s = 0; s < n; ++s) EXPECT_EQ(got[s], alone_steps[s]) << "decode of " << seqs[s].name;
}

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_TESTING_GOLDEN_RUNS_H_
