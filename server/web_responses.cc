// The OpenAI Responses API, stateful by design: a response id names (session, version), so
// `previous_response_id` continues the session with only the new input, O(1) in the history.
//
//   POST   /v1/responses        {input, instructions?, previous_response_id?, store?, stream?,
//                                max_output_tokens?, temperature?, top_p?, metadata?}
//   GET    /v1/responses/{id}   the stored response (store: true)
//   DELETE /v1/responses/{id}   forgets the stored response object (the session stays)
#include <deque>
#include <set>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/base/retry.h"
#include "server/convert.h"
#include "server/web_internal.h"

namespace xlstmd::server::web {

namespace {

absl::Status Bad(const std::string& m) { return absl::InvalidArgumentError(m); }

std::string ResponseId(const std::string& session_id, uint64_t version) {
  return absl::StrCat("resp_", version, "_", session_id);
}

// (session, version) of a response id; false when it is not one of ours.
bool ParseResponseId(const std::string& id, std::string* session, uint64_t* version) {
  if (id.rfind("resp_", 0) != 0) return false;
  const size_t us = id.find('_', 5);
  if (us == std::string::npos || us == 5) return false;
  if (!absl::SimpleAtoi(id.substr(5, us - 5), version)) return false;
  *session = id.substr(us + 1);
  return ValidateSessionId(*session).ok();
}

const std::set<std::string>& Known() {
  static const auto* s = new std::set<std::string>{
      "model", "input", "instructions", "previous_response_id", "store", "stream",
      "max_output_tokens", "temperature", "top_p", "metadata", "user", "seed", "top_k",
      "min_p", "repetition_penalty", "stop", "truncation", "parallel_tool_calls", "text"};
  return *s;
}

const std::set<std::string>& Unsupported() {
  static const auto* s = new std::set<std::string>{
      "tools", "tool_choice", "reasoning", "include", "background", "prompt", "conversation",
      "service_tier", "top_logprobs", "max_tool_calls", "prompt_cache_key"};
  return *s;
}

// The text of `input`: a string, or exactly one user message item (string content or
// input_text parts). Earlier turns are the server's to hold.
absl::Status InputText(const Json& input, std::string* out, std::string* param) {
  *param = "input";
  if (input.is_string()) {
    *out = input.get<std::string>();
    return absl::OkStatus();
  }
  if (!input.is_array() || input.size() != 1 || !input[0].is_object()) {
    return Bad("input must be a string or one user message (the server holds the history: "
               "chain requests with previous_response_id)");
  }
  const Json& item = input[0];
  auto type = item.find("type");
  if (type != item.end() && *type != "message") {
    *param = "input[0].type";
    return Bad("only message input items are supported");
  }
  auto role = item.find("role");
  if (role == item.end() || *role != "user") {
    *param = "input[0].role";
    return Bad("the input message must have role 'user'");
  }
  auto content = item.find("content");
  if (content != item.end() && content->is_string()) {
    *out = content->get<std::string>();
    return absl::OkStatus();
  }
  if (content == item.end() || !content->is_array()) {
    *param = "input[0].content";
    return Bad("input[0].content must be a string or an array of input_text parts");
  }
  for (size_t j = 0; j < content->size(); ++j) {
    const Json& part = (*content)[j];
    auto t = part.is_object() ? part.find("type") : part.end();
    auto text = part.is_object() ? part.find("text") : part.end();
    if (t == part.end() || *t != "input_text" || text == part.end() || !text->is_string()) {
      *param = absl::StrCat("input[0].content[", j, "]");
      return Bad(absl::StrCat(*param, ": only input_text parts are supported"));
    }
    out->append(text->get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

// Stored response objects (store: true), newest kept, a count and byte cap.
class ResponseStore {
 public:
  static ResponseStore& Get() {
    static auto* s = new ResponseStore();
    return *s;
  }
  void Put(const std::string& id, std::string json) {
    absl::MutexLock lock(&mu_);
    if (auto it = map_.find(id); it != map_.end()) bytes_ -= it->second.size();
    bytes_ += json.size();
    map_[id] = std::move(json);
    order_.push_back(id);
    while (map_.size() > kMaxEntries || bytes_ > kMaxBytes) {
      const std::string old = order_.front();
      order_.pop_front();
      if (auto it = map_.find(old); it != map_.end()) {
        bytes_ -= it->second.size();
        map_.erase(it);
      }
    }
  }
  std::optional<std::string> Find(const std::string& id) {
    absl::MutexLock lock(&mu_);
    auto it = map_.find(id);
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }
  bool Erase(const std::string& id) {
    absl::MutexLock lock(&mu_);
    auto it = map_.find(id);
    if (it == map_.end()) return false;
    bytes_ -= it->second.size();
    map_.erase(it);
    return true;
  }

 private:
  static constexpr size_t kMaxEntries = 10000;
  static constexpr size_t kMaxBytes = 64 << 20;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::string> map_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

namespace {

void GetOrDelete(Call& call, const std::string& id) {
  std::string session;
  uint64_t version = 0;
  if (!ParseResponseId(id, &session, &version)) {
    return SendError(call, absl::NotFoundError("no such response"), "response_id");
  }
  // A response of another tenant is as unknown as one never made.
  if (!LookupSessionSync(call, session).ok()) {
    return SendError(call, absl::NotFoundError("no such response"), "response_id");
  }
  if (call.req.method == "DELETE") {
    if (!ResponseStore::Get().Erase(id)) {
      return SendError(call, absl::NotFoundError("no such response"), "response_id");
    }
    return SendJson(call, 200, Json{{"id", id}, {"object", "response.deleted"}, {"deleted", true}});
  }
  std::optional<std::string> stored = ResponseStore::Get().Find(id);
  if (!stored.has_value()) {
    return SendError(call, absl::NotFoundError("no such response (or it was not stored)"),
                     "response_id");
  }
  call.res.Send(200, "application/json", *stored + "\n", call.headers);
}

}  // namespace

void HandleResponses(Call& call, const std::vector<std::string>& parts) {
  if (parts.size() == 2 && !parts[1].empty()) {
    if (call.req.method != "GET" && call.req.method != "DELETE") {
      return MethodNotAllowed(call, "GET, DELETE");
    }
    return GetOrDelete(call, parts[1]);
  }
  if (parts.size() != 1) return SendError(call, absl::NotFoundError("no such endpoint"));
  if (call.req.method != "POST") {
    return MethodNotAllowed(call, "POST");
  }
  absl::StatusOr<Json> parsed = ParseJsonBody(call.req);
  if (!parsed.ok()) return SendError(call, parsed.status());
  const Json& body = *parsed;
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (Unsupported().count(it.key()) != 0 && !it->is_null() &&
        !(it->is_array() && it->empty())) {
      return SendError(call, Bad(absl::StrCat(it.key(), " is not supported by this server")),
                       it.key());
    }
    if (Known().count(it.key()) == 0 && Unsupported().count(it.key()) == 0) {
      return SendError(call, Bad(absl::StrCat("unknown parameter: ", it.key())), it.key());
    }
  }
  if (auto m = body.find("model"); m != body.end() && !m->is_null() &&
                                    (!m->is_string() || *m != call.state->model_name())) {
    return SendError(call, absl::NotFoundError("that model is not served here (GET /v1/models)"),
                     "model");
  }
  const auto flag = [&](const char* name, bool dflt, bool* out) {
    auto it = body.find(name);
    if (it == body.end() || it->is_null()) {
      *out = dflt;
      return true;
    }
    if (!it->is_boolean()) return false;
    *out = it->get<bool>();
    return true;
  };
  bool store = true, stream = false;
  if (!flag("store", true, &store)) return SendError(call, Bad("store must be a boolean"), "store");
  if (!flag("stream", false, &stream)) {
    return SendError(call, Bad("stream must be a boolean"), "stream");
  }
  std::string param;
  core::SamplingConfig sampling;
  if (absl::Status s = ReadSampling(body, "max_output_tokens", &sampling, &param); !s.ok()) {
    return SendError(call, s, param);
  }
  std::string text;
  auto input = body.find("input");
  if (input == body.end()) return SendError(call, Bad("input is required"), "input");
  if (absl::Status s = InputText(*input, &text, &param); !s.ok()) return SendError(call, s, param);
  // Checked here as well as by the engine: a stored response creates its session first, and
  // a turn refused after that would leave the session behind.
  if (absl::StripAsciiWhitespace(text).empty()) {
    return SendError(call, Bad("input is empty or only whitespace"), "input");
  }
  std::string instructions;
  if (auto it = body.find("instructions"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return SendError(call, Bad("instructions must be a string"), "instructions");
    instructions = it->get<std::string>();
  }
  std::string previous;
  if (auto it = body.find("previous_response_id"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) {
      return SendError(call, Bad("previous_response_id must be a string"), "previous_response_id");
    }
    previous = it->get<std::string>();
  }

  // Which session the turn runs on.
  std::string session_id;
  std::optional<uint64_t> expected;
  bool temporary = false;
  if (previous.empty()) {
    absl::StatusOr<core::SessionInfo> info = CreateSessionSync(call, instructions);
    if (!info.ok()) return SendError(call, info.status(), "instructions");
    session_id = info->session_id;
    temporary = !store;
  } else {
    if (!instructions.empty()) {
      return SendError(call, Bad("instructions apply when a conversation starts; the session "
                                 "already holds them"),
                       "instructions");
    }
    uint64_t version = 0;
    std::string prev_session;
    absl::StatusOr<core::SessionInfo> info =
        ParseResponseId(previous, &prev_session, &version)
            ? LookupSessionSync(call, prev_session)
            : absl::StatusOr<core::SessionInfo>(absl::NotFoundError("no such response"));
    if (!info.ok()) {
      return SendError(call, info.status().code() == absl::StatusCode::kNotFound
                                 ? absl::NotFoundError(absl::StrCat("previous response '", previous,
                                                                    "' not found"))
                                 : info.status(),
                       "previous_response_id");
    }
    session_id = prev_session;
    expected = version;
    if (info->version != version) {
      // An older response of a conversation that moved on: a new conversation branches off
      // from the version kept for rewinding (--keep-turn-checkpoints), the original stays.
      absl::StatusOr<core::SessionInfo> fork = ForkSessionSync(call, prev_session, version);
      if (!fork.ok()) {
        if (fork.status().code() != absl::StatusCode::kFailedPrecondition) {
          return SendError(call, fork.status(), "previous_response_id");
        }
        return SendError(call,
                         absl::AbortedError(absl::StrCat(
                             "response no longer resumable: its conversation has moved on and "
                             "version ", version, " is not kept (--keep-turn-checkpoints)")),
                         "previous_response_id");
      }
      session_id = fork->session_id;
      temporary = !store;
    } else if (!store) {
      // Leave nothing behind: continue a copy, deleted after.
      absl::StatusOr<core::SessionInfo> fork = ForkSessionSync(call, prev_session);
      if (!fork.ok()) return SendError(call, fork.status(), "previous_response_id");
      session_id = fork->session_id;
      temporary = true;
    }
  }
  core::TurnRequest turn;
  turn.session_id = session_id;
  turn.owner = call.tenant;
  turn.message = std::move(text);
  turn.sampling = sampling;
  turn.expected_version = temporary ? std::nullopt : expected;
  ResponseTurn rt;
  rt.previous = previous;
  rt.new_conversation = previous.empty();
  rt.instructions = instructions;
  rt.store = store;
  rt.metadata = body.contains("metadata") ? body["metadata"] : Json::object();
  // store: false leaves no session behind, gone before the reply ends (a failed delete leaves
  // an idle one to the TTL).
  if (temporary) {
    call.after_turn = [&call, session_id] { (void)DeleteSessionSync(call, session_id); };
  }
  RunResponse(call, std::move(turn), stream, rt);
  // A reply refused before its turn ran (a full stream cap) still removes it.
  if (auto after = std::exchange(call.after_turn, nullptr)) after();
}

void StoreResponse(const std::string& id, const Json& response) {
  ResponseStore::Get().Put(id, DumpJson(response));
}

std::string MakeResponseId(const std::string& session_id, uint64_t version) {
  return ResponseId(session_id, version);
}

}  // namespace xlstmd::server::web
