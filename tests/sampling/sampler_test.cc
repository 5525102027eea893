#include "core/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using ::xlstmd::testing::StatusIs;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

Sampler MakeSampler(const SamplingConfig& config, int32_t vocab, uint64_t fallback_seed = 1) {
  absl::StatusOr<Sampler> sampler = Sampler::Create(config, vocab, fallback_seed);
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return *std::move(sampler);
}

SamplingConfig Sampled(float temperature, uint64_t seed) {
  SamplingConfig c;
  c.temperature = temperature;
  c.seed = seed;
  return c;
}

// Logits drawn from a fixed-seed normal distribution. std::normal_distribution is
// implementation-defined, but these only need to be arbitrary, not portable.
std::vector<float> RandomLogits(int32_t vocab, uint32_t seed, float scale = 3.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> logits(vocab);
  for (float& x : logits) x = dist(gen);
  return logits;
}

// Double-precision reference of the sampling distribution: penalty, temperature, full sort,
// top-k, top-p, min-p, renormalise. Returns the survivors as (id, logprob), best first.
std::vector<std::pair<int32_t, double>> ReferenceDistribution(const std::vector<float>& logits,
                                                              const SamplingConfig& c,
                                                              const std::set<int32_t>& seen) {
  const int32_t v = static_cast<int32_t>(logits.size());
  std::vector<double> x(logits.begin(), logits.end());
  for (int32_t id : seen) {
    x[id] = x[id] > 0 ? x[id] / c.repetition_penalty : x[id] * c.repetition_penalty;
  }
  std::vector<int32_t> ids(v);
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(),
            [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  const double m = x[ids[0]];
  int32_t kept = c.top_k > 0 ? std::min(c.top_k, v) : v;
  std::vector<double> p(v);
  double total = 0;
  for (int32_t i = 0; i < kept; ++i) total += p[ids[i]] = std::exp((x[ids[i]] - m) / c.temperature);
  if (c.top_p < 1.0f) {
    double cum = 0;
    for (int32_t i = 0; i < kept; ++i) {
      cum += p[ids[i]] / total;
      if (cum >= c.top_p) {
        kept = i + 1;
        break;
      }
    }
  }
  while (kept > 1 && p[ids[kept - 1]] < c.min_p * p[ids[0]]) --kept;
  double mass = 0;
  for (int32_t i = 0; i < kept; ++i) mass += p[ids[i]];
  std::vector<std::pair<int32_t, double>> out;
  for (int32_t i = 0; i < kept; ++i) out.push_back({ids[i], std::log(p[ids[i]] / mass)});
  return out;
}

TEST(SamplingRngTest, SplitMix64MatchesReferenceVector) {
  // The published splitmix64 outputs for seed 1234567.
  uint64_t state = 1234567;
  EXPECT_EQ(SplitMix64Next(&state), 6457827717110365317ull);
  EXPECT_EQ(SplitMix64Next(&state), 3203168211198807973ull);
  EXPECT_EQ(SplitMix64Next(&state), 9817491932198370423ull);
}

TEST(SamplingRngTest, XoshiroStreamIsPinned) {
  // Computed with an independent Python transcription of xoshiro256** / splitmix64; a change
  // here changes every seeded reply.
  SamplingRng rng0(0);
  EXPECT_EQ(rng0.NextU64(), 0x99ec5f36cb75f2b4ull);
  EXPECT_EQ(rng0.NextU64(), 0xbf6e1f784956452aull);
  EXPECT_EQ(rng0.NextU64(), 0x1a5f849d4933e6e0ull);
  SamplingRng rng42(42);
  EXPECT_EQ(rng42.NextDouble(), static_cast<double>(0x15780b2e0c2ec716ull >> 11) * 0x1.0p-53);
  for (int i = 0; i < 10000; ++i) {
    const double u = rng42.NextDouble();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(SamplerTest, CreateValidatesTheConfig) {
  SamplingConfig c;
  c.top_p = 0.0f;
  EXPECT_THAT(Sampler::Create(c, 10, 1), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(SamplerTest, GreedyPicksArgmax) {
  Sampler s = MakeSampler(SamplingConfig{}, 4);
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f};
  SampleInfo info;
  EXPECT_EQ(s.Sample(logits, &info), 1);
  EXPECT_EQ(info.token_id, 1);
  EXPECT_TRUE(info.top_logprobs.empty());
}

// Found by tests/fuzz/chat_request_fuzz.cc: a valid but tiny repetition penalty divided a
// seen positive logit to +inf, the softmax became NaN, top-p kept no candidate and the
// nucleus search read before its array (ASan). The penalised logit now stays finite.
TEST(SamplerTest, AnOverflowingPenaltyKeepsTheSoftmaxFinite) {
  SamplingConfig c;
  c.temperature = 0.8f;
  c.top_k = 5;
  c.top_p = 0.9f;
  c.repetition_penalty = 1.4e-45f;  // the smallest positive float: valid, and absurd
  c.seed = 3;
  Sampler s = MakeSampler(c, 8);
  s.Observe(std::vector<int32_t>{2, 5});
  const std::vector<float> logits = {0.5f, 1.0f, 2.0f, -1.0f, 0.0f, 1.5f, 3.0f, -2.0f};
  for (int i = 0; i < 100; ++i) {
    const int32_t id = s.Sample(logits, nullptr);
    ASSERT_GE(id, 0);
    ASSERT_LT(id, 8);
  }
}

TEST(SamplerTest, GreedyTiesGoToLowestIdAndNaNNeverWins) {
  Sampler s = MakeSampler(SamplingConfig{}, 4);
  EXPECT_EQ(s.Sample(std::vector<float>{1.0f, 3.0f, 3.0f, 2.0f}, nullptr), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{5.0f, 5.0f, 5.0f, 5.0f}, nullptr), 0);
  EXPECT_EQ(s.Sample(std::vector<float>{kNaN, 1.0f, 2.0f, kNaN}, nullptr), 2);
}

// The greedy argmax runs in vector lanes; it must equal the scalar rule (first index of the
// largest non-NaN value, 0 when there is none) on every size and on ties, NaNs and infinities
// that fall in any lane or in the tail.
TEST(SamplerTest, GreedyArgmaxEqualsTheScalarRuleOnRandomRows) {
  std::mt19937 rng(7);
  auto scalar = [](const std::vector<float>& x) {
    float best = -std::numeric_limits<float>::infinity();
    int32_t id = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      if (x[i] > best) {
        best = x[i];
        id = static_cast<int32_t>(i);
      }
    }
    return id;
  };
  const float kInf = std::numeric_limits<float>::infinity();
  for (int trial = 0; trial < 3000; ++trial) {
    const int32_t n = trial < 200 ? 1 + trial % 70 : 1 + static_cast<int32_t>(rng() % 3000);
    std::vector<float> x(static_cast<size_t>(n));
    // Few distinct values, so ties across lanes are common.
    for (float& v : x) v = static_cast<float>(static_cast<int>(rng() % 9) - 4);
    const int specials = static_cast<int>(rng() % 4);
    for (int k = 0; k < specials; ++k) {
      const float pick[] = {kNaN, -kInf, kInf, 4.0f};
      x[rng() % x.size()] = pick[rng() % 4];
    }
    if (trial % 50 == 0) std::fill(x.begin(), x.end(), (trial % 100 == 0) ? -kInf : kNaN);
    Sampler s = MakeSampler(SamplingConfig{}, n);
    ASSERT_EQ(s.Sample(x, nullptr), scalar(x)) << "n=" << n << " trial " << trial;
  }
}

TEST(SamplerTest, TemperatureMatchesSoftmaxEmpirically) {
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f};
  const float t = 0.7f;
  Sampler s = MakeSampler(Sampled(t, 1234), 5);
  constexpr int kDraws = 20000;
  std::vector<int> counts(5, 0);
  for (int i = 0; i < kDraws; ++i) ++counts[s.Sample(logits, nullptr)];
  double z = 0;
  for (float x : logits) z += std::exp(x / t);
  double chi2 = 0;
  for (int i = 0; i < 5; ++i) {
    const double expected = kDraws * std::exp(logits[i] / t) / z;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  // 4 degrees of freedom: P(chi2 > 18.47) = 0.001. The seed is fixed, so this is exact.
  EXPECT_LT(chi2, 18.47) << counts[0] << " " << counts[1] << " " << counts[2] << " " << counts[3]
                         << " " << counts[4];
}

TEST(SamplerTest, TopK1EqualsGreedy) {
  SamplingConfig c = Sampled(1.5f, 7);
  c.top_k = 1;
  Sampler s = MakeSampler(c, 1000);
  Sampler greedy = MakeSampler(SamplingConfig{}, 1000);
  for (uint32_t step = 0; step < 50; ++step) {
    const std::vector<float> logits = RandomLogits(1000, step);
    EXPECT_EQ(s.Sample(logits, nullptr), greedy.Sample(logits, nullptr)) << step;
  }
}

TEST(SamplerTest, TopKDrawsOnlyTheKBest) {
  SamplingConfig c = Sampled(1.0f, 3);
  c.top_k = 3;
  Sampler s = MakeSampler(c, 8);
  const std::vector<float> logits = {0.0f, 1.0f, 3.0f, 0.5f, 2.9f, -1.0f, 2.8f, 2.0f};
  std::set<int32_t> drawn;
  for (int i = 0; i < 3000; ++i) drawn.insert(s.Sample(logits, nullptr));
  EXPECT_EQ(drawn, (std::set<int32_t>{2, 4, 6}));
}

// Logits whose softmax is exactly `probs` (up to rounding), laid out at shuffled ids.
std::vector<float> LogitsFromProbs(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

std::set<int32_t> SurvivorIds(const SampleInfo& info) {
  std::set<int32_t> ids;
  for (const TokenLogprob& t : info.top_logprobs) ids.insert(t.token_id);
  return ids;
}

TEST(SamplerTest, TopPKeepsTheMinimalNucleus) {
  // Probabilities 0.05, 0.5, 0.15, 0.3 at ids 0..3.
  const std::vector<float> logits = LogitsFromProbs({0.05, 0.5, 0.15, 0.3});
  const struct {
    float top_p;
    std::set<int32_t> nucleus;
  } cases[] = {{0.4f, {1}}, {0.75f, {1, 3}}, {0.85f, {1, 3, 2}}, {0.99f, {0, 1, 2, 3}}};
  for (const auto& tc : cases) {
    SamplingConfig c = Sampled(1.0f, 11);
    c.top_p = tc.top_p;
    c.logprobs = 4;
    Sampler s = MakeSampler(c, 4);
    std::set<int32_t> drawn;
    SampleInfo info;
    for (int i = 0; i < 2000; ++i) drawn.insert(s.Sample(logits, &info));
    EXPECT_EQ(drawn, tc.nucleus) << tc.top_p;
    EXPECT_EQ(SurvivorIds(info), tc.nucleus) << tc.top_p;
  }
}

TEST(SamplerTest, TopPWidensPastTheFirstChunkOnLargeFlatVocab) {
  // 50k equal logits: the nucleus for 0.5 is ids [0, 25000) by the lowest-id tie rule, far
  // more than the first selection chunk.
  constexpr int32_t kVocab = 50000;
  SamplingConfig c = Sampled(1.0f, 5);
  c.top_p = 0.5f;
  Sampler s = MakeSampler(c, kVocab);
  const std::vector<float> logits(kVocab, 0.25f);
  int32_t max_id = 0;
  for (int i = 0; i < 500; ++i) {
    const int32_t id = s.Sample(logits, nullptr);
    ASSERT_LT(id, kVocab / 2);
    max_id = std::max(max_id, id);
  }
  EXPECT_GT(max_id, kVocab / 2 - 1000);
}

TEST(SamplerTest, MinPDropsUnlikelyTokens) {
  // p_max = 0.5, min_p 0.15 -> threshold 0.075: ids 0, 1, 2 survive, 3 (0.06) and 4 do not.
  const std::vector<float> logits = LogitsFromProbs({0.5, 0.3, 0.1, 0.06, 0.04});
  SamplingConfig c = Sampled(1.0f, 17);
  c.min_p = 0.15f;
  c.logprobs = 5;
  Sampler s = MakeSampler(c, 5);
  std::set<int32_t> drawn;
  SampleInfo info;
  for (int i = 0; i < 3000; ++i) drawn.insert(s.Sample(logits, &info));
  EXPECT_EQ(drawn, (std::set<int32_t>{0, 1, 2}));
  EXPECT_EQ(SurvivorIds(info), (std::set<int32_t>{0, 1, 2}));
  EXPECT_NEAR(info.top_logprobs[0].logprob, std::log(0.5 / 0.9), 1e-5);
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingConfig c;
  c.repetition_penalty = 2.0f;
  {
    Sampler s = MakeSampler(c, 2);
    s.Observe(0);  // 2.0 -> 1.0 < 1.5
    EXPECT_EQ(s.Sample(std::vector<float>{2.0f, 1.5f}, nullptr), 1);
  }
  {
    Sampler s = MakeSampler(c, 2);
    s.Observe(0);  // -1.0 -> -2.0 < -1.5
    EXPECT_EQ(s.Sample(std::vector<float>{-1.0f, -1.5f}, nullptr), 1);
  }
  {
    c.repetition_penalty = 0.5f;  // below 1 it favours repeats: 1.0 -> 2.0 > 1.5
    Sampler s = MakeSampler(c, 2);
    s.Observe(std::vector<int32_t>{0, 0, 7, -1});  // repeats count once; bad ids ignored
    EXPECT_EQ(s.Sample(std::vector<float>{1.0f, 1.5f}, nullptr), 0);
  }
}

TEST(SamplerTest, SampleObservesItsOwnResult) {
  SamplingConfig c;
  c.repetition_penalty = 2.0f;
  Sampler s = MakeSampler(c, 2);
  const std::vector<float> logits = {1.0f, 0.9f};
  EXPECT_EQ(s.Sample(logits, nullptr), 0);
  EXPECT_EQ(s.Sample(logits, nullptr), 1);  // 0 is now penalised to 0.5
}

TEST(SamplerTest, GreedyLogprobsAreLogSoftmaxOfPenalisedLogits) {
  SamplingConfig c;
  c.repetition_penalty = 1.3f;
  c.logprobs = 3;
  constexpr int32_t kVocab = 300;
  Sampler s = MakeSampler(c, kVocab);
  s.Observe(std::vector<int32_t>{4, 9, 200});
  const std::vector<float> logits = RandomLogits(kVocab, 99);
  SampleInfo info;
  const int32_t id = s.Sample(logits, &info);
  SamplingConfig ref_config = c;
  ref_config.temperature = 1.0f;
  const auto ref = ReferenceDistribution(logits, ref_config, {4, 9, 200});
  EXPECT_EQ(id, ref[0].first);
  EXPECT_NEAR(info.logprob, ref[0].second, 1e-5);
  ASSERT_EQ(info.top_logprobs.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(info.top_logprobs[i].token_id, ref[i].first);
    EXPECT_NEAR(info.top_logprobs[i].logprob, ref[i].second, 1e-5);
  }
}

TEST(SamplerTest, SampledLogprobsMatchDoubleReference) {
  constexpr int32_t kVocab = 5000;
  const struct {
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
    float penalty;
  } cases[] = {{1.0f, 0, 1.0f, 0.0f, 1.0f},  {0.7f, 40, 1.0f, 0.0f, 1.0f},
               {1.3f, 0, 0.9f, 0.0f, 1.0f},  {0.9f, 100, 0.8f, 0.05f, 1.2f},
               {2.0f, 0, 1.0f, 0.02f, 0.8f}, {0.5f, 5000, 0.95f, 0.0f, 1.0f}};
  uint32_t step = 0;
  for (const auto& tc : cases) {
    SamplingConfig c = Sampled(tc.temperature, 21);
    c.top_k = tc.top_k;
    c.top_p = tc.top_p;
    c.min_p = tc.min_p;
    c.repetition_penalty = tc.penalty;
    c.logprobs = 20;
    Sampler s = MakeSampler(c, kVocab);
    std::set<int32_t> seen = {1, 2, 3, 500};
    s.Observe(std::vector<int32_t>(seen.begin(), seen.end()));
    for (int i = 0; i < 5; ++i) {
      const std::vector<float> logits = RandomLogits(kVocab, ++step);
      SampleInfo info;
      const int32_t id = s.Sample(logits, &info);
      const auto ref = ReferenceDistribution(logits, c, seen);
      const auto it =
          std::find_if(ref.begin(), ref.end(), [id](const auto& e) { return e.first == id; });
      ASSERT_NE(it, ref.end()) << "sampled a filtered token, case T=" << tc.temperature;
      EXPECT_NEAR(info.logprob, it->second, 1e-4);
      ASSERT_EQ(info.top_logprobs.size(), std::min<size_t>(20, ref.size()));
      for (size_t j = 0; j < info.top_logprobs.size(); ++j) {
        EXPECT_EQ(info.top_logprobs[j].token_id, ref[j].first);
        EXPECT_NEAR(info.top_logprobs[j].logprob, ref[j].second, 1e-4);
      }
      if (tc.penalty != 1.0f) seen.insert(id);
    }
  }
}

std::vector<int32_t> SampleSteps(Sampler& s, int steps, uint32_t logits_seed) {
  std::vector<int32_t> out;
  for (int i = 0; i < steps; ++i) {
    out.push_back(s.Sample(RandomLogits(1000, logits_seed + i, 1.0f), nullptr));
  }
  return out;
}

SamplingConfig Nucleus(uint64_t seed) {
  SamplingConfig c = Sampled(1.0f, seed);
  c.top_k = 200;
  c.top_p = 0.95f;
  c.repetition_penalty = 1.1f;
  return c;
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  Sampler a = MakeSampler(Nucleus(42), 1000);
  Sampler b = MakeSampler(Nucleus(42), 1000);
  Sampler c = MakeSampler(Nucleus(43), 1000);
  const std::vector<int32_t> ta = SampleSteps(a, 100, 0);
  EXPECT_EQ(ta, SampleSteps(b, 100, 0));
  EXPECT_NE(ta, SampleSteps(c, 100, 0));
}

TEST(SamplerTest, SeedZeroUsesTheCallersSeed) {
  Sampler a = MakeSampler(Nucleus(0), 1000, /*fallback_seed=*/42);
  Sampler b = MakeSampler(Nucleus(42), 1000, /*fallback_seed=*/7);
  EXPECT_EQ(a.seed(), 42u);
  EXPECT_EQ(b.seed(), 42u);
  EXPECT_EQ(SampleSteps(a, 50, 0), SampleSteps(b, 50, 0));
}

TEST(SamplerTest, InterleavedSamplersDoNotAffectEachOther) {
  // Batch invariance: a turn's tokens must not depend on what other turns sample between
  // its steps.
  Sampler alone = MakeSampler(Nucleus(9), 1000);
  const std::vector<int32_t> expected = SampleSteps(alone, 60, 100);
  Sampler a = MakeSampler(Nucleus(9), 1000);
  Sampler other1 = MakeSampler(Nucleus(9), 1000);
  SamplingConfig hot = Sampled(2.0f, 1);
  hot.logprobs = 5;
  Sampler other2 = MakeSampler(hot, 1000);
  std::vector<int32_t> got;
  SampleInfo info;
  for (int i = 0; i < 60; ++i) {
    other1.Sample(RandomLogits(1000, 5000 + i, 1.0f), nullptr);
    got.push_back(a.Sample(RandomLogits(1000, 100 + i, 1.0f), nullptr));
    other2.Sample(RandomLogits(1000, 9000 + i, 1.0f), &info);
  }
  EXPECT_EQ(got, expected);
}

TEST(SamplerTest, InfoWithoutLogprobsCarriesOnlyTheToken) {
  SamplingConfig c = Sampled(1.0f, 8);
  Sampler s = MakeSampler(c, 1000);
  SampleInfo info;
  info.logprob = 3.0f;
  info.top_logprobs.push_back({1, -1.0f});  // stale content from a previous step
  const int32_t id = s.Sample(RandomLogits(1000, 1), &info);
  EXPECT_EQ(info.token_id, id);
  EXPECT_EQ(info.logprob, 0.0f);
  EXPECT_TRUE(info.top_logprobs.empty());
}

TEST(SamplerTest, TinyTemperatureIsGreedy) {
  SamplingConfig c = Sampled(1e-30f, 5);
  Sampler s = MakeSampler(c, 1000);
  Sampler greedy = MakeSampler(SamplingConfig{}, 1000);
  for (uint32_t step = 0; step < 20; ++step) {
    const std::vector<float> logits = RandomLogits(1000, step);
    EXPECT_EQ(s.Sample(logits, nullptr), greedy.Sample(logits, nullptr));
  }
}

TEST(SamplerTest, NonFiniteLogitsNeverYieldBadIds) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  SamplingConfig c = Sampled(1.0f, 5);
  c.logprobs = 2;
  Sampler s = MakeSampler(c, 4);
  SampleInfo info;
  EXPECT_EQ(s.Sample(std::vector<float>{kNaN, kNaN, kNaN, kNaN}, &info), 0);
  EXPECT_EQ(s.Sample(std::vector<float>{kNaN, -kInf, kInf, 1.0f}, &info), 2);
  const int32_t id = s.Sample(std::vector<float>{kNaN, 0.0f, -kInf, 0.0f}, &info);
  EXPECT_TRUE(id == 1 || id == 3) << id;
}

}  // namespace
}  // namespace xlstmd::core
