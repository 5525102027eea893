// BpeTokenizer: a Hugging Face tokenizer.json of a byte-level BPE model (GPT-2, GPT-NeoX-20B
// and files built the same way). Supported components:
//   normalizer     null, NFC, NFD, NFKC, NFKD, Sequence of those
//   pre_tokenizer  ByteLevel (with or without its regex, add_prefix_space), Split (String or
//                  Regex pattern, all five behaviours, invert), Sequence; must end in ByteLevel
//   model          BPE: vocab, merges as "a b" strings or ["a", "b"] pairs, unk_token,
//                  ignore_merges (no dropout, no subword prefix/suffix, no byte_fallback)
//   added_tokens   all flags: special, lstrip, rstrip, single_word, normalized
//   decoder        ByteLevel;  post_processor: null or ByteLevel (both add no ids)
// Anything else fails to load with InvalidArgument naming the component.
//
// Encode follows the Rust `tokenizers` pipeline: split off non-normalized added tokens in the
// raw text; normalize each remaining piece; split off normalized added tokens; pre-tokenize;
// BPE each pre-token. No special tokens are added around the result (BOS is the chat
// template's business). Decode maps vocabulary tokens back through the byte-level alphabet;
// added tokens decode to their content verbatim.
//
// Character classes (\p{L}, \p{N}) come from PCRE2's tables: Unicode 14 in Debian 12's
// PCRE2 10.42; \s is Unicode White_Space, as in Oniguruma and Rust `tokenizers`.
//
// Immutable after loading and safe to share across threads (see tokenizer.h); the per-word
// cache is internal and per thread (word_cache.h).
#ifndef XLSTMD_CORE_TOKENIZER_BPE_TOKENIZER_H_
#define XLSTMD_CORE_TOKENIZER_BPE_TOKENIZER_H_

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "core/tokenizer/added_tokens.h"
#include "core/tokenizer/bpe_model.h"
#include "core/tokenizer/normalizer.h"
#include "core/tokenizer/pretokenizer.h"
#include "core/tokenizer/tokenizer.h"
#include "core/tokenizer/word_cache.h"

namespace xlstmd::core {

class BpeTokenizer final : public Tokenizer {
 public:
  // Errors name the file; NotFound when it does not exist.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromFile(const std::filesystem::path& path);
  // `source` names the text in error messages.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromJson(std::string_view json_text,
                                                                std::string_view source);

  using Tokenizer::Encode;
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              const EncodeOptions& options) const override;
  absl::StatusOr<std::string_view> TokenBytes(int32_t id) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(id_bytes_.size()); }
  const std::vector<SpecialToken>& special_tokens() const override { return special_tokens_; }
  std::optional<int32_t> AddedTokenId(std::string_view content) const override;

  // The id of a vocabulary token by its file spelling ("Ġthe"), for tools and tests.
  std::optional<int32_t> VocabTokenId(std::string_view token) const {
    return model_.TokenToId(token);
  }

  // For benchmarks; call before the tokenizer is shared: encode without the word cache.
  void set_cache_enabled(bool enabled) { cache_enabled_ = enabled; }

 private:
  struct Parts;  // everything parsed from the file, before matchers are built
  explicit BpeTokenizer(Parts parts);
  absl::Status EncodeNormalized(std::string_view text, PreTokenized* scratch,
                                std::vector<int32_t>* ids) const;
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;

  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  BpeModel model_;
  std::vector<AddedToken> added_tokens_;
  AddedTokenMatcher raw_matcher_;         // non-normalized added tokens, on raw text
  AddedTokenMatcher normalized_matcher_;  // normalized added tokens, on normalized text
  absl::flat_hash_map<std::string, int32_t> added_by_content_;
  std::vector<SpecialToken> special_tokens_;
  std::vector<bool> is_special_;
  std::vector<std::string> id_bytes_;  // decode table
  std::vector<bool> id_present_;
  WordCache cache_;
  bool cache_enabled_ = true;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_BPE_TOKENIZER_H_
