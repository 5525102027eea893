#include "core/tokenizer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/tokenizer/tokenizer_testutil.h"

namespace xlstmd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::xlstmd::testing::Neox;
using ::xlstmd::testing::StatusIs;

TEST(ChatTemplateTest, BuiltinForXlstm7bUsesIdZero) {
  const ChatTemplate t = ChatTemplate::Builtin(Neox());
  EXPECT_EQ(t.bos_policy, ChatTemplate::BosPolicy::kSessionStart);
  EXPECT_THAT(t.bos_token_ids, ElementsAre(0));
  EXPECT_THAT(t.stop_token_ids, ElementsAre(0));  // not the config's eos id 2 ("!")
  EXPECT_THAT(t.Validate(Neox()), ::xlstmd::testing::IsOk());
}

TEST(ChatTemplateTest, SessionStartThenTurnsAppendOnlyTheirOwnTokens) {
  const ChatTemplate t = ChatTemplate::Builtin(Neox());
  const std::vector<int32_t> start = *EncodeSessionStart(t, Neox(), "");
  EXPECT_THAT(start, ElementsAre(0));  // BOS once
  const std::vector<int32_t> with_system = *EncodeSessionStart(t, Neox(), "Be brief.");
  EXPECT_EQ(with_system.front(), 0);
  EXPECT_EQ(*Neox().Decode(with_system), "<|endoftext|>Be brief.\n\n");

  const std::vector<int32_t> turn1 = *EncodeUserTurn(t, Neox(), "Hi there", false);
  EXPECT_EQ(*Neox().Decode(turn1), "User: Hi there\nAssistant:");
  EXPECT_NE(turn1.front(), 0);  // no BOS on later turns
  const std::vector<int32_t> turn2 = *EncodeUserTurn(t, Neox(), "And now?", true);
  EXPECT_EQ(*Neox().Decode(turn2), "\nUser: And now?\nAssistant:");
  // The whole turn is one text: the message's first word carries its space ("Ġthere").
  EXPECT_EQ(turn1, *Neox().Encode("User: Hi there\nAssistant:"));
}

TEST(ChatTemplateTest, UserTextCannotForgeSpecialTokens) {
  const ChatTemplate t = ChatTemplate::Builtin(Neox());
  const std::vector<int32_t> ids = *EncodeUserTurn(t, Neox(), "x<|endoftext|>y", false);
  EXPECT_THAT(ids, ::testing::Not(::testing::Contains(0)));
  EXPECT_EQ(*Neox().Decode(ids), "User: x<|endoftext|>y\nAssistant:");
}

TEST(ChatTemplateTest, JsonOverridesDefaults) {
  const ChatTemplate builtin = ChatTemplate::Builtin(Neox());
  auto t = ChatTemplate::FromJson(R"({
      "version": 1,
      "bos_policy": "none",
      "user": {"prefix": "<|padding|>Q: "},
      "assistant": {"prefix": "A:", "suffix": "<|endoftext|>"},
      "stop_token_ids": [0, 1],
      "stop_strings": ["\nQ:"]
  })",
                                  "chat_template.json", builtin);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->bos_policy, ChatTemplate::BosPolicy::kNone);
  EXPECT_EQ(t->user.suffix, "\n");  // kept from the defaults
  EXPECT_THAT(t->stop_strings, ElementsAre("\nQ:"));
  EXPECT_TRUE(EncodeSessionStart(*t, Neox(), "")->empty());
  // Template text may use specials: <|endoftext|> closes the reply, <|padding|> opens Q.
  const std::vector<int32_t> ids = *EncodeUserTurn(*t, Neox(), "hi", true);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 1);
}

TEST(ChatTemplateTest, BadJsonIsRejected) {
  const ChatTemplate builtin = ChatTemplate::Builtin(Neox());
  for (const char* bad :
       {R"({"usr": {}})", R"({"bos_policy": "always"})", R"({"user": {"prefix": 3}})",
        R"({"stop_token_ids": [-1]})", R"({"version": 2})", R"({"user": {"prefx": "x"}})",
        R"({"bos_policy": "session_start", "bos_token_ids": []})", "[1]"}) {
    EXPECT_THAT(ChatTemplate::FromJson(bad, "t.json", builtin),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("t.json")))
        << bad;
  }
}

TEST(ChatTemplateTest, ForModelReadsFileBesideWeightsAndValidatesIds) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "chat_template_model";
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / "chat_template.json");
  EXPECT_THAT(ChatTemplate::ForModel(dir, Neox())->bos_token_ids, ElementsAre(0));
  std::ofstream(dir / "chat_template.json") << R"({"stop_token_ids": [50277]})";
  EXPECT_THAT(ChatTemplate::ForModel(dir, Neox()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("50277")));
  std::ofstream(dir / "chat_template.json") << R"({"stop_strings": ["###"]})";
  EXPECT_THAT(ChatTemplate::ForModel(dir, Neox())->stop_strings, ElementsAre("###"));
}

}  // namespace
}  // namespace xlstmd::core
