// The bundled demo model's tokenizer (models/demo/tokenizer.json, trained by tools/train/bpe.py)
// loads in the project's tokenizer and round-trips every held-out text of its corpus exactly
// (tests/data/demo_eval.json, written by tools/train/eval_data.py).
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core {
namespace {

const std::filesystem::path kRoot = XLSTMD_SOURCE_DIR;

std::unique_ptr<Tokenizer> Demo() {
  auto tok = LoadTokenizerFile(kRoot / "models" / "demo" / "tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

TEST(DemoTokenizerTest, Vocabulary) {
  std::unique_ptr<Tokenizer> tok = Demo();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 4416);  // <|endoftext|> + 256 bytes + 4159 merges
  EXPECT_EQ(tok->AddedTokenId("<|endoftext|>"), 0);
  EXPECT_TRUE(tok->IsSpecial(0));
  // The chat template's own text is a handful of tokens, not bytes.
  absl::StatusOr<std::vector<int32_t>> ids = tok->Encode("User: Hello\nAssistant:");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_LE(ids->size(), 10u);
}

TEST(DemoTokenizerTest, HeldOutSplitRoundTripsExactly) {
  std::unique_ptr<Tokenizer> tok = Demo();
  ASSERT_NE(tok, nullptr);
  std::ifstream in(kRoot / "tests" / "data" / "demo_eval.json");
  ASSERT_TRUE(in) << "missing tests/data/demo_eval.json";
  const nlohmann::json eval = nlohmann::json::parse(in);
  const auto& texts = eval.at("heldout_texts");
  ASSERT_GT(texts.size(), 1000u);
  EncodeOptions plain;
  plain.allow_special = false;
  size_t tokens = 0, bytes = 0, failures = 0;
  for (const auto& t : texts) {
    const std::string text = t.get<std::string>();
    absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(text, plain);
    ASSERT_TRUE(ids.ok()) << ids.status() << " on " << text;
    absl::StatusOr<std::string> back = tok->Decode(*ids);
    ASSERT_TRUE(back.ok()) << back.status();
    if (*back != text && ++failures <= 5) ADD_FAILURE() << "round trip changed " << text;
    tokens += ids->size();
    bytes += text.size();
  }
  EXPECT_EQ(failures, 0u);
  // A trained BPE compresses its own kind of text well beyond bytes.
  EXPECT_GT(static_cast<double>(bytes) / static_cast<double>(tokens), 3.0);
}

}  // namespace
}  // namespace xlstmd::core
