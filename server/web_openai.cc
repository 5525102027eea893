// OpenAI-compatible endpoints: GET /v1/models and POST /v1/chat/completions, stateless (the
// client sends the whole history) or stateful (xlstmd holds it; only the new message).
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/base/retry.h"
#include "core/tokenizer/chat_template.h"
#include "server/convert.h"
#include "server/web_internal.h"

namespace xlstmd::server::web {
namespace {

absl::Status Bad(const std::string& message) { return absl::InvalidArgumentError(message); }

// A number field: nullopt when absent or null.
absl::StatusOr<std::optional<double>> Number(const Json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::optional<double>();
  if (!it->is_number()) return Bad(absl::StrCat(name, " must be a number"));
  return std::optional<double>(it->get<double>());
}

absl::StatusOr<std::optional<int64_t>> Integer(const Json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::optional<int64_t>();
  if (!it->is_number_integer()) return Bad(absl::StrCat(name, " must be an integer"));
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t{INT64_MAX}) {
    return Bad(absl::StrCat(name, " is out of range"));
  }
  return std::optional<int64_t>(it->get<int64_t>());
}

}  // namespace

absl::Status ReadSampling(const Json& body, const char* max_tokens_field,
                          core::SamplingConfig* out, std::string* bad_param) {
  v1::SamplingParams p;
  // OpenAI's default temperature is 1 (the gRPC API's 0 means greedy).
  p.set_temperature(1.0f);
  const auto fail = [&](const char* param, absl::Status s) {
    *bad_param = param;
    return s;
  };
  struct Field {
    const char* name;
    void (*set)(v1::SamplingParams*, double);
  };
  for (const Field& f : std::initializer_list<Field>{
           {"temperature", [](v1::SamplingParams* s, double v) { s->set_temperature(static_cast<float>(v)); }},
           {"top_p", [](v1::SamplingParams* s, double v) { s->set_top_p(static_cast<float>(v)); }},
           {"min_p", [](v1::SamplingParams* s, double v) { s->set_min_p(static_cast<float>(v)); }},
           {"repetition_penalty",
            [](v1::SamplingParams* s, double v) { s->set_repetition_penalty(static_cast<float>(v)); }}}) {
    absl::StatusOr<std::optional<double>> v = Number(body, f.name);
    if (!v.ok()) return fail(f.name, v.status());
    if (v->has_value()) {
      // The gRPC API's 0 = "off" for these; an explicit 0 top_p is a mistake there too.
      if (**v < 0 || **v > 1e6) return fail(f.name, Bad(absl::StrCat(f.name, " is out of range")));
      f.set(&p, **v);
    }
  }
  for (const char* penalty : {"presence_penalty", "frequency_penalty"}) {
    absl::StatusOr<std::optional<double>> v = Number(body, penalty);
    if (!v.ok()) return fail(penalty, v.status());
    if (v->has_value() && **v != 0) {
      return fail(penalty, Bad(absl::StrCat(penalty, " is not supported (use repetition_penalty)")));
    }
  }
  absl::StatusOr<std::optional<int64_t>> i = Integer(body, "top_k");
  if (!i.ok()) return fail("top_k", i.status());
  if (i->has_value()) {
    if (**i < 0 || **i > INT32_MAX) return fail("top_k", Bad("top_k is out of range"));
    p.set_top_k(static_cast<int32_t>(**i));
  }
  i = Integer(body, "seed");
  if (!i.ok()) return fail("seed", i.status());
  if (i->has_value()) p.set_seed(static_cast<uint64_t>(**i));
  for (const char* name : {max_tokens_field, "max_completion_tokens"}) {
    if (name == nullptr) continue;
    i = Integer(body, name);
    if (!i.ok()) return fail(name, i.status());
    if (i->has_value()) {
      if (**i < 1 || **i > INT32_MAX) return fail(name, Bad(absl::StrCat(name, " must be at least 1")));
      p.set_max_tokens(static_cast<int32_t>(**i));
    }
  }
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      p.add_stop(it->get<std::string>());
    } else if (it->is_array()) {
      for (const Json& s : *it) {
        if (!s.is_string()) return fail("stop", Bad("stop must be a string or an array of strings"));
        p.add_stop(s.get<std::string>());
      }
    } else {
      return fail("stop", Bad("stop must be a string or an array of strings"));
    }
  }
  if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return fail("stop_token_ids", Bad("stop_token_ids must be an array of ids"));
    for (const Json& id : *it) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return fail("stop_token_ids", Bad("stop_token_ids must be an array of ids"));
      }
      p.add_stop_token_ids(id.get<int32_t>());
    }
  }
  if (auto it = body.find("logprobs"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) return fail("logprobs", Bad("logprobs must be a boolean"));
    if (it->get<bool>()) p.set_logprobs(1);
  }
  i = Integer(body, "top_logprobs");
  if (!i.ok()) return fail("top_logprobs", i.status());
  if (i->has_value()) {
    if (**i < 0 || **i > 20) return fail("top_logprobs", Bad("top_logprobs must be 0 to 20"));
    if (**i > 0) {
      if (p.logprobs() == 0) return fail("top_logprobs", Bad("top_logprobs needs logprobs: true"));
      p.set_logprobs(static_cast<int32_t>(**i));
    }
  }
  *out = ToSamplingConfig(p);
  return absl::OkStatus();
}

const char* OpenAiFinishReason(core::FinishReason r) {
  return r == core::FinishReason::kMaxTokens ? "length" : "stop";
}

Json Usage(const core::TurnUsage& u) {
  const uint64_t prompt = u.history_tokens + u.prompt_tokens;
  return Json{{"prompt_tokens", prompt},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", prompt + u.completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", u.history_tokens}}}};
}

Json LogprobsJson(const core::Tokenizer& tokenizer, const core::TurnEvent& event) {
  Json content = Json::array();
  const size_t n = event.logprobs.size();
  const size_t top_n = n == 0 ? 0 : event.top_logprobs.size() / n;
  const auto entry = [&](const core::TokenLogprob& lp) {
    absl::StatusOr<std::string_view> bytes = tokenizer.TokenBytes(lp.token_id);
    const std::string text = bytes.ok() ? std::string(*bytes) : std::string();
    Json b = Json::array();
    for (unsigned char c : text) b.push_back(static_cast<int>(c));
    return Json{{"token", text}, {"logprob", lp.logprob}, {"bytes", b}};
  };
  for (size_t k = 0; k < n; ++k) {
    Json e = entry(event.logprobs[k]);
    Json top = Json::array();
    // With logprobs: true alone the server asked for one alternative; OpenAI lists none.
    if (top_n > 1 || event.top_logprobs.size() > n) {
      for (size_t t = 0; t < top_n; ++t) top.push_back(entry(event.top_logprobs[k * top_n + t]));
    }
    e["top_logprobs"] = top;
    content.push_back(e);
  }
  return Json{{"content", content}};
}

namespace {

// The fields chat completions reads; anything else but user/metadata/store is refused.
const std::set<std::string>& KnownFields() {
  static const auto* s = new std::set<std::string>{
      "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
      "seed", "stop", "logprobs", "top_logprobs", "stream", "stream_options", "n", "user",
      "metadata", "store", "xlstmd", "top_k", "min_p", "repetition_penalty",
      "presence_penalty", "frequency_penalty", "stop_token_ids"};
  return *s;
}

const std::set<std::string>& UnsupportedFields() {
  static const auto* s = new std::set<std::string>{
      "tools", "tool_choice", "functions", "function_call", "response_format", "audio",
      "modalities", "prediction", "parallel_tool_calls", "logit_bias", "reasoning_effort",
      "web_search_options", "service_tier"};
  return *s;
}

struct ChatBody {
  std::vector<core::ChatMessage> messages;
  core::SamplingConfig sampling;
  bool stream = false;
  bool include_usage = false;
  std::string session_id;
  std::optional<uint64_t> expected_version;
  std::string request_id;
  bool keep_session = false;
};

// The text of one message's content: a string, or text parts. nullopt + param on error.
absl::Status ContentText(const Json& content, const std::string& where, std::string* out,
                         std::string* param) {
  if (content.is_string()) {
    *out = content.get<std::string>();
    return absl::OkStatus();
  }
  if (!content.is_array()) {
    *param = where;
    return Bad(absl::StrCat(where, " must be a string or an array of text parts"));
  }
  for (size_t j = 0; j < content.size(); ++j) {
    const Json& part = content[j];
    const std::string at = absl::StrCat(where, "[", j, "]");
    auto type = part.is_object() ? part.find("type") : part.end();
    if (!part.is_object() || type == part.end() || !type->is_string()) {
      *param = at;
      return Bad(absl::StrCat(at, " must be an object with a type"));
    }
    if (*type != "text") {
      *param = at;
      return Bad(absl::StrCat(at, ": only text parts are supported (got ",
                              type->get<std::string>(), ")"));
    }
    auto text = part.find("text");
    if (text == part.end() || !text->is_string()) {
      *param = at;
      return Bad(absl::StrCat(at, ".text must be a string"));
    }
    out->append(text->get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ParseChatBody(Call& call, const Json& body, ChatBody* out, std::string* param) {
  for (auto it = body.begin(); it != body.end(); ++it) {
    // SDKs send some of these empty (tools: []): only a value that asks for something is
    // refused.
    if (UnsupportedFields().count(it.key()) != 0 && !it->is_null() &&
        !(it->is_array() && it->empty())) {
      *param = it.key();
      return Bad(absl::StrCat(it.key(), " is not supported by this server"));
    }
    if (KnownFields().count(it.key()) == 0 && UnsupportedFields().count(it.key()) == 0) {
      *param = it.key();
      return Bad(absl::StrCat("unknown parameter: ", it.key()));
    }
  }
  if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) {
      *param = "model";
      return Bad("model must be a string");
    }
    if (*it != call.state->model_name()) {
      *param = "model";
      return absl::NotFoundError(absl::StrCat("the model '", it->get<std::string>(),
                                              "' is not served here (GET /v1/models)"));
    }
  }
  if (auto it = body.find("n"); it != body.end() && !it->is_null() && *it != 1) {
    *param = "n";
    return Bad("n must be 1 (one choice per request)");
  }
  if (absl::Status s = ReadSampling(body, "max_tokens", &out->sampling, param); !s.ok()) return s;
  if (auto it = body.find("stream"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      *param = "stream";
      return Bad("stream must be a boolean");
    }
    out->stream = it->get<bool>();
  }
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    auto u = it->is_object() ? it->find("include_usage") : it->end();
    if (!it->is_object() || (u != it->end() && !u->is_boolean())) {
      *param = "stream_options";
      return Bad("stream_options must be {\"include_usage\": boolean}");
    }
    out->include_usage = u != it->end() && u->get<bool>();
  }
  if (auto it = body.find("xlstmd"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) {
      *param = "xlstmd";
      return Bad("xlstmd must be an object");
    }
    for (auto f = it->begin(); f != it->end(); ++f) {
      const std::string p = "xlstmd." + f.key();
      if (f.key() == "session_id" && f->is_string()) {
        out->session_id = f->get<std::string>();
      } else if (f.key() == "expected_version" && f->is_number_unsigned()) {
        out->expected_version = f->get<uint64_t>();
      } else if (f.key() == "request_id" && f->is_string()) {
        out->request_id = f->get<std::string>();
      } else if (f.key() == "keep_session" && f->is_boolean()) {
        out->keep_session = f->get<bool>();
      } else {
        *param = p;
        return Bad(absl::StrCat(p, ": unknown field or wrong type"));
      }
    }
  }
  if (const std::string* h = call.req.header("x-session-id")) {
    if (out->session_id.empty()) {
      out->session_id = *h;
    } else if (*h != out->session_id) {
      // The header is what a ring-hash proxy routes on (docs/deploy.md): it must not
      // disagree with the session the body names.
      *param = "session_id";
      return Bad("the X-Session-Id header names another session than the body's session_id");
    }
  }
  auto msgs = body.find("messages");
  if (msgs == body.end() || !msgs->is_array() || msgs->empty()) {
    *param = "messages";
    return Bad("messages must be a non-empty array");
  }
  for (size_t i = 0; i < msgs->size(); ++i) {
    const Json& m = (*msgs)[i];
    const std::string at = absl::StrCat("messages[", i, "]");
    auto role = m.is_object() ? m.find("role") : m.end();
    if (!m.is_object() || role == m.end() || !role->is_string()) {
      *param = at;
      return Bad(absl::StrCat(at, " must be an object with a role"));
    }
    core::ChatMessage cm;
    if (*role == "system" || *role == "developer") {
      cm.role = core::ChatMessage::Role::kSystem;
    } else if (*role == "user") {
      cm.role = core::ChatMessage::Role::kUser;
    } else if (*role == "assistant") {
      cm.role = core::ChatMessage::Role::kAssistant;
    } else {
      *param = at + ".role";
      return Bad(absl::StrCat(at, ".role: '", role->get<std::string>(),
                              "' is not supported (system, user, assistant)"));
    }
    for (auto f = m.begin(); f != m.end(); ++f) {
      if (f.key() != "role" && f.key() != "content" && f.key() != "name") {
        *param = at + "." + f.key();
        return Bad(absl::StrCat(at, ".", f.key(), " is not supported"));
      }
    }
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      *param = at + ".content";
      return Bad(absl::StrCat(at, ".content is required"));
    }
    if (absl::Status s = ContentText(*content, at + ".content", &cm.text, param); !s.ok()) return s;
    out->messages.push_back(std::move(cm));
  }
  if (out->messages.back().role != core::ChatMessage::Role::kUser) {
    *param = "messages";
    return Bad("the last message must be the user's");
  }
  // The new user message is the turn's input: blank is refused as on gRPC (a stateless
  // request renders every message into ids, so the engine's own check never sees it).
  if (absl::StripAsciiWhitespace(out->messages.back().text).empty()) {
    *param = absl::StrCat("messages[", out->messages.size() - 1, "].content");
    return Bad("the last user message is empty or only whitespace");
  }
  if (!out->session_id.empty() && out->messages.size() != 1) {
    *param = "messages";
    return Bad("the server holds the history of this session: send only the new user message");
  }
  return absl::OkStatus();
}

}  // namespace

void HandleModels(Call& call) {
  if (call.req.method != "GET" && call.req.method != "HEAD") {
    return MethodNotAllowed(call, "GET, HEAD");
  }
  const std::string& name = call.state->model_name();
  const Json model = {{"id", name}, {"object", "model"}, {"created", 0}, {"owned_by", "xlstmd"}};
  const std::string path = call.req.path;
  if (path == "/v1/models") {
    return SendJson(call, 200, Json{{"object", "list"}, {"data", Json::array({model})}});
  }
  if (path == "/v1/models/" + name) return SendJson(call, 200, model);
  SendError(call, absl::NotFoundError("no such model (GET /v1/models)"), "model");
}

void HandleChatCompletions(Call& call) {
  absl::StatusOr<Json> body = ParseJsonBody(call.req);
  if (!body.ok()) return SendError(call, body.status());
  ChatBody chat;
  std::string param;
  if (absl::Status s = ParseChatBody(call, *body, &chat, &param); !s.ok()) {
    return SendError(call, s, param);
  }
  const core::Engine& engine = *call.engine;
  core::TurnRequest turn;
  turn.owner = call.tenant;
  turn.sampling = chat.sampling;
  turn.request_id = chat.request_id;
  turn.expected_version = chat.expected_version;
  bool temporary = false;
  if (!chat.session_id.empty()) {
    if (absl::Status s = ValidateSessionId(chat.session_id); !s.ok()) {
      return SendError(call, s, "xlstmd.session_id");
    }
    turn.session_id = chat.session_id;
    turn.message = chat.messages[0].text;
  } else {
    // Stateless: the whole history as one prompt, into a temporary session.
    absl::StatusOr<std::vector<int32_t>> ids =
        core::EncodeConversation(engine.chat_template(), engine.tokenizer(), chat.messages);
    if (!ids.ok()) return SendError(call, ids.status(), "messages");
    absl::StatusOr<core::SessionInfo> info = CreateSessionSync(call, "");
    if (!info.ok()) return SendError(call, info.status());
    turn.session_id = info->session_id;
    turn.tokens = *std::move(ids);
    temporary = !chat.keep_session;
  }
  const std::string session_id = turn.session_id;
  // The temporary session goes whatever the turn did, before the reply ends; a failure to
  // delete it leaves only an idle session (idle TTL, quota), not the client's concern.
  if (temporary) {
    call.after_turn = [&call, session_id] { (void)DeleteSessionSync(call, session_id); };
  }
  RunChatCompletion(call, std::move(turn), chat.stream, chat.include_usage,
                    /*report_session=*/!temporary);
  // A reply refused before its turn ran (a full stream cap) still removes it.
  if (auto after = std::exchange(call.after_turn, nullptr)) after();
}

}  // namespace xlstmd::server::web
