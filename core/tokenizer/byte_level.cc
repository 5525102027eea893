#include "core/tokenizer/byte_level.h"

#include "core/base/utf8.h"

namespace xlstmd::core {

bool ByteLevelDecode(std::string_view token, std::string* out) {
  if (ValidUtf8PrefixLength(token) != token.size()) return false;
  size_t pos = 0;
  while (pos < token.size()) {
    const int b = UnicodeToByte(DecodeUtf8At(token, &pos));
    if (b < 0) return false;
    out->push_back(static_cast<char>(b));
  }
  return true;
}

std::string ByteLevelEncode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) AppendUtf8(kByteToUnicode[static_cast<uint8_t>(c)], &out);
  return out;
}

}  // namespace xlstmd::core
