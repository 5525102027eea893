// Text normalizers of Hugging Face tokenizer.json files: the Unicode normalization forms
// (NFC, NFD, NFKC, NFKD), alone or chained by a "Sequence". Backed by ICU (Debian's
// libicu-dev), whose Normalizer2 works on UTF-8 directly and whose singletons are immutable,
// so a Normalizer is immutable after Create and safe to share across threads.
#ifndef XLSTMD_CORE_TOKENIZER_NORMALIZER_H_
#define XLSTMD_CORE_TOKENIZER_NORMALIZER_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace xlstmd::core {

enum class NormalizationForm { kNfc, kNfd, kNfkc, kNfkd };

class Normalizer {
 public:
  // `forms` run in order; an empty chain is the identity.
  static absl::StatusOr<Normalizer> Create(std::vector<NormalizationForm> forms);

  // Normalizes valid UTF-8 `text`. Returns `text` itself when it is already normalized (the
  // common case, checked without copying), else a view of `*scratch`, which it overwrites.
  absl::StatusOr<std::string_view> Normalize(std::string_view text, std::string* scratch) const;

  bool empty() const { return forms_.empty(); }

 private:
  explicit Normalizer(std::vector<const void*> forms) : forms_(std::move(forms)) {}
  std::vector<const void*> forms_;  // const icu::Normalizer2*, owned by ICU
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_NORMALIZER_H_
