#include "core/sampling/stop_checker.h"

#include <algorithm>
#include <utility>

#include "core/base/check.h"

namespace xlstmd::core {
namespace {

// A UTF-8 continuation byte (10xxxxxx) is never the start of a character, so no match may
// start there: that keeps every cut on a character boundary.
bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

StopChecker::StopChecker(std::vector<int32_t> stop_token_ids, std::vector<std::string> stop_strings,
                         int32_t max_tokens)
    : stop_token_ids_(std::move(stop_token_ids)), max_tokens_(max_tokens) {
  XLSTMD_CHECK(max_tokens > 0);
  std::sort(stop_token_ids_.begin(), stop_token_ids_.end());
  stop_token_ids_.erase(std::unique(stop_token_ids_.begin(), stop_token_ids_.end()),
                        stop_token_ids_.end());
  for (std::string& s : stop_strings) {
    if (s.empty()) continue;
    max_stop_bytes_ = std::max(max_stop_bytes_, s.size());
    stop_strings_.push_back(std::move(s));
  }
}

StopChecker::Step StopChecker::Feed(int32_t token_id, std::string_view piece) {
  if (finish_ != FinishReason::kNone) return Step{"", finish_};
  ++tokens_seen_;
  if (std::binary_search(stop_token_ids_.begin(), stop_token_ids_.end(), token_id)) {
    // The reply ends here: what was held as a possible stop prefix is plain reply text.
    return Finish(FinishReason::kStopToken, held_.size());
  }
  held_.append(piece);
  if (size_t match = FirstMatch(); match != std::string::npos) {
    return Finish(FinishReason::kStopString, match);
  }
  if (tokens_seen_ >= max_tokens_) return Finish(FinishReason::kMaxTokens, held_.size());
  const size_t keep_from = FirstPartialMatch();
  Step step;
  step.text = held_.substr(0, keep_from);
  held_.erase(0, keep_from);
  return step;
}

std::string StopChecker::Flush() {
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

StopChecker::Step StopChecker::Finish(FinishReason reason, size_t emit_bytes) {
  finish_ = reason;
  Step step;
  step.text = held_.substr(0, emit_bytes);
  step.finish = reason;
  held_.clear();
  return step;
}

size_t StopChecker::FirstMatch() const {
  // held_ is short (a stop string's length plus one piece) and there are few stop strings,
  // so a plain scan is cheaper than building an automaton per turn.
  size_t best = std::string::npos;
  for (const std::string& s : stop_strings_) {
    for (size_t pos = held_.find(s); pos != std::string::npos && pos < best;
         pos = held_.find(s, pos + 1)) {
      if (!IsContinuationByte(held_[pos])) {
        best = pos;
        break;
      }
    }
  }
  return best;
}

size_t StopChecker::FirstPartialMatch() const {
  const std::string_view text = held_;
  // Only the last max_stop_bytes_ - 1 bytes can hold a proper prefix.
  const size_t first = text.size() >= max_stop_bytes_ ? text.size() - max_stop_bytes_ + 1 : 0;
  for (size_t pos = first; pos < text.size(); ++pos) {
    if (IsContinuationByte(text[pos])) continue;
    const std::string_view tail = text.substr(pos);
    for (const std::string& s : stop_strings_) {
      // A full match was ruled out by FirstMatch, so only a proper prefix remains.
      if (tail.size() < s.size() && s.compare(0, tail.size(), tail) == 0) return pos;
    }
  }
  return text.size();
}

}  // namespace xlstmd::core
