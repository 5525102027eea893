#include "core/tokenizer/byte_tokenizer.h"

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using ::testing::ElementsAre;
using ::xlstmd::testing::StatusIs;

TEST(ByteTokenizerTest, BytesAndSpecials) {
  auto tok = ByteTokenizer::Create({"<|endoftext|>", "<|pad|>"});
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 258);
  EXPECT_THAT(*(*tok)->Encode("a\xC3\xA9<|pad|>"), ElementsAre('a', 0xC3, 0xA9, 257));
  EXPECT_EQ(*(*tok)->Decode({'h', 'i', 256}), "hi<|endoftext|>");
  EXPECT_EQ((*tok)->AddedTokenId("<|pad|>"), 257);
  EXPECT_TRUE((*tok)->IsSpecial(256));
  EncodeOptions plain;
  plain.allow_special = false;
  EXPECT_EQ((*(*tok)->Encode("<|pad|>", plain)).size(), 7u);
}

TEST(ByteTokenizerTest, Errors) {
  auto tok = ByteTokenizer::Create({"<|endoftext|>"});
  ASSERT_TRUE(tok.ok());
  EXPECT_THAT((*tok)->Encode("\xFF"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT((*tok)->Decode({257}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ByteTokenizer::Create({"x", "x"}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ByteTokenizer::Create({""}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ByteTokenizerTest, ModelWithoutTokenizerJsonGetsByteTokenizer) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "no_tokenizer_model";
  std::filesystem::create_directories(dir);
  auto tok = LoadModelTokenizer(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 257);
  EXPECT_EQ((*tok)->AddedTokenId("<|endoftext|>"), 256);
}

}  // namespace
}  // namespace xlstmd::core
