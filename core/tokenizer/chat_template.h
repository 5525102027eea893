// ChatTemplate: how a model's conversation is laid out as tokens. Read from a small JSON file
// beside the weights (`chat_template.json`, format in docs/chat-template.md) or built in.
// It holds role prefixes/suffixes, the BOS policy, and the stop token ids and stop strings
// the sampler ends a reply on.
//
// A session is encoded incrementally: EncodeSessionStart once (BOS, optional system prompt),
// then EncodeUserTurn per turn, each returning only the ids that turn appends, because the
// server keeps the recurrent state and never re-reads history. User and system text is
// encoded with special tokens disabled inside it, so a message that spells "<|endoftext|>"
// cannot forge one; template text itself may use specials.
// Immutable value type; any thread.
#ifndef XLSTMD_CORE_TOKENIZER_CHAT_TEMPLATE_H_
#define XLSTMD_CORE_TOKENIZER_CHAT_TEMPLATE_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tokenizer/tokenizer.h"

namespace xlstmd::core {

inline constexpr std::string_view kChatTemplateFileName = "chat_template.json";

struct ChatTemplate {
  enum class BosPolicy {
    kSessionStart,  // bos_token_ids once, at the very start of a session
    kNone,
  };
  struct Role {
    std::string prefix;
    std::string suffix;
  };

  BosPolicy bos_policy = BosPolicy::kSessionStart;
  std::vector<int32_t> bos_token_ids;
  Role system;
  Role user;
  Role assistant;
  std::string default_system_prompt;  // used when a session names none
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop_strings;

  // The built-in template for `tokenizer`: plain "User: ... / Assistant:" turns; when the
  // vocabulary has <|endoftext|>, BOS is that id once per session and it is the stop token.
  // For GPT-NeoX (xLSTM-7B) that is id 0, not the config's eos id 2, which is "!".
  static ChatTemplate Builtin(const Tokenizer& tokenizer);

  // Parses the JSON format; `source` names it in errors. Omitted fields keep the values of
  // `defaults`.
  static absl::StatusOr<ChatTemplate> FromJson(std::string_view json_text, std::string_view source,
                                               const ChatTemplate& defaults);

  // model_dir/chat_template.json over Builtin(tokenizer), or Builtin alone when absent;
  // checked against the tokenizer (ids in range).
  static absl::StatusOr<ChatTemplate> ForModel(const std::filesystem::path& model_dir,
                                               const Tokenizer& tokenizer);

  // InvalidArgument when an id is outside the tokenizer's vocabulary.
  absl::Status Validate(const Tokenizer& tokenizer) const;
};

// Ids that open a session: BOS (per policy) and, when `system_prompt` (or the template's
// default) is non-empty, the wrapped system prompt.
absl::StatusOr<std::vector<int32_t>> EncodeSessionStart(const ChatTemplate& tmpl,
                                                        const Tokenizer& tokenizer,
                                                        std::string_view system_prompt);

// Ids one user turn appends: [assistant suffix, closing the previous reply, when
// `close_previous_reply`] user prefix, message, user suffix, assistant prefix (the model
// continues from there). The whole turn is encoded as one text so tokens may span the
// template/message boundary exactly as they would in the full conversation.
absl::StatusOr<std::vector<int32_t>> EncodeUserTurn(const ChatTemplate& tmpl,
                                                    const Tokenizer& tokenizer,
                                                    std::string_view user_message,
                                                    bool close_previous_reply);

// One message of a whole conversation a stateless client sends.
struct ChatMessage {
  enum class Role { kSystem, kUser, kAssistant };
  Role role = Role::kUser;
  std::string text;
  // An assistant reply that ended on the template's stop token (the usual end): the session
  // that produced it holds that id after the reply's text, so the encoding adds it too.
  bool ended_by_stop_token = true;
};

// The ids a session accumulates over `messages` (an optional leading system message, then
// user and assistant messages alternating, starting and ending with a user message), so a
// stateless request is answered from one prefill: EncodeSessionStart (with the system text,
// else the template's default), EncodeUserTurn per user message and, per assistant message,
// its text (specials off) plus the first stop id when it ended on one. Equal to what the
// session holds where the reply's ids round-trip through their text. INVALID_ARGUMENT naming
// the message index when the order is not that.
absl::StatusOr<std::vector<int32_t>> EncodeConversation(const ChatTemplate& tmpl,
                                                        const Tokenizer& tokenizer,
                                                        const std::vector<ChatMessage>& messages);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_TOKENIZER_CHAT_TEMPLATE_H_
