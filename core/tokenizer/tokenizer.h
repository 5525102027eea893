// Tokenizer: text <-> token ids for one model. Implementations: BpeTokenizer (Hugging Face
// tokenizer.json, byte-level BPE) and ByteTokenizer (raw bytes plus specials, for models that
// ship no tokenizer.json).
//
// Contract: a loaded tokenizer is immutable and every method is const and safe to call from
// any number of threads at once (internal caches are per thread). Encode takes valid UTF-8
// (anything else is INVALID_ARGUMENT); Decode returns raw bytes, which may be invalid UTF-8
// when ids split a character (callers decide: Utf8Lossy, or IncrementalDetokenizer for
// streaming). Ids outside the vocabulary are INVALID_ARGUMENT on decode.
#ifndef XLSTMD_CORE_TOKENIZER_TOKENIZER_H_
#define XLSTMD_CORE_TOKENIZER_TOKENIZER_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace xlstmd::core {

struct EncodeOptions {
  // When false, special tokens written in the text are encoded as ordinary text (HF's
  // encode_special_tokens); non-special added tokens are still recognised.
  bool allow_special = true;
  // Byte ranges [begin, end) of the text where special tokens are never recognised, even
  // with allow_special: e.g. the user's message inside a chat turn whose template text does
  // use specials. Sorted and non-overlapping.
  std::vector<std::pair<size_t, size_t>> literal_ranges;
};

struct SpecialToken {
  std::string content;
  int32_t id;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      const EncodeOptions& options) const = 0;
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const {
    return Encode(text, EncodeOptions{});
  }

  // The bytes token `id` stands for; INVALID_ARGUMENT when `id` is not a token.
  virtual absl::StatusOr<std::string_view> TokenBytes(int32_t id) const = 0;

  // Concatenated TokenBytes of `ids` (raw bytes; see the file comment).
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const;

  // One more than the largest id; ids below it may still be unused (holes).
  virtual int32_t vocab_size() const = 0;

  // Special tokens (added tokens flagged special, or the byte tokenizer's extras), by id.
  virtual const std::vector<SpecialToken>& special_tokens() const = 0;
  // The id of the special or added token whose content is exactly `content`.
  virtual std::optional<int32_t> AddedTokenId(std::string_view content) const = 0;
  bool IsSpecial(int32_t id) const;
};

// Loads a tokenizer.json (see bpe_tokenizer.h for what is supported).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFile(const std::filesystem::path& path);

// The tokenizer of a model directory: its tokenizer.json when present, else the plain byte
// tokenizer with `<|endoftext|>` (id 256) as its only special token.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadModelTokenizer(
    const std::filesystem::path& model_dir);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_TOKENIZER_H_
