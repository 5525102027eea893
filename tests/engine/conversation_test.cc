// EncodeConversation (the stateless web path's one prefill) against the ids a session
// accumulates over the same turns, with and without a system prompt.
#include <string>
#include <vector>

#include "core/tokenizer/chat_template.h"
#include "gtest/gtest.h"
#include "tests/engine/engine_harness.h"

namespace xlstmd::core {
namespace {

using Role = ChatMessage::Role;
using namespace engine_testing;  // NOLINT: the shared engine test helpers

// What the session holds for a reply, as a stateless client can reproduce it: the reply's
// text re-encoded (identical to its ids where they round-trip), then the stop id if it
// ended on one.
std::vector<int32_t> ReplyAsText(const Engine& e, const TurnResult& t) {
  EncodeOptions literal;
  literal.allow_special = false;
  std::vector<int32_t> ids = e.tokenizer().Encode(t.text, literal).value();
  if (t.finish == FinishReason::kStopToken) ids.push_back(e.chat_template().stop_token_ids.front());
  return ids;
}

void CheckConversation(const std::string& system) {
  Harness h = MakeEngine();
  Engine& e = *h.engine;
  SessionInfo s = NewSession(e, "", system);
  std::vector<int32_t> history;
  if (!system.empty()) {
    history = EncodeSessionStart(e.chat_template(), e.tokenizer(), system).value();
  }
  std::vector<ChatMessage> messages;
  if (!system.empty()) messages.push_back({Role::kSystem, system});
  const std::vector<std::string> users = {"hi", "tell me more", "and then?"};
  for (size_t k = 0; k < users.size(); ++k) {
    TurnRequest r;
    r.session_id = s.session_id;
    r.message = users[k];
    r.sampling.max_tokens = 4;
    const TurnResult t = RunTurn(e, r);
    ASSERT_TRUE(t.status.ok()) << t.status;
    messages.push_back({Role::kUser, users[k]});
    history.insert(history.end(), t.input_ids.begin(), t.input_ids.end());
    // The whole conversation up to this user message is exactly what the session has read
    // by the time this turn's input is in.
    EXPECT_EQ(EncodeConversation(e.chat_template(), e.tokenizer(), messages).value(), history)
        << "after user message " << k << " (system '" << system << "')";
    ChatMessage reply{Role::kAssistant, t.text, t.finish == FinishReason::kStopToken};
    messages.push_back(reply);
    const std::vector<int32_t> as_text = ReplyAsText(e, t);
    history.insert(history.end(), as_text.begin(), as_text.end());
  }
}

TEST(ConversationTest, EqualsTheSessionsIdsWithASystemPrompt) { CheckConversation("be brief"); }

TEST(ConversationTest, EqualsTheSessionsIdsWithTheDefaultStart) { CheckConversation(""); }

TEST(ConversationTest, RefusesOrdersASessionCannotHave) {
  Harness h = MakeEngine();
  const Engine& e = *h.engine;
  const auto encode = [&](std::vector<ChatMessage> m) {
    return EncodeConversation(e.chat_template(), e.tokenizer(), m).status().code();
  };
  const auto bad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(encode({}), bad);
  EXPECT_EQ(encode({{Role::kSystem, "s"}}), bad);
  EXPECT_EQ(encode({{Role::kAssistant, "a"}}), bad);
  EXPECT_EQ(encode({{Role::kUser, "u"}, {Role::kAssistant, "a"}}), bad);
  EXPECT_EQ(encode({{Role::kUser, "u"}, {Role::kUser, "u"}}), bad);
  EXPECT_EQ(encode({{Role::kUser, "u"}, {Role::kSystem, "s"}, {Role::kUser, "u"}}), bad);
  EXPECT_EQ(encode({{Role::kSystem, "s"}, {Role::kUser, "u"}}), absl::StatusCode::kOk);
}

}  // namespace
}  // namespace xlstmd::core
