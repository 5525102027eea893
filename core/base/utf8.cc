#include "core/base/utf8.h"

#include "absl/strings/str_cat.h"

namespace xlstmd::core {
namespace {

// Allowed range of the second byte for each lead byte (Unicode Table 3-7); the third and
// fourth bytes are always 0x80..0xBF.
bool SecondByteOk(uint8_t lead, uint8_t b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;  // no overlongs
    case 0xED:
      return b >= 0x80 && b <= 0x9F;  // no surrogates
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;  // no overlongs
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;  // nothing above U+10FFFF
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

// Total length of the character a lead byte starts, or 0 if it can start none.
size_t LeadLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

}  // namespace

Utf8Step NextUtf8Step(std::string_view text) {
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t need = LeadLength(p[0]);
  if (need == 0) return {Utf8Step::Kind::kInvalid, 1};
  if (need == 1) return {Utf8Step::Kind::kChar, 1};
  for (size_t i = 1; i < need; ++i) {
    if (i >= text.size()) return {Utf8Step::Kind::kIncomplete, i};
    const bool ok = i == 1 ? SecondByteOk(p[0], p[1]) : (p[i] >= 0x80 && p[i] <= 0xBF);
    // The bytes seen so far are the maximal subpart; the offending byte starts afresh.
    if (!ok) return {Utf8Step::Kind::kInvalid, i};
  }
  return {Utf8Step::Kind::kChar, need};
}

size_t ValidUtf8PrefixLength(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    // ASCII fast path, 8 bytes at a time.
    while (pos + 8 <= text.size()) {
      uint64_t chunk;
      __builtin_memcpy(&chunk, text.data() + pos, 8);
      if (chunk & 0x8080808080808080ULL) break;
      pos += 8;
    }
    if (pos >= text.size()) break;
    const Utf8Step step = NextUtf8Step(text.substr(pos));
    if (step.kind != Utf8Step::Kind::kChar) break;
    pos += step.length;
  }
  return pos;
}

absl::Status ValidateUtf8(std::string_view text) {
  const size_t valid = ValidUtf8PrefixLength(text);
  if (valid == text.size()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "text is not valid UTF-8 (bad byte 0x",
      absl::Hex(static_cast<uint8_t>(text[valid]), absl::kZeroPad2), " at offset ", valid, ")"));
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const size_t valid = ValidUtf8PrefixLength(bytes.substr(pos));
    out.append(bytes.data() + pos, valid);
    pos += valid;
    if (pos >= bytes.size()) break;
    const Utf8Step step = NextUtf8Step(bytes.substr(pos));
    out.append(kReplacementChar);
    pos += step.length;
  }
  return out;
}

char32_t DecodeUtf8At(std::string_view text, size_t* pos) {
  const auto* p = reinterpret_cast<const uint8_t*>(text.data()) + *pos;
  if (p[0] < 0x80) {
    *pos += 1;
    return p[0];
  }
  if (p[0] < 0xE0) {
    *pos += 2;
    return (char32_t{p[0] & 0x1Fu} << 6) | (p[1] & 0x3Fu);
  }
  if (p[0] < 0xF0) {
    *pos += 3;
    return (char32_t{p[0] & 0x0Fu} << 12) | (char32_t{p[1] & 0x3Fu} << 6) | (p[2] & 0x3Fu);
  }
  *pos += 4;
  return (char32_t{p[0] & 0x07u} << 18) | (char32_t{p[1] & 0x3Fu} << 12) |
         (char32_t{p[2] & 0x3Fu} << 6) | (p[3] & 0x3Fu);
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace xlstmd::core
