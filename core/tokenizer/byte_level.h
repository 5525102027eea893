// The GPT-2 byte-level alphabet: a bijection between the 256 byte values and 256 printable
// Unicode code points, so that byte-level BPE vocabularies can be stored as JSON strings.
// Printable Latin-1 bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) map to themselves; the
// other 68 bytes map, in byte order, to U+0100, U+0101, ... (so ' ' (0x20) is 'Ġ' U+0120).
// Constant tables; any thread.
#ifndef XLSTMD_CORE_TOKENIZER_BYTE_LEVEL_H_
#define XLSTMD_CORE_TOKENIZER_BYTE_LEVEL_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace xlstmd::core {

namespace byte_level_internal {

constexpr bool MapsToItself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

constexpr std::array<char32_t, 256> MakeByteToUnicode() {
  std::array<char32_t, 256> table{};
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) table[b] = MapsToItself(b) ? char32_t(b) : next++;
  return table;
}

}  // namespace byte_level_internal

inline constexpr std::array<char32_t, 256> kByteToUnicode =
    byte_level_internal::MakeByteToUnicode();

// The byte that code point `cp` stands for, or -1 if `cp` is not in the alphabet.
constexpr int UnicodeToByte(char32_t cp) {
  if (cp < 0x100) return byte_level_internal::MapsToItself(static_cast<int>(cp)) ? int(cp) : -1;
  if (cp >= 0x100 + 68) return -1;
  // The (cp - 0x100)-th byte that does not map to itself.
  int rank = static_cast<int>(cp - 0x100);
  for (int b = 0; b < 256; ++b) {
    if (!byte_level_internal::MapsToItself(b) && rank-- == 0) return b;
  }
  return -1;
}

// The raw bytes a byte-level token string spells. Returns false (leaving *out partly written)
// if `token` is not valid UTF-8 or holds a character outside the alphabet.
bool ByteLevelDecode(std::string_view token, std::string* out);

// The byte-level spelling of `bytes` (each byte as its alphabet character, UTF-8 encoded).
std::string ByteLevelEncode(std::string_view bytes);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_BYTE_LEVEL_H_
