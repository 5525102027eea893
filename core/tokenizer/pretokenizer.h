// Pre-tokenizers of Hugging Face tokenizer.json files: they cut normalized text into the
// pieces ("words") that BPE then encodes one at a time. Supported: "Split" (a literal or an
// Oniguruma regex, with the five delimiter behaviours and `invert`), "ByteLevel" (with or
// without its GPT-2 regex, optional prefix space) and "Sequence" of those. Byte-level mapping
// itself is not done here: pieces stay raw UTF-8 and the BPE model maps their bytes to its
// alphabet, so ByteLevel must be the last step (as in every GPT-2/NeoX/Llama-3 style file).
//
// Regexes are written for Oniguruma (what the Rust `tokenizers` crate uses) and run on PCRE2
// with JIT in UTF + UCP mode; OnigurumaToPcre2 rewrites the escapes whose meaning differs
// (\s, \h, \w and their negations) so that, e.g., \s is exactly Unicode White_Space.
// A PreTokenizer is immutable after Create and safe to share across threads (match scratch
// is per thread).
#ifndef XLSTMD_CORE_TOKENIZER_PRETOKENIZER_H_
#define XLSTMD_CORE_TOKENIZER_PRETOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace xlstmd::core {

// The regex the GPT-2 ByteLevel pre-tokenizer uses when its file names none.
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// True for code points with the Unicode White_Space property (Oniguruma's \s, Rust's
// char::is_whitespace).
bool IsUnicodeWhiteSpace(char32_t cp);

// Rewrites an Oniguruma pattern into PCRE2 syntax with the same meaning. InvalidArgument for
// constructs it cannot translate faithfully (nested classes, class intersection `&&`, \S or \W
// inside a class).
absl::StatusOr<std::string> OnigurumaToPcre2(std::string_view pattern);

// A compiled PCRE2 pattern (UTF, UCP, MULTILINE as Oniguruma's ^ and $ are line anchors).
class Regex {
 public:
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(const std::string& pcre2_pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [begin, end) byte ranges of all non-empty, non-overlapping matches in valid
  // UTF-8 `text`, left to right. Errors (match or JIT stack limits) are ResourceExhausted.
  absl::Status FindAll(std::string_view text,
                       std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  Regex(void* code, bool jit) : code_(code), jit_(jit) {}
  void* code_;  // pcre2_code_8*
  bool jit_;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel };
  Kind kind = Kind::kByteLevel;
  // kSplit
  std::string pattern;  // Oniguruma regex, or a literal when !pattern_is_regex
  bool pattern_is_regex = true;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  // kByteLevel
  bool add_prefix_space = false;
  bool use_regex = true;
};

// The pieces of one text: non-empty [begin, end) byte ranges of `text`, in order.
struct PreTokenized {
  std::string_view text;  // the input, or `buffer` when a step rewrote it
  std::string buffer;
  std::vector<std::pair<uint32_t, uint32_t>> pieces;

  std::string_view piece(size_t i) const {
    return text.substr(pieces[i].first, pieces[i].second - pieces[i].first);
  }
};

class PreTokenizer {
 public:
  // No steps: the whole text is one piece. ByteLevel anywhere but last is InvalidArgument.
  static absl::StatusOr<PreTokenizer> Create(std::vector<PreTokenizerStep> steps);

  // Cuts valid UTF-8 `text` (at most 4 GiB) into `out`, overwriting it.
  absl::Status Run(std::string_view text, PreTokenized* out) const;

 private:
  struct Compiled {
    PreTokenizerStep spec;
    std::shared_ptr<const Regex> regex;  // null for ByteLevel without regex
  };
  explicit PreTokenizer(std::vector<Compiled> steps) : steps_(std::move(steps)) {}
  absl::Status ApplySplit(const Compiled& step, PreTokenized* io) const;

  std::vector<Compiled> steps_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_PRETOKENIZER_H_
