// Parsing of Hugging Face tokenizer.json text into plain specs (no matching machinery yet),
// with every unsupported component reported as InvalidArgument naming it and its JSON path.
// See bpe_tokenizer.h for the supported set. Pure function; any thread.
#ifndef XLSTMD_CORE_TOKENIZER_TOKENIZER_JSON_H_
#define XLSTMD_CORE_TOKENIZER_TOKENIZER_JSON_H_

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tokenizer/added_tokens.h"
#include "core/tokenizer/bpe_model.h"
#include "core/tokenizer/normalizer.h"
#include "core/tokenizer/pretokenizer.h"

namespace xlstmd::core {

struct TokenizerJsonSpec {
  std::vector<NormalizationForm> normalizer;    // empty: none
  std::vector<PreTokenizerStep> pre_tokenizer;  // flattened Sequence; ends with ByteLevel
  BpeModelSpec model;
  std::vector<AddedToken> added_tokens;
};

absl::StatusOr<TokenizerJsonSpec> ParseTokenizerJson(std::string_view json_text);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_TOKENIZER_JSON_H_
