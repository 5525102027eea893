// SamplingConfig: how one turn picks its tokens and when it stops, as plain data (the server
// converts the wire's SamplingParams into it; core never sees protobuf). Unlike the wire,
// every field here means exactly what it says: the server maps the wire's "0 = off" for
// top_p and repetition_penalty to 1 and resolves max_tokens == 0 with EffectiveMaxTokens.
//
// ValidateSamplingConfig is the one gate for request data: Sampler and StopChecker assume a
// config that passed it. Pure functions and plain structs; any thread.
#ifndef XLSTMD_CORE_SAMPLING_SAMPLING_CONFIG_H_
#define XLSTMD_CORE_SAMPLING_SAMPLING_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace xlstmd::core {

struct SamplingConfig {
  float temperature = 0.0f;         // 0 = greedy (argmax); else logits are divided by it
  int32_t top_k = 0;                // keep the k most likely tokens; 0 = off
  float top_p = 1.0f;               // nucleus mass in (0, 1]; 1 = off
  float min_p = 0.0f;               // drop tokens with p < min_p * p_max; 0 = off
  float repetition_penalty = 1.0f;  // > 0; 1 = off (CTRL / Hugging Face semantics)
  uint64_t seed = 0;                // 0 = the caller supplies a seed for the turn
  int32_t max_tokens = 0;           // generated tokens per turn; 0 = the server's default
  std::vector<std::string> stop;    // stop strings, matched in the decoded text
  std::vector<int32_t> stop_token_ids;
  int32_t logprobs = 0;  // top-n alternatives per token; 0 = no logprobs
};

// Server-side bounds on what a request may ask for. The defaults suit a chat server; they
// bound per-token work (stop matching, logprobs) and turn length.
struct SamplingLimits {
  int32_t default_max_tokens = 512;  // used when a request leaves max_tokens at 0
  int32_t max_tokens = 16384;        // largest max_tokens a request may set
  int32_t max_stop_strings = 16;
  int32_t max_stop_string_bytes = 256;
  int32_t max_stop_token_ids = 64;
  int32_t max_logprobs = 20;
};

// OK, or INVALID_ARGUMENT naming the first bad field: temperature NaN, infinite or
// negative; top_k outside [0, vocab_size]; top_p outside (0, 1]; min_p outside [0, 1);
// repetition_penalty NaN, infinite or <= 0; max_tokens outside [0, limits.max_tokens]; too
// many stop strings, or one empty, too long or not valid UTF-8; too many stop_token_ids or
// one outside [0, vocab_size); logprobs outside [0, limits.max_logprobs].
absl::Status ValidateSamplingConfig(const SamplingConfig& config, int64_t vocab_size,
                                    const SamplingLimits& limits);

// config.max_tokens, or limits.default_max_tokens when it is 0.
int32_t EffectiveMaxTokens(const SamplingConfig& config, const SamplingLimits& limits);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_SAMPLING_SAMPLING_CONFIG_H_
