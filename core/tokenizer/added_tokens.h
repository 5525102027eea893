// Added tokens of a tokenizer.json ("added_tokens": specials such as <|endoftext|> and extra
// vocabulary such as NeoX's runs of spaces), and the matcher that finds them in text before
// any BPE runs. Semantics follow the Rust `tokenizers` crate: leftmost-longest,
// non-overlapping matches; a match that fails `single_word` (or is a special token where
// specials are not allowed) is dropped, not retried shorter; `lstrip`/`rstrip` widen a match
// over adjacent Unicode White_Space; `normalized` tokens are matched in normalized text.
// An AddedTokenMatcher is immutable after construction and safe to share across threads.
#ifndef XLSTMD_CORE_TOKENIZER_ADDED_TOKENS_H_
#define XLSTMD_CORE_TOKENIZER_ADDED_TOKENS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace xlstmd::core {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// One piece of a split: either text to encode further, or an added token.
struct TextSegment {
  size_t begin = 0;
  size_t end = 0;
  int32_t token_id = -1;  // -1 for plain text
};

class AddedTokenMatcher {
 public:
  struct Pattern {
    std::string text;  // what to look for (the content, normalized for normalized tokens)
    const AddedToken* token;
  };
  AddedTokenMatcher() = default;
  // `tokens` must outlive the matcher.
  explicit AddedTokenMatcher(std::vector<Pattern> patterns);

  // Cuts valid UTF-8 `text` into plain-text and token segments (appended to `out`, covering
  // `text` except whitespace eaten by lstrip/rstrip). `special_allowed(begin, end)` says
  // whether a special token found at text[begin, end) may be used.
  template <typename SpecialAllowed>
  void Split(std::string_view text, const SpecialAllowed& special_allowed,
             std::vector<TextSegment>* out) const;

  bool empty() const { return patterns_.empty(); }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
    int32_t pattern = -1;                               // index of a pattern ending here
  };
  // The longest pattern starting at text[pos]: (pattern index, length), or (-1, 0).
  std::pair<int32_t, size_t> LongestAt(std::string_view text, size_t pos) const;
  // Applies single_word/lstrip/rstrip; returns false if the match must be dropped.
  bool Adjust(std::string_view text, const AddedToken& token, size_t floor, size_t* begin,
              size_t* end) const;

  std::vector<Pattern> patterns_;
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
};

template <typename SpecialAllowed>
void AddedTokenMatcher::Split(std::string_view text, const SpecialAllowed& special_allowed,
                              std::vector<TextSegment>* out) const {
  size_t emitted = 0;  // end of the last segment pushed
  size_t pos = 0;
  while (pos < text.size()) {
    if (!first_byte_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    const auto [index, length] = LongestAt(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = *patterns_[index].token;
    size_t begin = pos, end = pos + length;
    pos = end;                      // the next search starts after this match, used or not
    if (begin < emitted) continue;  // overlaps whitespace a previous rstrip took
    if (token.special && !special_allowed(begin, end)) continue;
    if (!Adjust(text, token, emitted, &begin, &end)) continue;
    if (begin > emitted) out->push_back({emitted, begin, -1});
    out->push_back({begin, end, token.id});
    emitted = end;
    pos = end;
  }
  if (emitted < text.size()) out->push_back({emitted, text.size(), -1});
}

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_ADDED_TOKENS_H_
