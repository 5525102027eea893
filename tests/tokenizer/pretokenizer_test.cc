#include "core/tokenizer/pretokenizer.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::xlstmd::testing::StatusIs;

std::vector<std::string> Pieces(const std::vector<PreTokenizerStep>& steps, std::string_view text) {
  absl::StatusOr<PreTokenizer> pre = PreTokenizer::Create(steps);
  EXPECT_TRUE(pre.ok()) << pre.status();
  PreTokenized out;
  EXPECT_TRUE(pre->Run(text, &out).ok());
  std::vector<std::string> pieces;
  for (size_t i = 0; i < out.pieces.size(); ++i) pieces.emplace_back(out.piece(i));
  return pieces;
}

PreTokenizerStep ByteLevel(bool add_prefix_space = false, bool use_regex = true) {
  PreTokenizerStep s;
  s.kind = PreTokenizerStep::Kind::kByteLevel;
  s.add_prefix_space = add_prefix_space;
  s.use_regex = use_regex;
  return s;
}

PreTokenizerStep Split(std::string pattern, SplitBehavior behavior, bool regex = false,
                       bool invert = false) {
  PreTokenizerStep s;
  s.kind = PreTokenizerStep::Kind::kSplit;
  s.pattern = std::move(pattern);
  s.pattern_is_regex = regex;
  s.behavior = behavior;
  s.invert = invert;
  return s;
}

TEST(PreTokenizerTest, Gpt2PatternSplits) {
  EXPECT_THAT(Pieces({ByteLevel()}, "Hello world's 123 ok!!"),
              ElementsAre("Hello", " world", "'s", " 123", " ok", "!!"));
  // \s+(?!\S): a run of spaces leaves its last space to prefix the next word.
  EXPECT_THAT(Pieces({ByteLevel()}, "a   b"), ElementsAre("a", "  ", " b"));
  EXPECT_THAT(Pieces({ByteLevel()}, "a \n\n b  "), ElementsAre("a", " \n\n", " b", "  "));
  EXPECT_THAT(Pieces({ByteLevel()}, "x\t\ty"), ElementsAre("x", "\t", "\t", "y"));
  EXPECT_THAT(Pieces({ByteLevel()}, "I'M"), ElementsAre("I", "'", "M"));  // contractions: lowercase
}

TEST(PreTokenizerTest, WhiteSpaceIsUnicodeWhiteSpace) {
  // U+0085 (NEL) is White_Space (as in Oniguruma and Rust); U+180E and U+FEFF are not, even
  // though PCRE2's own \s includes U+180E and JavaScript's includes U+FEFF.
  EXPECT_TRUE(IsUnicodeWhiteSpace(0x85));
  EXPECT_FALSE(IsUnicodeWhiteSpace(0x180E));
  EXPECT_FALSE(IsUnicodeWhiteSpace(0xFEFF));
  EXPECT_FALSE(IsUnicodeWhiteSpace(0x200B));
  EXPECT_THAT(Pieces({ByteLevel()},
                     "a\xC2\x85\xC2\x85"
                     "b"),
              ElementsAre("a", "\xC2\x85", "\xC2\x85", "b"));
  EXPECT_THAT(Pieces({ByteLevel()}, "a \xC2\x85"), ElementsAre("a", " \xC2\x85"));
  EXPECT_THAT(Pieces({ByteLevel()}, "a \xE1\xA0\x8E"), ElementsAre("a", " \xE1\xA0\x8E"));
  EXPECT_THAT(Pieces({ByteLevel()}, "a \xEF\xBB\xBF"), ElementsAre("a", " \xEF\xBB\xBF"));
}

TEST(PreTokenizerTest, UnicodeClasses) {
  EXPECT_THAT(Pieces({ByteLevel()}, "h\xC3\xA9llo \xE6\x97\xA5\xE6\x9C\xAC \xD9\xA3\xD9\xA4"),
              ElementsAre("h\xC3\xA9llo", " \xE6\x97\xA5\xE6\x9C\xAC", " \xD9\xA3\xD9\xA4"));
}

TEST(PreTokenizerTest, AddPrefixSpace) {
  EXPECT_THAT(Pieces({ByteLevel(true)}, "Hello"), ElementsAre(" Hello"));
  EXPECT_THAT(Pieces({ByteLevel(true)}, " Hello"), ElementsAre(" Hello"));
  EXPECT_THAT(Pieces({ByteLevel(false, false)}, "a b  c"), ElementsAre("a b  c"));
}

TEST(PreTokenizerTest, SplitBehaviorsMatchHuggingFaceDocs) {
  const std::string text = "the-final--countdown";
  EXPECT_THAT(Pieces({Split("-", SplitBehavior::kRemoved)}, text),
              ElementsAre("the", "final", "countdown"));
  EXPECT_THAT(Pieces({Split("-", SplitBehavior::kIsolated)}, text),
              ElementsAre("the", "-", "final", "-", "-", "countdown"));
  EXPECT_THAT(Pieces({Split("-", SplitBehavior::kMergedWithPrevious)}, text),
              ElementsAre("the-", "final-", "-", "countdown"));
  EXPECT_THAT(Pieces({Split("-", SplitBehavior::kMergedWithNext)}, text),
              ElementsAre("the", "-final", "-", "-countdown"));
  EXPECT_THAT(Pieces({Split("-", SplitBehavior::kContiguous)}, text),
              ElementsAre("the", "-", "final", "--", "countdown"));
  // invert: the matches are the pieces to keep.
  EXPECT_THAT(Pieces({Split("\\w+", SplitBehavior::kRemoved, true, true)}, "ab, cd!"),
              ElementsAre("ab", "cd"));
}

TEST(PreTokenizerTest, SequenceFeedsEachStepThePreviousPieces) {
  EXPECT_THAT(
      Pieces({Split("\\p{N}{1,3}", SplitBehavior::kIsolated, true), ByteLevel(false, false)},
             "abc12345"),
      ElementsAre("abc", "123", "45"));
}

TEST(PreTokenizerTest, ByteLevelMustBeLast) {
  EXPECT_THAT(PreTokenizer::Create({ByteLevel(), Split("-", SplitBehavior::kIsolated)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ByteLevel must be")));
}

TEST(OnigurumaToPcre2Test, RewritesDivergentEscapes) {
  EXPECT_THAT(*OnigurumaToPcre2("\\s"), HasSubstr("\\x{85}"));
  EXPECT_THAT(*OnigurumaToPcre2("[^\\s\\p{L}]"), ::testing::StartsWith("[^\\t-\\r"));
  EXPECT_EQ(*OnigurumaToPcre2("\\h+"), "[0-9A-Fa-f]+");
  EXPECT_EQ(*OnigurumaToPcre2("(?i:'s|'t)\\p{N}{1,3}"), "(?i:'s|'t)\\p{N}{1,3}");
  EXPECT_EQ(*OnigurumaToPcre2("[]a]"), "[]a]");
}

TEST(OnigurumaToPcre2Test, RejectsWhatItCannotTranslate) {
  for (const char* p : {"[a[b]]", "[a-z&&[^aeiou]]", "[\\S]", "[\\W]", "abc\\", "[abc"}) {
    EXPECT_THAT(OnigurumaToPcre2(p), StatusIs(absl::StatusCode::kInvalidArgument)) << p;
  }
}

TEST(RegexTest, CompileErrorsAreClear) {
  EXPECT_THAT(Regex::Compile("(unclosed"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not compile")));
}

}  // namespace
}  // namespace xlstmd::core
