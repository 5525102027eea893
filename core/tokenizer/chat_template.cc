#include "core/tokenizer/chat_template.h"

#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/json_file.h"
#include "core/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("\"", field, "\" ", what));
}

absl::Status ReadString(const Json& obj, const char* key, std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return absl::OkStatus();
  if (!it->is_string()) return FieldError(key, "must be a string");
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status ReadIds(const Json& obj, const char* key, std::vector<int32_t>* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return absl::OkStatus();
  if (!it->is_array()) return FieldError(key, "must be an array of token ids");
  out->clear();
  for (const Json& v : *it) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      return FieldError(key, "must hold non-negative integer token ids");
    }
    out->push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return absl::OkStatus();
}

absl::Status ReadRole(const Json& obj, const char* key, ChatTemplate::Role* role) {
  auto it = obj.find(key);
  if (it == obj.end()) return absl::OkStatus();
  if (!it->is_object()) return FieldError(key, "must be an object with prefix/suffix");
  for (auto f = it->begin(); f != it->end(); ++f) {
    if (f.key() != "prefix" && f.key() != "suffix") {
      return FieldError(absl::StrCat(key, ".", f.key()), "is not a known field");
    }
  }
  XLSTMD_RETURN_IF_ERROR(ReadString(*it, "prefix", &role->prefix));
  return ReadString(*it, "suffix", &role->suffix);
}

// Encodes `before + literal + after` with specials allowed only outside `literal`.
absl::StatusOr<std::vector<int32_t>> EncodeWrapped(const Tokenizer& tokenizer,
                                                   const std::string& before,
                                                   std::string_view literal,
                                                   const std::string& after) {
  std::string text = before;
  text.append(literal);
  text.append(after);
  EncodeOptions options;
  if (!literal.empty())
    options.literal_ranges.emplace_back(before.size(), before.size() + literal.size());
  return tokenizer.Encode(text, options);
}

}  // namespace

ChatTemplate ChatTemplate::Builtin(const Tokenizer& tokenizer) {
  ChatTemplate t;
  t.system = {"", "\n\n"};
  t.user = {"User: ", "\n"};
  t.assistant = {"Assistant:", "\n"};
  t.stop_strings = {"\nUser:"};
  if (std::optional<int32_t> eot = tokenizer.AddedTokenId("<|endoftext|>"); eot.has_value()) {
    t.bos_policy = BosPolicy::kSessionStart;
    t.bos_token_ids = {*eot};
    t.stop_token_ids = {*eot};
  } else {
    t.bos_policy = BosPolicy::kNone;
  }
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromJson(std::string_view json_text,
                                                    std::string_view source,
                                                    const ChatTemplate& defaults) {
  const absl::string_view name(source.data(), source.size());
  auto prefixed = [name](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(name, ": ", s.message()));
  };
  absl::StatusOr<Json> root = ParseStrictJson(json_text);
  if (!root.ok()) return prefixed(root.status());
  if (!root->is_object()) return prefixed(absl::InvalidArgumentError("must be a JSON object"));
  static constexpr const char* kKnown[] = {
      "version",     "bos_policy", "bos_token_ids",         "system",
      "user",        "assistant",  "default_system_prompt", "stop_token_ids",
      "stop_strings"};
  for (auto it = root->begin(); it != root->end(); ++it) {
    bool known = false;
    for (const char* k : kKnown) known = known || it.key() == k;
    // Typos must not silently fall back to defaults.
    if (!known) return prefixed(FieldError(it.key(), "is not a known field"));
  }
  if (auto v = root->find("version"); v != root->end() && !(v->is_number_integer() && *v == 1)) {
    return prefixed(FieldError("version", "must be 1"));
  }
  ChatTemplate t = defaults;
  absl::Status s;
  if (auto p = root->find("bos_policy"); p != root->end()) {
    if (*p == "session_start") {
      t.bos_policy = BosPolicy::kSessionStart;
    } else if (*p == "none") {
      t.bos_policy = BosPolicy::kNone;
    } else {
      return prefixed(FieldError("bos_policy", "must be \"session_start\" or \"none\""));
    }
  }
  if (s.ok()) s = ReadIds(*root, "bos_token_ids", &t.bos_token_ids);
  if (s.ok()) s = ReadRole(*root, "system", &t.system);
  if (s.ok()) s = ReadRole(*root, "user", &t.user);
  if (s.ok()) s = ReadRole(*root, "assistant", &t.assistant);
  if (s.ok()) s = ReadString(*root, "default_system_prompt", &t.default_system_prompt);
  if (s.ok()) s = ReadIds(*root, "stop_token_ids", &t.stop_token_ids);
  if (s.ok()) {
    if (auto it = root->find("stop_strings"); it != root->end()) {
      if (!it->is_array()) {
        s = FieldError("stop_strings", "must be an array of strings");
      } else {
        t.stop_strings.clear();
        for (const Json& v : *it) {
          if (!v.is_string() || v.get_ref<const std::string&>().empty()) {
            s = FieldError("stop_strings", "must hold non-empty strings");
            break;
          }
          t.stop_strings.push_back(v.get<std::string>());
        }
      }
    }
  }
  if (!s.ok()) return prefixed(s);
  if (t.bos_policy == BosPolicy::kSessionStart && t.bos_token_ids.empty()) {
    return prefixed(FieldError("bos_token_ids", "must not be empty with bos_policy session_start"));
  }
  return t;
}

absl::Status ChatTemplate::Validate(const Tokenizer& tokenizer) const {
  for (const auto* ids : {&bos_token_ids, &stop_token_ids}) {
    for (int32_t id : *ids) {
      if (!tokenizer.TokenBytes(id).ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("chat template: token id ", id, " is not in the vocabulary"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ChatTemplate> ChatTemplate::ForModel(const std::filesystem::path& model_dir,
                                                    const Tokenizer& tokenizer) {
  const ChatTemplate builtin = Builtin(tokenizer);
  const std::filesystem::path file = model_dir / std::string(kChatTemplateFileName);
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return builtin;
  XLSTMD_ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(file, 1 << 20));
  XLSTMD_ASSIGN_OR_RETURN(ChatTemplate t, FromJson(text, file.string(), builtin));
  XLSTMD_RETURN_IF_ERROR(t.Validate(tokenizer));
  return t;
}

absl::StatusOr<std::vector<int32_t>> EncodeSessionStart(const ChatTemplate& tmpl,
                                                        const Tokenizer& tokenizer,
                                                        std::string_view system_prompt) {
  std::vector<int32_t> ids;
  if (tmpl.bos_policy == ChatTemplate::BosPolicy::kSessionStart) ids = tmpl.bos_token_ids;
  if (system_prompt.empty()) system_prompt = tmpl.default_system_prompt;
  if (system_prompt.empty()) return ids;
  XLSTMD_ASSIGN_OR_RETURN(
      const std::vector<int32_t> system,
      EncodeWrapped(tokenizer, tmpl.system.prefix, system_prompt, tmpl.system.suffix));
  ids.insert(ids.end(), system.begin(), system.end());
  return ids;
}

absl::StatusOr<std::vector<int32_t>> EncodeUserTurn(const ChatTemplate& tmpl,
                                                    const Tokenizer& tokenizer,
                                                    std::string_view user_message,
                                                    bool close_previous_reply) {
  std::string before = close_previous_reply ? tmpl.assistant.suffix : std::string();
  before += tmpl.user.prefix;
  return EncodeWrapped(tokenizer, before, user_message,
                       absl::StrCat(tmpl.user.suffix, tmpl.assistant.prefix));
}

absl::StatusOr<std::vector<int32_t>> EncodeConversation(const ChatTemplate& tmpl,
                                                        const Tokenizer& tokenizer,
                                                        const std::vector<ChatMessage>& messages) {
  using Role = ChatMessage::Role;
  size_t i = 0;
  std::string_view system;
  if (!messages.empty() && messages[0].role == Role::kSystem) {
    system = messages[0].text;
    i = 1;
  }
  if (i == messages.size()) {
    return absl::InvalidArgumentError("messages: the conversation needs a user message");
  }
  XLSTMD_ASSIGN_OR_RETURN(std::vector<int32_t> ids, EncodeSessionStart(tmpl, tokenizer, system));
  for (size_t first = i; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const Role want = (i - first) % 2 == 0 ? Role::kUser : Role::kAssistant;
    if (m.role != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i, "]: expected a ", want == Role::kUser ? "user" : "assistant",
          " message (after an optional system message, user and assistant messages alternate)"));
    }
    std::vector<int32_t> part;
    if (m.role == Role::kUser) {
      // Every user message after the first closes the reply before it (as a session's
      // next message turn does).
      XLSTMD_ASSIGN_OR_RETURN(part, EncodeUserTurn(tmpl, tokenizer, m.text, i > first));
    } else {
      EncodeOptions literal;
      literal.allow_special = false;
      XLSTMD_ASSIGN_OR_RETURN(part, tokenizer.Encode(m.text, literal));
      if (m.ended_by_stop_token && !tmpl.stop_token_ids.empty()) {
        part.push_back(tmpl.stop_token_ids.front());
      }
    }
    ids.insert(ids.end(), part.begin(), part.end());
  }
  if (messages.back().role != Role::kUser) {
    return absl::InvalidArgumentError("messages: the last message must be the user's");
  }
  return ids;
}

}  // namespace xlstmd::core
