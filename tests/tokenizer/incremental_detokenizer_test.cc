#include "core/tokenizer/incremental_detokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "core/tokenizer/byte_tokenizer.h"
#include "core/base/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/tokenizer/tokenizer_testutil.h"

namespace xlstmd::core {
namespace {

using ::xlstmd::testing::Neox;
using ::xlstmd::testing::StatusIs;

// Streams `ids` and checks every emission is whole UTF-8 and the total equals the lossy
// decode of the whole sequence.
void ExpectStreamsLikeFullDecode(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  IncrementalDetokenizer detok(tok);
  std::string streamed;
  for (int32_t id : ids) {
    absl::StatusOr<std::string> piece = detok.Push(id);
    ASSERT_TRUE(piece.ok()) << piece.status();
    ASSERT_TRUE(ValidateUtf8(*piece).ok());
    streamed += *piece;
  }
  streamed += detok.Finish();
  EXPECT_EQ(streamed, Utf8Lossy(*tok.Decode(ids)));
  EXPECT_EQ(detok.pending_bytes(), 0u);
}

TEST(IncrementalDetokenizerTest, HoldsBackSplitCharacters) {
  const std::vector<int32_t> ids = *Neox().Encode("ok \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD!");
  IncrementalDetokenizer detok(Neox());
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(*detok.Push(id));
  std::string joined;
  for (const std::string& p : pieces) joined += p;
  EXPECT_EQ(joined, "ok \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD!");
  EXPECT_TRUE(std::find(pieces.begin(), pieces.end(), "") != pieces.end())
      << "some token should have ended mid-character";
  EXPECT_EQ(detok.Finish(), "");
}

TEST(IncrementalDetokenizerTest, IncompleteTailBecomesReplacementOnlyAtFinish) {
  auto bytes = ByteTokenizer::Create({});
  ASSERT_TRUE(bytes.ok());
  IncrementalDetokenizer detok(**bytes);
  EXPECT_EQ(*detok.Push('a'), "a");
  EXPECT_EQ(*detok.Push(0xF0), "");
  EXPECT_EQ(*detok.Push(0x9F), "");
  EXPECT_EQ(detok.pending_bytes(), 2u);
  EXPECT_EQ(detok.Finish(), kReplacementChar);
  // Bytes that can never complete are replaced at once.
  EXPECT_EQ(*detok.Push(0xE6), "");
  EXPECT_EQ(*detok.Push('x'), std::string(kReplacementChar) + "x");
  EXPECT_EQ(*detok.Push(0xFF), std::string(kReplacementChar));
}

TEST(IncrementalDetokenizerTest, UnknownIdIsAnErrorAndLeavesStreamIntact) {
  IncrementalDetokenizer detok(Neox());
  EXPECT_EQ(*detok.Push(12092), "Hello");
  EXPECT_THAT(detok.Push(60000), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(*detok.Push(1533), " world");
}

TEST(IncrementalDetokenizerTest, MatchesFullDecodeOnRandomSequences) {
  // Random ids hit tokens that are fragments of multi-byte characters in every order.
  std::mt19937 rng(11);
  auto bytes = ByteTokenizer::Create({"<|endoftext|>"});
  ASSERT_TRUE(bytes.ok());
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<int32_t> neox_ids, byte_ids;
    const int n = 1 + static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) {
      neox_ids.push_back(static_cast<int32_t>(rng() % Neox().vocab_size()));
      byte_ids.push_back(static_cast<int32_t>(rng() % 257));
      if (rng() % 3 == 0) byte_ids.push_back(0x80 + static_cast<int32_t>(rng() % 64));
    }
    ExpectStreamsLikeFullDecode(Neox(), neox_ids);
    ExpectStreamsLikeFullDecode(**bytes, byte_ids);
  }
  // Real text split into its tokens (emoji, CJK, combining marks).
  ExpectStreamsLikeFullDecode(
      Neox(), *Neox().Encode("\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x92\xBB \xE6\x97\xA5\xE6\x9C"
                             "\xAC e\xCC\x81 \xD8\xA7\xD9\x84"));
}

}  // namespace
}  // namespace xlstmd::core
