#include "core/sampling/sampling_config.h"

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/base/retry.h"
#include "core/base/utf8.h"

namespace xlstmd::core {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view rule, absl::string_view got) {
  return base::FieldError(absl::StrCat("sampling.", field),
                          absl::StrCat("sampling.", field, " must be ", rule, ", got ", got));
}

absl::Status ValidateStopStrings(const std::vector<std::string>& stop,
                                 const SamplingLimits& limits) {
  if (stop.size() > static_cast<size_t>(limits.max_stop_strings)) {
    return Invalid("stop", absl::StrCat("at most ", limits.max_stop_strings, " strings"),
                   absl::StrCat(stop.size()));
  }
  for (size_t i = 0; i < stop.size(); ++i) {
    const std::string field = absl::StrCat("stop[", i, "]");
    if (stop[i].empty()) return Invalid(field, "non-empty", "\"\"");
    if (stop[i].size() > static_cast<size_t>(limits.max_stop_string_bytes)) {
      return Invalid(field, absl::StrCat("at most ", limits.max_stop_string_bytes, " bytes"),
                     absl::StrCat(stop[i].size(), " bytes"));
    }
    // Matching cuts the reply at the stop string's first byte; valid UTF-8 guarantees that
    // cut is a character boundary.
    if (absl::Status s = ValidateUtf8(stop[i]); !s.ok()) {
      return Invalid(field, "valid UTF-8", s.message());
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateStopTokenIds(const std::vector<int32_t>& ids, int64_t vocab_size,
                                  const SamplingLimits& limits) {
  if (ids.size() > static_cast<size_t>(limits.max_stop_token_ids)) {
    return Invalid("stop_token_ids", absl::StrCat("at most ", limits.max_stop_token_ids, " ids"),
                   absl::StrCat(ids.size()));
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return Invalid(absl::StrCat("stop_token_ids[", i, "]"),
                     absl::StrCat("in [0, ", vocab_size, ")"), absl::StrCat(ids[i]));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateSamplingConfig(const SamplingConfig& config, int64_t vocab_size,
                                    const SamplingLimits& limits) {
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size must be positive, got ", vocab_size));
  }
  if (!std::isfinite(config.temperature) || config.temperature < 0.0f) {
    return Invalid("temperature", "finite and >= 0", absl::StrCat(config.temperature));
  }
  if (config.top_k < 0 || config.top_k > vocab_size) {
    return Invalid("top_k", absl::StrCat("in [0, ", vocab_size, "] (0 = off)"),
                   absl::StrCat(config.top_k));
  }
  // Written as !(in range) so that NaN fails too.
  if (!(config.top_p > 0.0f && config.top_p <= 1.0f)) {
    return Invalid("top_p", "in (0, 1] (1 = off)", absl::StrCat(config.top_p));
  }
  if (!(config.min_p >= 0.0f && config.min_p < 1.0f)) {
    return Invalid("min_p", "in [0, 1) (0 = off)", absl::StrCat(config.min_p));
  }
  if (!std::isfinite(config.repetition_penalty) || !(config.repetition_penalty > 0.0f)) {
    return Invalid("repetition_penalty", "finite and > 0 (1 = off)",
                   absl::StrCat(config.repetition_penalty));
  }
  if (config.max_tokens < 0 || config.max_tokens > limits.max_tokens) {
    return Invalid("max_tokens", absl::StrCat("in [0, ", limits.max_tokens, "] (0 = default)"),
                   absl::StrCat(config.max_tokens));
  }
  if (absl::Status s = ValidateStopStrings(config.stop, limits); !s.ok()) return s;
  if (absl::Status s = ValidateStopTokenIds(config.stop_token_ids, vocab_size, limits); !s.ok()) {
    return s;
  }
  if (config.logprobs < 0 || config.logprobs > limits.max_logprobs) {
    return Invalid("logprobs", absl::StrCat("in [0, ", limits.max_logprobs, "]"),
                   absl::StrCat(config.logprobs));
  }
  return absl::OkStatus();
}

int32_t EffectiveMaxTokens(const SamplingConfig& config, const SamplingLimits& limits) {
  return config.max_tokens > 0 ? config.max_tokens : limits.default_max_tokens;
}

}  // namespace xlstmd::core
