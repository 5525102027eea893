// Test helpers for tests/tokenizer: the shared GPT-NeoX tokenizer (loaded once per binary)
// and a builder of small synthetic tokenizer.json files whose vocabulary is the 256 byte-level
// characters (id = byte value) plus merged tokens.
#ifndef XLSTMD_TESTS_TOKENIZER_TOKENIZER_TESTUTIL_H_
#define XLSTMD_TESTS_TOKENIZER_TOKENIZER_TESTUTIL_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tokenizer/bpe_tokenizer.h"
#include "core/tokenizer/byte_level.h"
#include "core/base/utf8.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace xlstmd::testing {

inline std::string NeoxTokenizerPath() {
  return std::string(XLSTMD_SHARED_DIR) + "/tokenizers/gpt-neox-20b/tokenizer.json";
}

// Loaded once; a missing file fails every test that needs it (CI has ../shared).
inline const core::BpeTokenizer& Neox() {
  static const core::BpeTokenizer* tok = [] {
    auto loaded = core::BpeTokenizer::FromFile(NeoxTokenizerPath());
    if (!loaded.ok()) {
      ADD_FAILURE() << loaded.status();
      std::abort();
    }
    return loaded->release();
  }();
  return *tok;
}

// A byte-level BPE tokenizer.json: ids 0..255 are the bytes, then one token per merge (in
// merge order). Merges are given in raw bytes ("h", "e") and written in byte-level spelling.
struct SyntheticTokenizer {
  std::vector<std::pair<std::string, std::string>> merges;
  nlohmann::json added_tokens = nlohmann::json::array();
  nlohmann::json normalizer = nullptr;
  nlohmann::json pre_tokenizer = {{"type", "ByteLevel"},
                                  {"add_prefix_space", false},
                                  {"trim_offsets", true},
                                  {"use_regex", true}};
  nlohmann::json decoder = {{"type", "ByteLevel"}};
  nlohmann::json post_processor = nullptr;
  bool pair_merges = false;
  nlohmann::json model_extra = nlohmann::json::object();

  nlohmann::json Json() const {
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
    nlohmann::json model = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}};
    model.update(model_extra);
    return {{"version", "1.0"},
            {"added_tokens", added_tokens},
            {"normalizer", normalizer},
            {"pre_tokenizer", pre_tokenizer},
            {"post_processor", post_processor},
            {"decoder", decoder},
            {"model", model}};
  }

  absl::StatusOr<std::unique_ptr<core::BpeTokenizer>> Load() const {
    return core::BpeTokenizer::FromJson(Json().dump(), "synthetic");
  }
};

inline nlohmann::json AddedTokenJson(int id, const std::string& content, bool special,
                                     bool lstrip = false, bool rstrip = false,
                                     bool single_word = false, bool normalized = false) {
  return {{"id", id},
          {"content", content},
          {"special", special},
          {"lstrip", lstrip},
          {"rstrip", rstrip},
          {"single_word", single_word},
          {"normalized", normalized}};
}

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_TOKENIZER_TOKENIZER_TESTUTIL_H_
