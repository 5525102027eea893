// The chat-completions reply: whole, or streamed as the chunks the common servers send (a
// first chunk with delta.role, one per token delta, one with finish_reason, a usage chunk
// with `choices: []` when asked, then `data: [DONE]`).
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/retry.h"
#include "server/web_internal.h"

namespace xlstmd::server::web {

void RunChatCompletion(Call& call, core::TurnRequest turn, bool stream, bool include_usage,
                       bool report_session) {
  const std::string id = NewId("chatcmpl-");
  const int64_t created = UnixNow();
  const std::string& model = call.state->model_name();
  const std::string session_id = turn.session_id;
  const bool want_logprobs = turn.sampling.logprobs > 0;
  const core::Tokenizer& tokenizer = call.engine->tokenizer();
  std::optional<StreamSlot> slot;
  if (stream && !TakeStreamSlot(call, &slot)) return;
  const auto chunk = [&](Json delta, Json finish_reason, Json logprobs) {
    return Json{{"id", id},
                {"object", "chat.completion.chunk"},
                {"created", created},
                {"model", model},
                {"choices", Json::array({Json{{"index", 0},
                                              {"delta", std::move(delta)},
                                              {"logprobs", std::move(logprobs)},
                                              {"finish_reason", std::move(finish_reason)}}})}};
  };
  const auto write = [&](const Json& j) { return call.res.Write("data: " + DumpJson(j) + "\n\n"); };
  bool open = false;
  // The head goes out with the first event, so a refusal before any is an HTTP error.
  const auto ensure_open = [&] {
    if (open) return !call.res.failed();
    open = true;
    HttpHeaders h = call.headers;
    h.emplace_back("X-Accel-Buffering", "no");
    if (report_session) h.emplace_back("X-Session-Id", session_id);
    return call.res.StartStream(200, "text/event-stream; charset=utf-8", h) &&
           write(chunk(Json{{"role", "assistant"}, {"content", ""}}, nullptr, nullptr));
  };
  std::string text;
  Json logprob_content = Json::array();
  std::optional<core::TurnEvent> finished;
  TurnHooks hooks;
  hooks.on_event = [&](const core::TurnEvent& event) {
    switch (event.kind) {
      case core::TurnEvent::Kind::kStarted:
        return !stream || ensure_open();
      case core::TurnEvent::Kind::kDelta: {
        text += event.text;
        Json lp = nullptr;
        if (want_logprobs && !event.logprobs.empty()) {
          lp = LogprobsJson(tokenizer, event);
          for (const Json& e : lp["content"]) logprob_content.push_back(e);
        }
        if (!stream) return true;
        if (!ensure_open()) return false;
        if (event.text.empty() && lp.is_null()) return true;
        return write(chunk(Json{{"content", event.text}}, nullptr, std::move(lp)));
      }
      case core::TurnEvent::Kind::kFinished: {
        finished = event;
        if (!stream) return true;
        if (!ensure_open()) return false;
        Json last = chunk(Json::object(), OpenAiFinishReason(event.finish_reason), nullptr);
        if (report_session) {
          last["xlstmd"] = {{"session_id", session_id}, {"session_version", event.session_version}};
        }
        if (!write(last)) return false;
        if (include_usage) {
          Json u = {{"id", id},           {"object", "chat.completion.chunk"},
                    {"created", created}, {"model", model},
                    {"choices", Json::array()}, {"usage", Usage(event.usage)}};
          return write(u);
        }
        return true;
      }
    }
    return true;
  };
  if (stream) {
    hooks.heartbeat = [&] { return ensure_open() && call.res.Write(": ping\n\n"); };
  }
  bool gone = false;
  const absl::Status status = RunTurn(call, std::move(turn), hooks, &gone);
  if (gone) return;
  if (!stream) {
    if (!status.ok() || !finished.has_value()) {
      return SendError(call, status.ok() ? absl::InternalError("the turn ended without a result")
                                         : status);
    }
    Json reply = {{"id", id},
                  {"object", "chat.completion"},
                  {"created", created},
                  {"model", model},
                  {"choices", Json::array({Json{
                                  {"index", 0},
                                  {"message", {{"role", "assistant"}, {"content", text}}},
                                  {"logprobs", want_logprobs ? Json{{"content", logprob_content}}
                                                             : Json(nullptr)},
                                  {"finish_reason",
                                   OpenAiFinishReason(finished->finish_reason)}}})},
                  {"usage", Usage(finished->usage)}};
    HttpHeaders h;
    if (report_session) {
      reply["xlstmd"] = {{"session_id", session_id},
                         {"session_version", finished->session_version}};
      h = {{"X-Session-Id", session_id},
           {"X-Session-Version", std::to_string(finished->session_version)}};
    }
    return SendJson(call, 200, reply, std::move(h));
  }
  if (!open) {
    if (!status.ok()) return SendError(call, status);
    if (!ensure_open()) return;
  }
  if (!status.ok()) write(Json{{"error", ErrorObject(status)}});
  call.res.Write("data: [DONE]\n\n");
}

}  // namespace xlstmd::server::web
