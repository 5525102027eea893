#include "core/tokenizer/tokenizer.h"

#include <system_error>

#include "core/base/status_macros.h"
#include "core/tokenizer/bpe_tokenizer.h"
#include "core/tokenizer/byte_tokenizer.h"

namespace xlstmd::core {

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    XLSTMD_ASSIGN_OR_RETURN(const std::string_view bytes, TokenBytes(id));
    out.append(bytes);
  }
  return out;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  for (const SpecialToken& s : special_tokens()) {
    if (s.id == id) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFile(const std::filesystem::path& path) {
  XLSTMD_ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> tok, BpeTokenizer::FromFile(path));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadModelTokenizer(
    const std::filesystem::path& model_dir) {
  const std::filesystem::path file = model_dir / "tokenizer.json";
  std::error_code ec;
  if (std::filesystem::exists(file, ec)) return LoadTokenizerFile(file);
  XLSTMD_ASSIGN_OR_RETURN(std::unique_ptr<ByteTokenizer> tok,
                          ByteTokenizer::Create({"<|endoftext|>"}));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

}  // namespace xlstmd::core
