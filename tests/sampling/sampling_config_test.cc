#include "core/sampling/sampling_config.h"

#include <cmath>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using ::testing::HasSubstr;
using ::xlstmd::testing::IsOk;
using ::xlstmd::testing::StatusIs;

constexpr int64_t kVocab = 1000;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Expects INVALID_ARGUMENT whose message names `field`.
void ExpectInvalid(const SamplingConfig& config, const std::string& field) {
  EXPECT_THAT(ValidateSamplingConfig(config, kVocab, SamplingLimits{}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field)));
}

TEST(ValidateSamplingConfigTest, DefaultsAndBoundariesAreValid) {
  EXPECT_THAT(ValidateSamplingConfig(SamplingConfig{}, kVocab, SamplingLimits{}), IsOk());
  SamplingConfig c;
  c.temperature = 1e-6f;
  c.top_k = kVocab;
  c.top_p = 1.0f;
  c.min_p = 0.999f;
  c.repetition_penalty = 0.01f;
  c.max_tokens = SamplingLimits{}.max_tokens;
  c.stop = {"\nUser:", std::string(SamplingLimits{}.max_stop_string_bytes, 'x'), "é"};
  c.stop_token_ids = {0, kVocab - 1};
  c.logprobs = SamplingLimits{}.max_logprobs;
  EXPECT_THAT(ValidateSamplingConfig(c, kVocab, SamplingLimits{}), IsOk());
}

TEST(ValidateSamplingConfigTest, Temperature) {
  for (float t : {-0.1f, kNaN, kInf, -kInf}) {
    SamplingConfig c;
    c.temperature = t;
    ExpectInvalid(c, "temperature");
  }
}

TEST(ValidateSamplingConfigTest, TopK) {
  for (int32_t k : {-1, static_cast<int32_t>(kVocab + 1)}) {
    SamplingConfig c;
    c.top_k = k;
    ExpectInvalid(c, "top_k");
  }
}

TEST(ValidateSamplingConfigTest, TopP) {
  for (float p : {0.0f, -0.5f, 1.0001f, kNaN, kInf}) {
    SamplingConfig c;
    c.top_p = p;
    ExpectInvalid(c, "top_p");
  }
}

TEST(ValidateSamplingConfigTest, MinP) {
  for (float p : {-0.01f, 1.0f, kNaN, kInf}) {
    SamplingConfig c;
    c.min_p = p;
    ExpectInvalid(c, "min_p");
  }
}

TEST(ValidateSamplingConfigTest, RepetitionPenalty) {
  for (float r : {0.0f, -1.0f, kNaN, kInf}) {
    SamplingConfig c;
    c.repetition_penalty = r;
    ExpectInvalid(c, "repetition_penalty");
  }
}

TEST(ValidateSamplingConfigTest, MaxTokens) {
  for (int32_t m : {-1, SamplingLimits{}.max_tokens + 1}) {
    SamplingConfig c;
    c.max_tokens = m;
    ExpectInvalid(c, "max_tokens");
  }
}

TEST(ValidateSamplingConfigTest, StopStrings) {
  SamplingConfig too_many;
  too_many.stop.assign(SamplingLimits{}.max_stop_strings + 1, "x");
  ExpectInvalid(too_many, "stop");
  SamplingConfig empty;
  empty.stop = {"ok", ""};
  ExpectInvalid(empty, "stop[1]");
  SamplingConfig too_long;
  too_long.stop = {std::string(SamplingLimits{}.max_stop_string_bytes + 1, 'x')};
  ExpectInvalid(too_long, "stop[0]");
  SamplingConfig bad_utf8;
  bad_utf8.stop = {"a\xC3"};
  ExpectInvalid(bad_utf8, "stop[0]");
}

TEST(ValidateSamplingConfigTest, StopTokenIds) {
  for (int32_t id : {-1, static_cast<int32_t>(kVocab)}) {
    SamplingConfig c;
    c.stop_token_ids = {3, id};
    ExpectInvalid(c, "stop_token_ids[1]");
  }
  SamplingConfig too_many;
  too_many.stop_token_ids.assign(SamplingLimits{}.max_stop_token_ids + 1, 1);
  ExpectInvalid(too_many, "stop_token_ids");
}

TEST(ValidateSamplingConfigTest, Logprobs) {
  for (int32_t n : {-1, SamplingLimits{}.max_logprobs + 1}) {
    SamplingConfig c;
    c.logprobs = n;
    ExpectInvalid(c, "logprobs");
  }
}

TEST(ValidateSamplingConfigTest, LimitsAreConfigurable) {
  SamplingLimits limits;
  limits.max_logprobs = 5;
  SamplingConfig c;
  c.logprobs = 6;
  EXPECT_THAT(ValidateSamplingConfig(c, kVocab, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("logprobs")));
}

TEST(ValidateSamplingConfigTest, NonPositiveVocabIsRejected) {
  EXPECT_THAT(ValidateSamplingConfig(SamplingConfig{}, 0, SamplingLimits{}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocab_size")));
}

TEST(EffectiveMaxTokensTest, ZeroMeansServerDefault) {
  SamplingLimits limits;
  limits.default_max_tokens = 77;
  SamplingConfig c;
  EXPECT_EQ(EffectiveMaxTokens(c, limits), 77);
  c.max_tokens = 5;
  EXPECT_EQ(EffectiveMaxTokens(c, limits), 5);
}

}  // namespace
}  // namespace xlstmd::core
