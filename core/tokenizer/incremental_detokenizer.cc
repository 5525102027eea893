#include "core/tokenizer/incremental_detokenizer.h"

#include "core/base/status_macros.h"
#include "core/base/utf8.h"

namespace xlstmd::core {

absl::StatusOr<std::string> IncrementalDetokenizer::Push(int32_t id) {
  XLSTMD_ASSIGN_OR_RETURN(const std::string_view bytes, tokenizer_->TokenBytes(id));
  pending_.append(bytes);
  const std::string_view all = pending_;
  std::string out;
  size_t pos = 0;
  while (pos < all.size()) {
    const size_t valid = ValidUtf8PrefixLength(all.substr(pos));
    out.append(all.substr(pos, valid));
    pos += valid;
    if (pos == all.size()) break;
    const Utf8Step step = NextUtf8Step(all.substr(pos));
    if (step.kind == Utf8Step::Kind::kIncomplete) break;  // may still complete: hold back
    out.append(kReplacementChar);                         // kInvalid: no later byte can repair it
    pos += step.length;
  }
  pending_.erase(0, pos);
  return out;
}

std::string IncrementalDetokenizer::Finish() {
  std::string out = Utf8Lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace xlstmd::core
