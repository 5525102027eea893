#include "core/sampling/stop_checker.h"

#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace xlstmd::core {
namespace {

constexpr int32_t kText = 100;  // an ordinary (non-stop) token id
constexpr int32_t kEos = 0;

struct Outcome {
  std::vector<std::string> emitted;  // text of each Feed, in order
  std::string text;                  // everything emitted, Flush included
  FinishReason finish = FinishReason::kNone;
  int finished_at = -1;  // index of the piece that finished the turn
};

// Feeds `pieces` as ordinary tokens until the checker finishes, then flushes.
Outcome FeedAll(StopChecker& checker, const std::vector<std::string>& pieces) {
  Outcome out;
  for (size_t i = 0; i < pieces.size(); ++i) {
    StopChecker::Step step = checker.Feed(kText, pieces[i]);
    out.emitted.push_back(step.text);
    out.text += step.text;
    if (step.finished()) {
      out.finish = step.finish;
      out.finished_at = static_cast<int>(i);
      break;
    }
  }
  out.text += checker.Flush();
  return out;
}

TEST(StopCheckerTest, StopTokenFinishesWithoutItsText) {
  StopChecker checker({kEos}, {}, 100);
  EXPECT_EQ(checker.Feed(kText, "Hello").text, "Hello");
  StopChecker::Step step = checker.Feed(kEos, "<|endoftext|>");
  EXPECT_EQ(step.finish, FinishReason::kStopToken);
  EXPECT_EQ(step.text, "");
  EXPECT_EQ(checker.tokens_seen(), 2);
  // Finished: further feeds emit nothing and repeat the reason.
  StopChecker::Step after = checker.Feed(kText, "more");
  EXPECT_EQ(after.finish, FinishReason::kStopToken);
  EXPECT_EQ(after.text, "");
  EXPECT_EQ(checker.Flush(), "");
}

TEST(StopCheckerTest, StopTokenReleasesHeldPrefix) {
  StopChecker checker({kEos}, {"\nUser:"}, 100);
  EXPECT_EQ(checker.Feed(kText, "Bye\nUs").text, "Bye");
  StopChecker::Step step = checker.Feed(kEos, "");
  EXPECT_EQ(step.finish, FinishReason::kStopToken);
  EXPECT_EQ(step.text, "\nUs");
}

TEST(StopCheckerTest, StopStringInsideOnePiece) {
  StopChecker checker({}, {"STOP"}, 100);
  Outcome out = FeedAll(checker, {"Hi ", "abcSTOPdef", "never"});
  EXPECT_EQ(out.finish, FinishReason::kStopString);
  EXPECT_EQ(out.finished_at, 1);
  EXPECT_EQ(out.text, "Hi abc");
}

TEST(StopCheckerTest, StopStringAcrossThreePieces) {
  StopChecker checker({}, {"\nUser:"}, 100);
  Outcome out = FeedAll(checker, {"Sure.\nU", "se", "r: next", "x"});
  EXPECT_EQ(out.finish, FinishReason::kStopString);
  EXPECT_EQ(out.finished_at, 2);
  EXPECT_EQ(out.emitted, (std::vector<std::string>{"Sure.", "", ""}));
  EXPECT_EQ(out.text, "Sure.");
}

TEST(StopCheckerTest, DivergingPrefixIsReleased) {
  StopChecker checker({}, {"\nUser:"}, 100);
  Outcome out = FeedAll(checker, {"a\nUs", "ually", " fine"});
  EXPECT_EQ(out.finish, FinishReason::kNone);
  EXPECT_EQ(out.emitted, (std::vector<std::string>{"a", "\nUsually", " fine"}));
  EXPECT_EQ(out.text, "a\nUsually fine");
}

TEST(StopCheckerTest, OverlappingPrefixes) {
  // "ababa" diverges from the first alignment but still prefixes the second one.
  StopChecker checker({}, {"abab"}, 100);
  Outcome out = FeedAll(checker, {"ab", "a", "b"});
  EXPECT_EQ(out.finish, FinishReason::kStopString);
  EXPECT_EQ(out.text, "");
  StopChecker checker2({}, {"abab"}, 100);
  Outcome out2 = FeedAll(checker2, {"x", "aba", "cabab"});
  EXPECT_EQ(out2.finish, FinishReason::kStopString);
  EXPECT_EQ(out2.emitted, (std::vector<std::string>{"x", "", "abac"}));
  // Text "abababx": the match at 0 wins; nothing after its start is emitted.
  StopChecker checker3({}, {"abab"}, 100);
  Outcome out3 = FeedAll(checker3, {"q", "aba", "babx"});
  EXPECT_EQ(out3.finish, FinishReason::kStopString);
  EXPECT_EQ(out3.text, "q");
}

TEST(StopCheckerTest, OverlappingPrefixesDivergeAtTheEnd) {
  StopChecker checker({}, {"abab"}, 100);
  Outcome out = FeedAll(checker, {"ab", "ab", "a"});
  EXPECT_EQ(out.finish, FinishReason::kStopString);
  StopChecker checker2({}, {"abab"}, 100);
  Outcome out2 = FeedAll(checker2, {"a", "b", "a", "c"});
  EXPECT_EQ(out2.finish, FinishReason::kNone);
  EXPECT_EQ(out2.emitted, (std::vector<std::string>{"", "", "", "abac"}));
}

TEST(StopCheckerTest, MultipleStopStringsEarliestStartWins) {
  StopChecker checker({}, {"world", "lo w"}, 100);
  Outcome out = FeedAll(checker, {"hel", "lo world"});
  EXPECT_EQ(out.finish, FinishReason::kStopString);
  EXPECT_EQ(out.text, "hel");
  // The shorter string completes first while the longer is still a prefix: the turn ends
  // at the one that completed.
  StopChecker checker2({}, {"abcd", "bc"}, 100);
  Outcome out2 = FeedAll(checker2, {"x", "ab", "c", "d"});
  EXPECT_EQ(out2.finish, FinishReason::kStopString);
  EXPECT_EQ(out2.finished_at, 2);
  EXPECT_EQ(out2.text, "xa");
}

TEST(StopCheckerTest, MaxTokensFinishesAfterTheTokensText) {
  StopChecker checker({kEos}, {"\nUser:"}, 3);
  EXPECT_EQ(checker.Feed(kText, "a").text, "a");
  EXPECT_EQ(checker.Feed(kText, "b").text, "b");
  StopChecker::Step step = checker.Feed(kText, "c\nUs");
  EXPECT_EQ(step.finish, FinishReason::kMaxTokens);
  EXPECT_EQ(step.text, "c\nUs");  // the turn is over, so the held prefix is plain text
}

TEST(StopCheckerTest, StopStringOnTheLastTokenBeatsMaxTokens) {
  StopChecker checker({}, {"END"}, 2);
  checker.Feed(kText, "x");
  StopChecker::Step step = checker.Feed(kText, "yEND");
  EXPECT_EQ(step.finish, FinishReason::kStopString);
  EXPECT_EQ(step.text, "y");
}

TEST(StopCheckerTest, StopTokenBeatsMaxTokens) {
  StopChecker checker({kEos}, {}, 1);
  EXPECT_EQ(checker.Feed(kEos, "").finish, FinishReason::kStopToken);
}

TEST(StopCheckerTest, MultibytePiecesAreCutOnlyAtCharacterBoundaries) {
  // "日本" (E6 97 A5, E6 9C AC); the stop string starts with the same lead byte as 日.
  StopChecker checker({}, {"本語"}, 100);
  Outcome out = FeedAll(checker, {"日", "本", "は"});
  EXPECT_EQ(out.finish, FinishReason::kNone);
  EXPECT_EQ(out.emitted, (std::vector<std::string>{"日", "", "本は"}));
  StopChecker checker2({}, {"本語"}, 100);
  Outcome out2 = FeedAll(checker2, {"日本", "語です"});
  EXPECT_EQ(out2.finish, FinishReason::kStopString);
  EXPECT_EQ(out2.text, "日");
}

TEST(StopCheckerTest, StopStringMatchesOnlyAtCharacterStarts) {
  // "\x97" alone is not a valid stop string, but if one got here it must not cut inside 日.
  StopChecker checker({}, {"\x97\xA5"}, 100);
  Outcome out = FeedAll(checker, {"日", "x"});
  EXPECT_EQ(out.finish, FinishReason::kNone);
  EXPECT_EQ(out.text, "日x");
}

TEST(StopCheckerTest, StopStringAtTheVeryStart) {
  StopChecker checker({}, {"User:"}, 100);
  Outcome out = FeedAll(checker, {"User:", " hi"});
  EXPECT_EQ(out.finish, FinishReason::kStopString);
  EXPECT_EQ(out.finished_at, 0);
  EXPECT_EQ(out.text, "");
  StopChecker checker2({}, {"User:"}, 100);
  Outcome out2 = FeedAll(checker2, {"Us", "er:"});
  EXPECT_EQ(out2.emitted, (std::vector<std::string>{"", ""}));
  EXPECT_EQ(out2.finish, FinishReason::kStopString);
}

TEST(StopCheckerTest, FlushReleasesHeldText) {
  StopChecker checker({}, {"\nUser:"}, 100);
  EXPECT_EQ(checker.Feed(kText, "end\n").text, "end");
  EXPECT_EQ(checker.held_bytes(), 1u);
  EXPECT_EQ(checker.Flush(), "\n");
  EXPECT_EQ(checker.held_bytes(), 0u);
  EXPECT_EQ(checker.Flush(), "");
}

TEST(StopCheckerTest, EmptyStopStringsAndDuplicateIdsAreHarmless) {
  StopChecker checker({5, 5, 2}, {"", "zz"}, 100);
  EXPECT_EQ(checker.Feed(kText, "abc").text, "abc");
  EXPECT_EQ(checker.Feed(2, "").finish, FinishReason::kStopToken);
}

TEST(StopCheckerTest, ConcatenationIsTheTextBeforeTheFirstStop) {
  // Property check over every split of one text into 3 pieces.
  const std::string text = "one\nUse two \nUser: three";
  const std::string expected = "one\nUse two ";
  for (size_t i = 0; i <= text.size(); ++i) {
    for (size_t j = i; j <= text.size(); ++j) {
      StopChecker checker({}, {"\nUser:", "zzz"}, 100);
      Outcome out = FeedAll(checker, {text.substr(0, i), text.substr(i, j - i), text.substr(j)});
      ASSERT_EQ(out.finish, FinishReason::kStopString) << i << "," << j;
      ASSERT_EQ(out.text, expected) << i << "," << j;
    }
  }
}

// Brute-force reference for one prefix of the stream: the start of the first full match
// (npos if none) and where held-back text begins (the first suffix that is a proper prefix
// of a stop string).
struct ReferenceCut {
  size_t match = std::string::npos;
  size_t hold_from = 0;
};
ReferenceCut Reference(std::string_view text, const std::vector<std::string>& stops) {
  ReferenceCut cut;
  cut.hold_from = text.size();
  for (size_t i = text.size() + 1; i-- > 0;) {
    for (const std::string& s : stops) {
      if (text.substr(i, s.size()) == s) cut.match = i;
      const std::string_view tail = text.substr(i);
      if (tail.size() < s.size() && s.substr(0, tail.size()) == tail) cut.hold_from = i;
    }
  }
  return cut;
}

TEST(StopCheckerTest, RandomStreamsMatchBruteForce) {
  // Small alphabet and short stops make overlaps and near-misses frequent.
  std::mt19937 gen(12345);
  auto random_string = [&](size_t min_len, size_t max_len) {
    std::string out(std::uniform_int_distribution<size_t>(min_len, max_len)(gen), 'a');
    for (char& c : out) c = "abc"[std::uniform_int_distribution<int>(0, 2)(gen)];
    return out;
  };
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::string> stops;
    for (int i = std::uniform_int_distribution<int>(1, 3)(gen); i > 0; --i) {
      stops.push_back(random_string(1, 4));
    }
    StopChecker checker({}, stops, 1000);
    std::string fed, emitted;
    bool finished = false;
    for (int piece_index = 0; piece_index < 8 && !finished; ++piece_index) {
      const std::string piece = random_string(0, 3);
      fed += piece;
      StopChecker::Step step = checker.Feed(kText, piece);
      emitted += step.text;
      const ReferenceCut ref = Reference(fed, stops);
      if (ref.match != std::string::npos) {
        ASSERT_EQ(step.finish, FinishReason::kStopString) << "trial " << trial;
        ASSERT_EQ(emitted, fed.substr(0, ref.match)) << "trial " << trial;
        finished = true;
      } else {
        ASSERT_EQ(step.finish, FinishReason::kNone) << "trial " << trial;
        ASSERT_EQ(emitted, fed.substr(0, ref.hold_from)) << "trial " << trial;
      }
    }
    if (!finished) {
      ASSERT_EQ(emitted + checker.Flush(), fed) << "trial " << trial;
    }
  }
}

}  // namespace
}  // namespace xlstmd::core
