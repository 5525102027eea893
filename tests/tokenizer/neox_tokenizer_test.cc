// GPT-NeoX-20B (xLSTM-7B's tokenizer) loaded from ../shared: known encodings, special and
// added tokens, NFC, errors, round trips and pathological inputs.
#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "core/tokenizer/bpe_tokenizer.h"
#include "core/tokenizer/normalizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/tokenizer/corpus_gen.h"
#include "tests/tokenizer/tokenizer_testutil.h"

namespace xlstmd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::xlstmd::testing::Neox;
using ::xlstmd::testing::StatusIs;

std::vector<int32_t> Enc(std::string_view text, const EncodeOptions& options = {}) {
  absl::StatusOr<std::vector<int32_t>> ids = Neox().Encode(text, options);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(NeoxTokenizerTest, Vocabulary) {
  EXPECT_EQ(Neox().vocab_size(), 50277);
  EXPECT_EQ(*Neox().TokenBytes(0), "<|endoftext|>");
  EXPECT_EQ(*Neox().TokenBytes(1), "<|padding|>");
  EXPECT_EQ(*Neox().TokenBytes(2), "!");  // xLSTM-7B's config eos id: not an end marker
  EXPECT_EQ(*Neox().TokenBytes(50276), "  ");
  EXPECT_EQ(*Neox().TokenBytes(50254), std::string(24, ' '));
  EXPECT_EQ(Neox().AddedTokenId("<|endoftext|>"), 0);
  ASSERT_EQ(Neox().special_tokens().size(), 2u);
  EXPECT_TRUE(Neox().IsSpecial(0));
  EXPECT_TRUE(Neox().IsSpecial(1));
  EXPECT_FALSE(Neox().IsSpecial(50276));               // space runs are added but not special
  EXPECT_EQ(Neox().VocabTokenId("\xC4\xA0the"), 253);  // "Ġthe"
}

TEST(NeoxTokenizerTest, KnownEncodings) {
  // Ids cross-checked with the npm package @huggingface/tokenizers.
  EXPECT_THAT(Enc("Hello world! It's"), ElementsAre(12092, 1533, 2, 733, 434));
  EXPECT_THAT(Enc("   leading and trailing   "), ElementsAre(50275, 16378, 285, 28417, 50275));
  EXPECT_THAT(Enc(""), ElementsAre());
  // Runs of 2+ spaces are added tokens, matched longest first: 30 = 24 + 6.
  EXPECT_THAT(Enc(std::string(30, ' ')), ElementsAre(50254, 50272));
}

TEST(NeoxTokenizerTest, SpecialTokensInText) {
  EXPECT_THAT(Enc("<|endoftext|>hi<|padding|>"), ElementsAre(0, 5801, 1));
  // Not special when disabled, or inside a literal range.
  EncodeOptions no_special;
  no_special.allow_special = false;
  const std::vector<int32_t> plain = Enc("<|endoftext|>", no_special);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_THAT(plain, ::testing::Not(::testing::Contains(0)));
  EncodeOptions literal;
  literal.literal_ranges = {{2, 15}};  // the first <|endoftext|> only
  const std::vector<int32_t> ids = Enc("a <|endoftext|> <|endoftext|>", literal);
  EXPECT_EQ(ids.back(), 0);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 0), 1);
}

TEST(NeoxTokenizerTest, NormalizesToNfc) {
  // "e" + COMBINING ACUTE encodes exactly like the precomposed "é".
  EXPECT_EQ(Enc("caf\x65\xCC\x81"), Enc("caf\xC3\xA9"));
  EXPECT_EQ(*Neox().Decode(Enc("caf\x65\xCC\x81")), "caf\xC3\xA9");
}

TEST(NeoxTokenizerTest, InvalidUtf8IsInvalidArgument) {
  EXPECT_THAT(Neox().Encode("ok \xC3"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid UTF-8")));
  EXPECT_THAT(Neox().Encode("\xED\xA0\x80"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(NeoxTokenizerTest, DecodeRejectsIdsOutsideVocabulary) {
  EXPECT_THAT(Neox().Decode({12092, 50277}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("50277")));
  EXPECT_THAT(Neox().Decode({-1}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Neox().TokenBytes(50303), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(NeoxTokenizerTest, DecodeReturnsRawBytesOfSplitCharacters) {
  const std::vector<int32_t> ids = Enc("\xF0\x9F\x98\x80");  // one emoji, several tokens
  ASSERT_GT(ids.size(), 1u);
  EXPECT_EQ(*Neox().Decode({ids[0]}), "\xF0\x9F");
  EXPECT_EQ(*Neox().Decode(ids), "\xF0\x9F\x98\x80");
}

TEST(NeoxTokenizerTest, RoundTripsGeneratedCorpus) {
  // decode(encode(s)) == NFC(s): NFC is the only lossy step, so NFC input comes back exact.
  absl::StatusOr<Normalizer> nfc = Normalizer::Create({NormalizationForm::kNfc});
  ASSERT_TRUE(nfc.ok());
  testing::CorpusGenerator gen(20240601);
  int exact = 0;
  constexpr int kStrings = 12000;
  for (int i = 0; i < kStrings; ++i) {
    const std::string s = gen.Next();
    absl::StatusOr<std::vector<int32_t>> ids = Neox().Encode(s);
    ASSERT_TRUE(ids.ok()) << ids.status();
    absl::StatusOr<std::string> back = Neox().Decode(*ids);
    ASSERT_TRUE(back.ok()) << back.status();
    std::string scratch;
    const std::string_view expected = *nfc->Normalize(s, &scratch);
    ASSERT_EQ(*back, expected) << "string " << i;
    exact += *back == s;
  }
  // All but the strings with decomposed marks, conjoining jamo or random code points that
  // NFC changes (about 22% of this corpus).
  EXPECT_GT(exact, kStrings * 3 / 4);
  ::testing::Test::RecordProperty("exact_round_trips", exact);
}

TEST(NeoxTokenizerTest, ConcurrentEncodersAgreeWithSequential) {
  // One shared tokenizer, several threads (each with its own word cache).
  testing::CorpusGenerator gen(5);
  std::vector<std::string> texts;
  for (int i = 0; i < 2000; ++i) texts.push_back(gen.Next());
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& t : texts) expected.push_back(*Neox().Encode(t));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (size_t i = w; i < texts.size() * 2; i += 3) {
        const size_t k = i % texts.size();
        absl::StatusOr<std::vector<int32_t>> ids = Neox().Encode(texts[k]);
        mismatches[w] += !ids.ok() || *ids != expected[k];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_THAT(mismatches, ::testing::Each(0));
}

// `unit` repeated to 1 MiB encodes and round-trips (NFC-normalized). Whether its encode time
// stays linear in the length is measured by tests/tokenizer/bench.sh, not asserted here:
// timing belongs in benchmarks (a quadratic regression shows there as a ratio far above 4).
void ExpectRoundTrip(const std::string& unit) {
  absl::StatusOr<Normalizer> nfc = Normalizer::Create({NormalizationForm::kNfc});
  ASSERT_TRUE(nfc.ok());
  std::string text;
  while (text.size() < (1 << 20)) text += unit;
  absl::StatusOr<std::vector<int32_t>> ids = Neox().Encode(text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  std::string scratch;
  const std::string expected(*nfc->Normalize(text, &scratch));
  // EXPECT_TRUE, not EXPECT_EQ: a failure must not print a megabyte.
  EXPECT_TRUE(*Neox().Decode(*ids) == expected) << "round trip, unit " << unit;
}

TEST(NeoxTokenizerTest, PathologicalInputsRoundTrip) {
  for (const char* unit : {"a", " ", "\n", "\t", "7", "!", "\xC3\xA9", "\xE6\x97\xA5",
                           "\xF0\x9F\x98\x80", "ab", " a", "<|", "e\xCC\x81"}) {
    ExpectRoundTrip(unit);
  }
}

}  // namespace
}  // namespace xlstmd::core
