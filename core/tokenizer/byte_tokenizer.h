// ByteTokenizer: for models that ship no tokenizer.json. Ids 0..255 are the byte values;
// special tokens follow from id 256 in the order given. Encode recognises the specials'
// contents in text (leftmost-longest, like added tokens of a BPE file, subject to
// EncodeOptions) and emits every other byte as its own id. Immutable; any thread.
#ifndef XLSTMD_CORE_TOKENIZER_BYTE_TOKENIZER_H_
#define XLSTMD_CORE_TOKENIZER_BYTE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tokenizer/added_tokens.h"
#include "core/tokenizer/tokenizer.h"

namespace xlstmd::core {

class ByteTokenizer final : public Tokenizer {
 public:
  // InvalidArgument for empty, duplicate or non-UTF-8 contents.
  static absl::StatusOr<std::unique_ptr<ByteTokenizer>> Create(
      const std::vector<std::string>& special_contents);

  using Tokenizer::Encode;
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              const EncodeOptions& options) const override;
  absl::StatusOr<std::string_view> TokenBytes(int32_t id) const override;
  int32_t vocab_size() const override { return 256 + static_cast<int32_t>(specials_.size()); }
  const std::vector<SpecialToken>& special_tokens() const override { return specials_; }
  std::optional<int32_t> AddedTokenId(std::string_view content) const override;

 private:
  ByteTokenizer() = default;
  std::vector<SpecialToken> specials_;
  std::vector<AddedToken> added_;  // the specials, for the matcher
  AddedTokenMatcher matcher_;
  std::string bytes_;  // bytes_[b] == b, so TokenBytes can return a view
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_BYTE_TOKENIZER_H_
