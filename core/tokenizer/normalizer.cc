#include "core/tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace xlstmd::core {
namespace {

const icu::Normalizer2* GetInstance(NormalizationForm form, UErrorCode* status) {
  switch (form) {
    case NormalizationForm::kNfc:
      return icu::Normalizer2::getNFCInstance(*status);
    case NormalizationForm::kNfd:
      return icu::Normalizer2::getNFDInstance(*status);
    case NormalizationForm::kNfkc:
      return icu::Normalizer2::getNFKCInstance(*status);
    case NormalizationForm::kNfkd:
      return icu::Normalizer2::getNFKDInstance(*status);
  }
  return nullptr;
}

bool IsAscii(std::string_view text) {
  size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    uint64_t chunk;
    std::memcpy(&chunk, text.data() + i, 8);
    if (chunk & 0x8080808080808080ULL) return false;
  }
  for (; i < text.size(); ++i) {
    if (static_cast<uint8_t>(text[i]) >= 0x80) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<Normalizer> Normalizer::Create(std::vector<NormalizationForm> forms) {
  std::vector<const void*> instances;
  for (NormalizationForm form : forms) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* n = GetInstance(form, &status);
    if (U_FAILURE(status) || n == nullptr) {
      return absl::InternalError(absl::StrCat("ICU normalizer unavailable: ", u_errorName(status)));
    }
    instances.push_back(n);
  }
  return Normalizer(std::move(instances));
}

absl::StatusOr<std::string_view> Normalizer::Normalize(std::string_view text,
                                                       std::string* scratch) const {
  // ASCII is invariant under all four forms; this skips ICU for most English and code.
  if (forms_.empty() || IsAscii(text)) return text;
  std::string_view current = text;
  std::string other;
  for (const void* form : forms_) {
    const auto* n = static_cast<const icu::Normalizer2*>(form);
    const icu::StringPiece piece(current.data(), static_cast<int32_t>(current.size()));
    UErrorCode status = U_ZERO_ERROR;
    if (n->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) continue;
    status = U_ZERO_ERROR;
    other.clear();
    icu::StringByteSink<std::string> sink(&other, static_cast<int32_t>(current.size()));
    n->normalizeUTF8(0, piece, sink, nullptr, status);
    if (U_FAILURE(status)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Unicode normalization failed: ", u_errorName(status)));
    }
    scratch->swap(other);
    current = *scratch;
  }
  return current;
}

}  // namespace xlstmd::core
