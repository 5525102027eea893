// tokenizer.json: a file that loads must then encode and decode without faults, and every id
// it produces must be inside its vocabulary.
#include <string>

#include "core/tokenizer/bpe_tokenizer.h"
#include "core/tokenizer/byte_level.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_target.h"

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

namespace {

// A byte-level BPE file: ids 0..255 are the bytes, then one token per merge.
nlohmann::json ByteLevelBpe(const std::vector<std::pair<std::string, std::string>>& merges,
                            bool pair_merges) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[core::ByteLevelEncode(std::string(1, char(b)))] = b;
  nlohmann::json merge_list = nlohmann::json::array();
  int next = 256;
  for (const auto& [l, r] : merges) {
    const std::string left = core::ByteLevelEncode(l), right = core::ByteLevelEncode(r);
    if (!vocab.contains(left + right)) vocab[left + right] = next++;
    if (pair_merges) {
      merge_list.push_back({left, right});
    } else {
      merge_list.push_back(left + " " + right);
    }
  }
  return {{"version", "1.0"},
          {"added_tokens",
           nlohmann::json::array({{{"id", next},
                                   {"content", "<|endoftext|>"},
                                   {"single_word", false},
                                   {"lstrip", false},
                                   {"rstrip", false},
                                   {"normalized", false},
                                   {"special", true}}})},
          {"normalizer", {{"type", "NFC"}}},
          {"pre_tokenizer",
           {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
            {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}}};
}

}  // namespace

std::vector<std::string> FuzzSeeds() {
  std::vector<std::string> seeds;
  seeds.push_back(ByteLevelBpe({{"h", "e"}, {"l", "l"}, {"he", "ll"}, {" ", "w"}}, false).dump());
  seeds.push_back(ByteLevelBpe({{"a", "b"}, {"ab", "c"}}, true).dump(1));
  nlohmann::json no_normalizer = ByteLevelBpe({{"x", "y"}}, false);
  no_normalizer["normalizer"] = nullptr;
  no_normalizer["added_tokens"][0]["id"] = 2147483647;  // the bound checked before allocating
  seeds.push_back(no_normalizer.dump());
  return seeds;
}

}  // namespace xlstmd::fuzz
