// `xlstm tokenize` / `xlstm detokenize`: outputs, JSONL mode, and the exit-code contract
// (0 ok or --help, 1 runtime error, 2 flag error, one stderr line).
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/tokenizer/tokenizer_testutil.h"
#include "tests/tools/tool_runner.h"

namespace xlstmd::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(TokenizeCliTest, HelpForBoth) {
  for (const char* cmd : {"tokenize", "detokenize"}) {
    const ToolResult r = RunTool({cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_THAT(r.out, HasSubstr(std::string("usage: xlstm ") + cmd));
  }
}

TEST(TokenizeCliTest, TextAndDetokenizeRoundTrip) {
  const ToolResult enc =
      RunTool({"tokenize", "--tokenizer", NeoxTokenizerPath(), "--text", "Hello world! It's"});
  EXPECT_EQ(enc.exit_code, 0) << enc.err;
  EXPECT_EQ(enc.out, "[12092,1533,2,733,434]\n");
  const ToolResult dec =
      RunTool({"detokenize", "--tokenizer", NeoxTokenizerPath(), "--tokens",
               "12092,1533,2,733,434"});
  EXPECT_EQ(dec.exit_code, 0) << dec.err;
  EXPECT_EQ(dec.out, "Hello world! It's\n");
}

TEST(TokenizeCliTest, JsonLinesInAndOut) {
  ToolTempDir dir;
  const auto input = dir.path() / "in.jsonl";
  std::ofstream(input) << "\"Hello world! It's\"\n\"<|endoftext|>\"\n\"\"\n\"\\u00e9\\n\"\n";
  const ToolResult r =
      RunTool({"tokenize", "--tokenizer", NeoxTokenizerPath(), "--jsonl", input.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[12092,1533,2,733,434]\n[0]\n[]\n[860,187]\n");
}

TEST(TokenizeCliTest, FlagErrorsExit2) {
  const std::vector<std::vector<std::string>> cases = {
      {"tokenize", "--tokenizer", NeoxTokenizerPath()},  // no input
      {"tokenize", "--tokenizer", NeoxTokenizerPath(), "--text", "a", "--jsonl", "x"},
      {"tokenize", "--text", "a"},  // no tokenizer
      {"detokenize", "--tokenizer", NeoxTokenizerPath(), "--tokens", "1,x"},
      {"detokenize", "--tokenizer", NeoxTokenizerPath(), "--tokens", "50277"},  // out of vocab
  };
  for (const auto& args : cases) {
    const ToolResult r = RunTool(args);
    EXPECT_EQ(r.exit_code, 2) << args[0] << " " << r.err;
    EXPECT_EQ(r.ErrLines(), 1) << r.err;
    EXPECT_THAT(r.err, StartsWith("xlstm " + args[0] + ": error: "));
  }
}

TEST(TokenizeCliTest, RuntimeErrorsExit1) {
  ToolTempDir dir;
  const auto bad_utf8 = dir.path() / "bad.jsonl";
  std::ofstream(bad_utf8) << "\"ok\"\n\"\\ud800\"\n";  // a lone surrogate is not text
  const auto not_json = dir.path() / "not.jsonl";
  std::ofstream(not_json) << "plain text\n";
  const std::vector<std::vector<std::string>> cases = {
      {"tokenize", "--tokenizer", "/nonexistent/tokenizer.json", "--text", "a"},
      {"tokenize", "--tokenizer", NeoxTokenizerPath(), "--jsonl", bad_utf8.string()},
      {"tokenize", "--tokenizer", NeoxTokenizerPath(), "--jsonl", not_json.string()},
      {"tokenize", "--tokenizer", NeoxTokenizerPath(), "--text", "ok \xFF"},  // not UTF-8
  };
  for (const auto& args : cases) {
    const ToolResult r = RunTool(args);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.ErrLines(), 1) << r.err;
    EXPECT_THAT(r.err, StartsWith("xlstm tokenize: error: "));
  }
}

}  // namespace
}  // namespace xlstmd::testing
