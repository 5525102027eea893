#include "core/tokenizer/byte_tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/base/utf8.h"

namespace xlstmd::core {

absl::StatusOr<std::unique_ptr<ByteTokenizer>> ByteTokenizer::Create(
    const std::vector<std::string>& special_contents) {
  std::unique_ptr<ByteTokenizer> tok(new ByteTokenizer());
  for (int b = 0; b < 256; ++b) tok->bytes_.push_back(static_cast<char>(b));
  for (size_t i = 0; i < special_contents.size(); ++i) {
    const std::string& content = special_contents[i];
    if (content.empty() || !ValidateUtf8(content).ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("byte tokenizer: special token ", i, " is empty or not UTF-8"));
    }
    if (tok->AddedTokenId(content).has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("byte tokenizer: special token \"", content, "\" is listed twice"));
    }
    const auto id = static_cast<int32_t>(256 + i);
    tok->specials_.push_back({content, id});
    AddedToken t;
    t.content = content;
    t.id = id;
    t.special = true;
    tok->added_.push_back(std::move(t));
  }
  std::vector<AddedTokenMatcher::Pattern> patterns;
  for (const AddedToken& t : tok->added_) patterns.push_back({t.content, &t});
  tok->matcher_ = AddedTokenMatcher(std::move(patterns));
  return tok;
}

std::optional<int32_t> ByteTokenizer::AddedTokenId(std::string_view content) const {
  for (const SpecialToken& s : specials_) {
    if (s.content == content) return s.id;
  }
  return std::nullopt;
}

absl::StatusOr<std::vector<int32_t>> ByteTokenizer::Encode(std::string_view text,
                                                           const EncodeOptions& options) const {
  XLSTMD_RETURN_IF_ERROR(ValidateUtf8(text));
  std::vector<TextSegment> segments;
  matcher_.Split(
      text,
      [&](size_t begin, size_t end) {
        if (!options.allow_special) return false;
        for (const auto& [lb, le] : options.literal_ranges) {
          if (lb < end && begin < le) return false;
        }
        return true;
      },
      &segments);
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (const TextSegment& seg : segments) {
    if (seg.token_id >= 0) {
      ids.push_back(seg.token_id);
      continue;
    }
    for (size_t i = seg.begin; i < seg.end; ++i) ids.push_back(static_cast<uint8_t>(text[i]));
  }
  return ids;
}

absl::StatusOr<std::string_view> ByteTokenizer::TokenBytes(int32_t id) const {
  if (id >= 0 && id < 256) return std::string_view(bytes_).substr(static_cast<size_t>(id), 1);
  if (id >= 256 && id < vocab_size()) return std::string_view(specials_[id - 256].content);
  return absl::InvalidArgumentError(
      absl::StrCat("token id ", id, " is not in the vocabulary (size ", vocab_size(), ")"));
}

}  // namespace xlstmd::core
