// UTF-8 helpers (tokenizers, request validation, snapshot and log text, metric labels):
// strict validation (RFC 3629: no surrogates, no overlongs, nothing above U+10FFFF), code
// point stepping, and the lossy conversion that turns
// invalid bytes into U+FFFD the way WHATWG / Rust's from_utf8_lossy do (one U+FFFD per
// "maximal subpart" of an ill-formed sequence). Pure functions; any thread.
#ifndef XLSTMD_CORE_BASE_UTF8_H_
#define XLSTMD_CORE_BASE_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace xlstmd::core {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// OK for well-formed UTF-8; INVALID_ARGUMENT naming the byte offset of the first bad byte.
absl::Status ValidateUtf8(std::string_view text);

// Length in bytes of the well-formed prefix of `text` that ends on a character boundary.
size_t ValidUtf8PrefixLength(std::string_view text);

// Result of inspecting the bytes at the front of a buffer.
struct Utf8Step {
  enum class Kind {
    kChar,        // a complete, well-formed character of `length` bytes
    kInvalid,     // `length` bytes form one maximal ill-formed subpart: emit one U+FFFD
    kIncomplete,  // a valid prefix of a character that needs more bytes than are present
  };
  Kind kind;
  size_t length;
};
// Inspects text[0..]; `text` must be non-empty.
Utf8Step NextUtf8Step(std::string_view text);

// `bytes` with every maximal ill-formed subpart (and an incomplete tail) replaced by U+FFFD.
std::string Utf8Lossy(std::string_view bytes);

// Decodes the well-formed character at text[*pos] and advances *pos. Precondition: `text` is
// valid UTF-8 and *pos < text.size() is a character boundary.
char32_t DecodeUtf8At(std::string_view text, size_t* pos);

// Appends the UTF-8 encoding of `cp` (a Unicode scalar value) to `out`.
void AppendUtf8(char32_t cp, std::string* out);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_BASE_UTF8_H_
