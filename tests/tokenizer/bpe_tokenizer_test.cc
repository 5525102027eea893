// BpeTokenizer on small synthetic tokenizer.json files: merges (both encodings, ranks, ties,
// long words vs a naive reference), added-token flags, ignore_merges, decode, and the errors
// for unsupported components.
#include "core/tokenizer/bpe_tokenizer.h"

#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/tokenizer/byte_level.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/tokenizer/tokenizer_testutil.h"

namespace xlstmd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::xlstmd::testing::AddedTokenJson;
using ::xlstmd::testing::StatusIs;
using ::xlstmd::testing::SyntheticTokenizer;

std::unique_ptr<BpeTokenizer> MustLoad(const SyntheticTokenizer& spec) {
  auto tok = spec.Load();
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

std::vector<int32_t> Enc(const BpeTokenizer& tok, std::string_view text) {
  auto ids = tok.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

SyntheticTokenizer HelloTokenizer() {
  SyntheticTokenizer t;
  t.merges = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}};
  return t;  // ids: he 256, ll 257, hell 258, hello 259, " w" 260
}

TEST(BpeTokenizerTest, AppliesMergesByRank) {
  auto tok = MustLoad(HelloTokenizer());
  EXPECT_THAT(Enc(*tok, "hello"), ElementsAre(259));
  EXPECT_THAT(Enc(*tok, "hello world"), ElementsAre(259, 260, 'o', 'r', 'l', 'd'));
  EXPECT_THAT(Enc(*tok, "hel"), ElementsAre(256, 'l'));
  EXPECT_EQ(*tok->Decode({259, 260}), "hello w");
}

TEST(BpeTokenizerTest, PairMergesEncodeTheSame) {
  SyntheticTokenizer t = HelloTokenizer();
  t.pair_merges = true;
  auto tok = MustLoad(t);
  EXPECT_THAT(Enc(*tok, "hello"), ElementsAre(259));
}

TEST(BpeTokenizerTest, LowerRankWinsAndLeftmostBreaksTies) {
  SyntheticTokenizer ab_first;
  ab_first.merges = {{"a", "b"}, {"b", "c"}};
  EXPECT_THAT(Enc(*MustLoad(ab_first), "abc"), ElementsAre(256, 'c'));
  SyntheticTokenizer bc_first;
  bc_first.merges = {{"b", "c"}, {"a", "b"}};
  EXPECT_THAT(Enc(*MustLoad(bc_first), "abc"), ElementsAre('a', 256));
  SyntheticTokenizer aa;
  aa.merges = {{"a", "a"}};
  EXPECT_THAT(Enc(*MustLoad(aa), "aaa"), ElementsAre(256, 'a'));
}

// Straightforward BPE over token strings: the reference for the optimized merge loops.
std::vector<std::string> NaiveBpe(const std::string& word,
                                  const std::map<std::pair<std::string, std::string>, int>& rank) {
  std::vector<std::string> parts;
  for (char c : word) parts.emplace_back(1, c);
  while (parts.size() > 1) {
    int best = -1, best_rank = 1 << 30;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      auto it = rank.find({parts[i], parts[i + 1]});
      if (it != rank.end() && it->second < best_rank) {
        best_rank = it->second;
        best = static_cast<int>(i);
      }
    }
    if (best < 0) break;
    parts[best] += parts[best + 1];
    parts.erase(parts.begin() + best + 1);
  }
  return parts;
}

TEST(BpeTokenizerTest, MergeLoopsMatchNaiveReferenceOnShortAndLongWords) {
  SyntheticTokenizer t;
  t.merges = {{"a", "a"},   {"b", "a"},    {"aa", "aa"},     {"a", "b"},
              {"ba", "aa"}, {"c", "c"},    {"aaaa", "aaaa"}, {"ab", "c"},
              {"cc", "a"},  {"baaa", "b"}, {"aaaaaaaa", "b"}};
  t.pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  auto tok = MustLoad(t);
  std::map<std::pair<std::string, std::string>, int> rank;
  for (size_t i = 0; i < t.merges.size(); ++i) rank[t.merges[i]] = static_cast<int>(i);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 3000; ++trial) {
    const int len = 1 + static_cast<int>(rng() % (trial % 3 == 0 ? 300 : 60));
    std::string word;
    for (int i = 0; i < len; ++i) word.push_back("aaabc"[rng() % 5]);
    std::vector<int32_t> expected;
    for (const std::string& p : NaiveBpe(word, rank)) {
      expected.push_back(*tok->VocabTokenId(ByteLevelEncode(p)));
    }
    ASSERT_EQ(Enc(*tok, word), expected) << word;
  }
}

TEST(BpeTokenizerTest, IgnoreMergesEmitsWholeVocabularyWords) {
  SyntheticTokenizer t;
  t.merges = {{"h", "e"}};
  nlohmann::json j = t.Json();
  j["model"]["vocab"]["hello"] = 300;
  auto without = BpeTokenizer::FromJson(j.dump(), "t");
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_THAT(Enc(**without, "hello"), ElementsAre(256, 'l', 'l', 'o'));
  j["model"]["ignore_merges"] = true;
  auto with = BpeTokenizer::FromJson(j.dump(), "t");
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_THAT(Enc(**with, "hello"), ElementsAre(300));
}

TEST(BpeTokenizerTest, AddedTokensLongestFirstAndDecodedVerbatim) {
  SyntheticTokenizer t;
  t.added_tokens = {AddedTokenJson(300, "<a>", true), AddedTokenJson(301, "<a><b>", true)};
  auto tok = MustLoad(t);
  EXPECT_THAT(Enc(*tok, "x<a><b>y<a>"), ElementsAre('x', 301, 'y', 300));
  EXPECT_EQ(*tok->Decode({301, ' ', 300}), "<a><b> <a>");
  EncodeOptions no_special;
  no_special.allow_special = false;
  EXPECT_THAT(*tok->Encode("<a>", no_special), ElementsAre('<', 'a', '>'));
}

TEST(BpeTokenizerTest, AddedTokenStripAndSingleWord) {
  SyntheticTokenizer t;
  t.added_tokens = {AddedTokenJson(300, "<l>", true, /*lstrip=*/true),
                    AddedTokenJson(301, "<r>", true, false, /*rstrip=*/true),
                    AddedTokenJson(302, "tok", false, false, false, /*single_word=*/true)};
  auto tok = MustLoad(t);
  EXPECT_THAT(Enc(*tok, "a \t<l>b"), ElementsAre('a', 300, 'b'));
  EXPECT_THAT(Enc(*tok, "a<r> \n b"), ElementsAre('a', 301, 'b'));
  EXPECT_THAT(Enc(*tok, "tok x"), ElementsAre(302, ' ', 'x'));
  EXPECT_THAT(Enc(*tok, "atok"), ElementsAre('a', 't', 'o', 'k'));  // inside a word
  EXPECT_THAT(Enc(*tok, "tok1"), ElementsAre('t', 'o', 'k', '1'));
  EXPECT_THAT(Enc(*tok, "(tok)"), ElementsAre('(', 302, ')'));
}

TEST(BpeTokenizerTest, NormalizedAddedTokensMatchAfterNormalization) {
  SyntheticTokenizer t;
  t.normalizer = {{"type", "NFC"}};
  // "é" precomposed, matched in normalized text; "o" + U+0308 decomposed, matched raw.
  t.added_tokens = {AddedTokenJson(300, "\xC3\xA9", false, false, false, false, true),
                    AddedTokenJson(301, "o\xCC\x88", true, false, false, false, false)};
  auto tok = MustLoad(t);
  EXPECT_THAT(Enc(*tok, "e\xCC\x81"), ElementsAre(300));
  EXPECT_THAT(Enc(*tok, "o\xCC\x88"), ElementsAre(301));
}

TEST(BpeTokenizerTest, UnsupportedComponentsAreNamed) {
  struct Case {
    const char* what;
    std::function<void(nlohmann::json&)> edit;
  };
  const std::vector<Case> cases = {
      {"normalizer type \"Lowercase\"",
       [](auto& j) {
         j["normalizer"] = {{"type", "Lowercase"}};
       }},
      {"pre_tokenizer type \"Whitespace\"",
       [](auto& j) {
         j["pre_tokenizer"] = {{"type", "Whitespace"}};
       }},
      {"model type \"WordPiece\"", [](auto& j) { j["model"]["type"] = "WordPiece"; }},
      {"decoder type \"WordPiece\"",
       [](auto& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       }},
      {"post_processor type \"TemplateProcessing\"",
       [](auto& j) {
         j["post_processor"] = {{"type", "TemplateProcessing"}};
       }},
      {"dropout", [](auto& j) { j["model"]["dropout"] = 0.1; }},
      {"continuing_subword_prefix",
       [](auto& j) { j["model"]["continuing_subword_prefix"] = "##"; }},
      {"byte_fallback", [](auto& j) { j["model"]["byte_fallback"] = true; }},
      {"needs a ByteLevel pre-tokenizer", [](auto& j) { j["pre_tokenizer"] = nullptr; }},
      {"not in the vocabulary", [](auto& j) { j["model"]["merges"].push_back("zz q"); }},
      {"unknown behavior",
       [](auto& j) {
         j["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers",
              {{{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", "Sideways"}},
               {{"type", "ByteLevel"}}}}};
       }},
  };
  for (const Case& c : cases) {
    nlohmann::json j = HelloTokenizer().Json();
    c.edit(j);
    EXPECT_THAT(BpeTokenizer::FromJson(j.dump(), "bad.json"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         ::testing::AllOf(HasSubstr("bad.json"), HasSubstr(c.what))))
        << c.what;
  }
  EXPECT_THAT(BpeTokenizer::FromJson("{\"model\": ", "truncated.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated.json")));
  EXPECT_THAT(BpeTokenizer::FromFile("/nonexistent/tokenizer.json"),
              StatusIs(absl::StatusCode::kNotFound));
}

// Ids index the tokenizer's tables, so an id the file cannot densely define is refused before
// anything is allocated (it used to allocate gigabytes, or abort, for 2^31 - 1).
TEST(BpeTokenizerTest, IdsBeyondTheFileSizeAreRefused) {
  for (int64_t id : {int64_t{2147483647}, int64_t{1} << 23, int64_t{1} << 16}) {
    SyntheticTokenizer t = HelloTokenizer();
    // json::array: a one-element brace list is a copy of that element under clang, not an
    // array (nlohmann's documented brace-initialization pitfall).
    t.added_tokens = nlohmann::json::array({AddedTokenJson(static_cast<int>(id), "<big>", true)});
    EXPECT_THAT(BpeTokenizer::FromJson(t.Json().dump(), "big.json"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         ::testing::AllOf(HasSubstr("big.json"),
                                          HasSubstr("token id " + std::to_string(id)))));
    nlohmann::json j = HelloTokenizer().Json();
    j["model"]["vocab"]["zzz"] = id;
    EXPECT_THAT(BpeTokenizer::FromJson(j.dump(), "big.json"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too large")));
  }
  SyntheticTokenizer ok = HelloTokenizer();
  ok.added_tokens = nlohmann::json::array({AddedTokenJson((1 << 16) - 1, "<top>", true)});
  auto tok = MustLoad(ok);
  EXPECT_EQ(tok->vocab_size(), 1 << 16);
}

TEST(BpeTokenizerTest, Gpt2StyleFileWithSplitSequence) {
  // Llama-3 style: Split(regex) then ByteLevel without its own regex.
  SyntheticTokenizer t = HelloTokenizer();
  t.pre_tokenizer = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", "\\p{N}{1,3}| ?\\p{L}+|\\s+"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  t.post_processor = {{"type", "ByteLevel"}, {"trim_offsets", true}};
  auto tok = MustLoad(t);
  EXPECT_THAT(Enc(*tok, "hello 12345"), ElementsAre(259, ' ', '1', '2', '3', '4', '5'));
}

}  // namespace
}  // namespace xlstmd::core
