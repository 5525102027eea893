// What `xlstm chat` prints on a terminal: control characters from a model never reach it raw.
#include "tools/terminal_text.h"

#include <string>

#include "gtest/gtest.h"

namespace xlstmd::tools {
namespace {

TEST(TerminalTextTest, PlainTextNewlinesAndTabsPassThrough) {
  EXPECT_EQ(ForTerminal("Hello\n\tworld"), "Hello\n\tworld");
  EXPECT_EQ(ForTerminal("caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80 \xEF\xBF\xBD"),
            "caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80 \xEF\xBF\xBD");
  EXPECT_EQ(ForTerminal(""), "");
}

TEST(TerminalTextTest, ControlCharactersAreEscaped) {
  EXPECT_EQ(ForTerminal("\x1b[2J"), "\\x1b[2J");  // clear screen
  EXPECT_EQ(ForTerminal(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(ForTerminal("\x0e\x7f\r"), "\\x0e\\x7f\\x0d");
  // C1 controls (U+0080..U+009F), e.g. CSI U+009B, are escaped as code points.
  EXPECT_EQ(ForTerminal("x\xC2\x9B"
                        "31m"),
            "x\\u009b31m");
  // U+00A0 and above are text.
  EXPECT_EQ(ForTerminal("\xC2\xA0\xC2\xBF"), "\xC2\xA0\xC2\xBF");
}

}  // namespace
}  // namespace xlstmd::tools
