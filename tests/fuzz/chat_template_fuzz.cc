// chat_template.json over the GPT-NeoX tokenizer (the xLSTM-7B one, from ../shared; the byte
// tokenizer when it is missing): a template that parses and validates must encode a session
// start and turns with ids inside the vocabulary.
#include <string>

#include "core/tokenizer/byte_tokenizer.h"
#include "core/tokenizer/chat_template.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

const xlstmd::core::Tokenizer& Tok() {
  static const xlstmd::core::Tokenizer* tok = [] {
    const char* env = std::getenv("XLSTMD_SHARED_DIR");
    const std::string dir = env != nullptr && *env != '\0' ? env : XLSTMD_SHARED_DIR;
    auto neox = xlstmd::core::LoadTokenizerFile(dir + "/tokenizers/gpt-neox-20b/tokenizer.json");
    if (neox.ok()) return neox->release();
    auto bytes = xlstmd::core::ByteTokenizer::Create({"<|endoftext|>"});
    if (!bytes.ok()) __builtin_trap();
    return static_cast<xlstmd::core::Tokenizer*>(bytes->release());
  }();
  return *tok;
}

void CheckIds(const absl::StatusOr<std::vector<int32_t>>& ids) {
  if (!ids.ok()) return;
  for (int32_t id : *ids) {
    if (id < 0 || id >= Tok().vocab_size()) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using xlstmd::core::ChatTemplate;
  static const ChatTemplate builtin = ChatTemplate::Builtin(Tok());
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto tmpl = ChatTemplate::FromJson(text, "fuzz/chat_template.json", builtin);
  if (!tmpl.ok() || !tmpl->Validate(Tok()).ok()) return 0;
  CheckIds(xlstmd::core::EncodeSessionStart(*tmpl, Tok(), ""));
  CheckIds(xlstmd::core::EncodeSessionStart(*tmpl, Tok(), "You are terse."));
  for (bool reply_open : {false, true}) {
    CheckIds(xlstmd::core::EncodeUserTurn(*tmpl, Tok(), "hi <|endoftext|> there", reply_open));
  }
  return 0;
}

namespace xlstmd::fuzz {

std::vector<std::string> FuzzSeeds() {
  return {
      R"({"version": 1, "bos_policy": "none", "user": {"prefix": "<|padding|>Q: "},
          "assistant": {"prefix": "A:", "suffix": "<|endoftext|>"},
          "stop_token_ids": [0, 1], "stop_strings": ["\nQ:"]})",
      R"({"version": 1, "bos_policy": "session_start", "bos_token_ids": [0],
          "system": {"prefix": "System: ", "suffix": "\n"},
          "default_system_prompt": "Be kind."})",
      R"({"user": {"prefix": "", "suffix": ""}, "stop_strings": []})",
      "{}",
  };
}

}  // namespace xlstmd::fuzz
