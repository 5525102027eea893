#include "core/base/utf8.h"

#include <string>

#include "core/tokenizer/byte_level.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using ::testing::HasSubstr;
using ::xlstmd::testing::IsOk;
using ::xlstmd::testing::StatusIs;

TEST(Utf8Test, ValidatesWellFormedText) {
  EXPECT_THAT(ValidateUtf8(""), IsOk());
  EXPECT_THAT(ValidateUtf8("plain ascii"), IsOk());
  EXPECT_THAT(ValidateUtf8("h\xC3\xA9llo \xE6\x97\xA5 \xF0\x9F\x98\x80"), IsOk());
  EXPECT_THAT(ValidateUtf8("\xF4\x8F\xBF\xBF"), IsOk());  // U+10FFFF
}

TEST(Utf8Test, RejectsIllFormedText) {
  for (const char* bad : {"\x80", "a\xC3", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80",
                          "\xF4\x90\x80\x80", "\xF8\x88\x80\x80\x80", "\xFF", "ok\xC3(x"}) {
    EXPECT_THAT(ValidateUtf8(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid UTF-8")))
        << ::testing::PrintToString(std::string(bad));
  }
  EXPECT_THAT(ValidateUtf8("abc\xFF"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0xff at offset 3")));
}

TEST(Utf8Test, LossyReplacesMaximalSubparts) {
  // One U+FFFD per maximal ill-formed subpart (Unicode 3.9 / WHATWG), like Rust's lossy.
  EXPECT_EQ(Utf8Lossy("a\xF0\x9F\x98"), "a\xEF\xBF\xBD");  // truncated emoji
  EXPECT_EQ(Utf8Lossy("\xF0\x9F\x98"
                      "b"),
            "\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(Utf8Lossy("\xE0\x80\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(Utf8Lossy("\xFF\xFE"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(Utf8Lossy("fine \xC3\xA9"), "fine \xC3\xA9");
}

TEST(Utf8Test, NextStepClassifiesPrefixes) {
  EXPECT_EQ(NextUtf8Step("\xF0\x9F").kind, Utf8Step::Kind::kIncomplete);
  EXPECT_EQ(NextUtf8Step("\xF0\x9F\x98\x80").kind, Utf8Step::Kind::kChar);
  EXPECT_EQ(NextUtf8Step("\xF0\x9F\x98\x80").length, 4u);
  const Utf8Step bad = NextUtf8Step(
      "\xE6\x97"
      "a");
  EXPECT_EQ(bad.kind, Utf8Step::Kind::kInvalid);
  EXPECT_EQ(bad.length, 2u);
}

TEST(ByteLevelTest, AlphabetIsABijection) {
  for (int b = 0; b < 256; ++b) EXPECT_EQ(UnicodeToByte(kByteToUnicode[b]), b);
  EXPECT_EQ(kByteToUnicode[' '], U'\u0120');   // 'Ġ'
  EXPECT_EQ(kByteToUnicode['\n'], U'\u010A');  // 'Ċ'
  EXPECT_EQ(kByteToUnicode['A'], U'A');
  EXPECT_EQ(UnicodeToByte(U'\u0144'), -1);  // just past the 68 remapped bytes
  std::string bytes;
  EXPECT_TRUE(ByteLevelDecode(ByteLevelEncode(" h\xC3\xA9\n"), &bytes));
  EXPECT_EQ(bytes, " h\xC3\xA9\n");
}

}  // namespace
}  // namespace xlstmd::core
