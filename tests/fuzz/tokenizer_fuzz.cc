// tokenizer.json: a file that loads must then encode and decode without faults, and every id
// it produces must be inside its vocabulary.
#include <string>

#include "core/tokenizer/bpe_tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_target.h"
#include "tests/tokenizer/tokenizer_testutil.h"

namespace {

void Exercise(const xlstmd::core::BpeTokenizer& tok) {
  static const char* const kTexts[] = {"Hello, world! 123", " \n\t  x", "naïve 日本語 🙂",
                                       "<|endoftext|>user", "\xff\xfe bad utf8"};
  for (const char* text : kTexts) {
    for (bool allow_special : {true, false}) {
      xlstmd::core::EncodeOptions options;
      options.allow_special = allow_special;
      auto ids = tok.Encode(text, options);
      if (!ids.ok()) continue;
      for (int32_t id : *ids) {
        if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
      }
      (void)tok.Decode(*ids);
    }
  }
  const int32_t vocab = tok.vocab_size();
  for (int32_t id : {-1, 0, 1, vocab / 2, vocab - 1, vocab, INT32_MAX}) (void)tok.TokenBytes(id);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto tok = xlstmd::core::BpeTokenizer::FromJson(text, "fuzz/tokenizer.json");
  if (tok.ok()) Exercise(**tok);
  return 0;
}

namespace xlstmd::fuzz {

std::vector<std::string> FuzzSeeds() {
  // Small files from the tokenizer tests' builder (tests/tokenizer/tokenizer_testutil.h).
  std::vector<std::string> seeds;
  testing::SyntheticTokenizer hello;
  hello.merges = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {" ", "w"}};
  hello.added_tokens = nlohmann::json::array(
      {{{"id", 300}, {"content", "<|endoftext|>"}, {"single_word", false}, {"lstrip", false},
        {"rstrip", false}, {"normalized", false}, {"special", true}}});
  hello.normalizer = {{"type", "NFC"}};
  seeds.push_back(hello.Json().dump());
  testing::SyntheticTokenizer pairs;
  pairs.merges = {{"a", "b"}, {"ab", "c"}};
  pairs.pair_merges = true;
  seeds.push_back(pairs.Json().dump(1));
  nlohmann::json big_id = hello.Json();
  big_id["added_tokens"][0]["id"] = 2147483647;  // the bound checked before allocating
  seeds.push_back(big_id.dump());
  return seeds;
}

}  // namespace xlstmd::fuzz
