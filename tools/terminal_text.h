// Text a model generated, made safe to print on a terminal (used by `xlstm chat`).
#ifndef XLSTMD_TOOLS_TERMINAL_TEXT_H_
#define XLSTMD_TOOLS_TERMINAL_TEXT_H_

#include <string>

#include "absl/strings/str_format.h"

namespace xlstmd::tools {

// Reply text for stdout. On a terminal, C0 controls other than newline and tab, DEL and C1
// controls (U+0080..U+009F) become visible `\xHH` / `\u00HH` escapes: raw ESC sequences from a
// model could otherwise move the cursor, recolour or retitle the user's terminal. Deltas carry
// complete UTF-8 only, so a C1 control is always its whole two-byte sequence.
inline std::string ForTerminal(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7F) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else if (c == 0xC2 && i + 1 < text.size() &&
               (static_cast<unsigned char>(text[i + 1]) & 0xE0) == 0x80) {
      absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(text[i + 1]));
      ++i;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

}  // namespace xlstmd::tools

#endif  // XLSTMD_TOOLS_TERMINAL_TEXT_H_
