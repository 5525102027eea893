// StopChecker: decides, token by token, what reply text may be streamed and when a turn
// ends. It sees each generated id with the text the IncrementalDetokenizer produced for it
// (complete UTF-8) and ends the turn on, in this order of precedence:
//   1. a stop token id: the id is reported by the caller, its own text is never emitted;
//   2. a stop string in the decoded text, also across token boundaries: text that may be the
//      start of a stop string is held back until it either completes one (the turn ends and
//      only the text before the match is emitted) or diverges (it is released). Of several
//      matches the one that starts first wins;
//   3. the max_tokens-th token, after its text.
// A turn that ends releases every held byte that is not part of a match, so text is never
// lost and never streams past a stop string. Cuts fall only on character boundaries.
//
// One instance per turn, used by one thread (the scheduler's). Not thread-safe.
#ifndef XLSTMD_CORE_SAMPLING_STOP_CHECKER_H_
#define XLSTMD_CORE_SAMPLING_STOP_CHECKER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace xlstmd::core {

enum class FinishReason {
  kNone,  // still running
  kStopToken,
  kStopString,
  kMaxTokens,
};

class StopChecker {
 public:
  struct Step {
    std::string text;  // what may be streamed now (possibly empty); complete UTF-8
    FinishReason finish = FinishReason::kNone;
    bool finished() const { return finish != FinishReason::kNone; }
  };

  // `stop_token_ids` and `stop_strings` are the request's merged with the chat template's;
  // both come from validated sources, and empty stop strings are ignored. `max_tokens` > 0
  // (see EffectiveMaxTokens).
  StopChecker(std::vector<int32_t> stop_token_ids, std::vector<std::string> stop_strings,
              int32_t max_tokens);

  // Feeds the next generated token and its decoded text. After the turn has finished,
  // further calls emit nothing and repeat the finish reason.
  Step Feed(int32_t token_id, std::string_view piece);

  // Releases the held-back text when generation ends without a finish from Feed (e.g. the
  // caller stops the turn); "" after a finish, since finishing already released it.
  std::string Flush();

  FinishReason finish_reason() const { return finish_; }
  int32_t tokens_seen() const { return tokens_seen_; }
  // Bytes currently held back as a possible stop-string prefix.
  size_t held_bytes() const { return held_.size(); }

 private:
  // Start of the first full stop-string match in held_, or npos.
  size_t FirstMatch() const;
  // Start of the first suffix of held_ that is a proper prefix of a stop string (the text
  // from there on must be held back), or held_.size().
  size_t FirstPartialMatch() const;
  Step Finish(FinishReason reason, size_t emit_bytes);

  std::vector<int32_t> stop_token_ids_;  // sorted, unique
  std::vector<std::string> stop_strings_;
  size_t max_stop_bytes_ = 0;
  int32_t max_tokens_;
  int32_t tokens_seen_ = 0;
  FinishReason finish_ = FinishReason::kNone;
  // Text not yet emitted. Invariant between calls: no stop string starts before held_, and
  // held_ is empty or starts with a proper prefix of some stop string.
  std::string held_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_SAMPLING_STOP_CHECKER_H_
