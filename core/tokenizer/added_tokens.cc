#include "core/tokenizer/added_tokens.h"

#include <unicode/uchar.h>

#include <algorithm>

#include "core/tokenizer/pretokenizer.h"
#include "core/base/utf8.h"

namespace xlstmd::core {
namespace {

// Rust's char::is_alphanumeric: Alphabetic or a numeric category (Nd, Nl, No).
bool IsAlphanumeric(char32_t cp) {
  if (u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_ALPHABETIC)) return true;
  const int8_t type = u_charType(static_cast<UChar32>(cp));
  return type == U_DECIMAL_DIGIT_NUMBER || type == U_LETTER_NUMBER || type == U_OTHER_NUMBER;
}

// The character that ends text[0, end) (end > 0, on a boundary).
char32_t CharBefore(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
  return DecodeUtf8At(text, &start);
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<Pattern> patterns)
    : patterns_(std::move(patterns)) {
  nodes_.emplace_back();
  for (size_t p = 0; p < patterns_.size(); ++p) {
    const std::string& text = patterns_[p].text;
    if (text.empty()) continue;
    first_byte_[static_cast<uint8_t>(text[0])] = true;
    int32_t node = 0;
    for (char ch : text) {
      const auto b = static_cast<uint8_t>(ch);
      auto& children = nodes_[node].children;
      auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(b, INT32_MIN));
      if (it != children.end() && it->first == b) {
        node = it->second;
        continue;
      }
      const auto child = static_cast<int32_t>(nodes_.size());
      children.insert(it, {b, child});
      nodes_.emplace_back();  // invalidates `children`; not used again this iteration
      node = child;
    }
    // The first token listed wins when two share a content, as in HF.
    if (nodes_[node].pattern < 0) nodes_[node].pattern = static_cast<int32_t>(p);
  }
}

std::pair<int32_t, size_t> AddedTokenMatcher::LongestAt(std::string_view text, size_t pos) const {
  std::pair<int32_t, size_t> best{-1, 0};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto b = static_cast<uint8_t>(text[i]);
    const auto& children = nodes_[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(b, INT32_MIN));
    if (it == children.end() || it->first != b) break;
    node = it->second;
    if (nodes_[node].pattern >= 0) best = {nodes_[node].pattern, i + 1 - pos};
  }
  return best;
}

bool AddedTokenMatcher::Adjust(std::string_view text, const AddedToken& token, size_t floor,
                               size_t* begin, size_t* end) const {
  if (token.single_word) {
    // A word character right before or after means the token is part of a longer word.
    if (*begin > 0 && IsAlphanumeric(CharBefore(text, *begin))) return false;
    if (*end < text.size()) {
      size_t p = *end;
      if (IsAlphanumeric(DecodeUtf8At(text, &p))) return false;
    }
  }
  if (token.lstrip) {
    size_t b = *begin;
    while (b > floor) {
      size_t start = b - 1;
      while (start > floor && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
      size_t p = start;
      if (!IsUnicodeWhiteSpace(DecodeUtf8At(text, &p))) break;
      b = start;
    }
    *begin = b;
  }
  if (token.rstrip) {
    size_t e = *end;
    while (e < text.size()) {
      size_t p = e;
      if (!IsUnicodeWhiteSpace(DecodeUtf8At(text, &p))) break;
      e = p;
    }
    *end = e;
  }
  return true;
}

}  // namespace xlstmd::core
