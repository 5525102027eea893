// A Responses API turn: the response object, whole or as the published event sequence
// (response.created ... response.completed / .incomplete / .failed, each with a
// sequence_number; no [DONE]).
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/retry.h"
#include "server/web_internal.h"

namespace xlstmd::server::web {

void RunResponse(Call& call, core::TurnRequest turn, bool stream, const ResponseTurn& rt) {
  const int64_t created = UnixNow();
  const std::string session_id = turn.session_id;
  const std::string item_id = NewId("msg_");
  const float temperature = turn.sampling.temperature;
  const float top_p = turn.sampling.top_p;
  const int32_t max_output = turn.sampling.max_tokens;
  std::optional<StreamSlot> slot;
  if (stream && !TakeStreamSlot(call, &slot)) return;
  std::string id;  // known once the turn starts: (session, base version + 1)
  std::string text;
  int64_t seq = 0;
  const auto response = [&](const char* status, const core::TurnEvent* finished,
                            const absl::Status* error) {
    Json output = Json::array();
    const bool done = finished != nullptr;
    if (done || !text.empty()) {
      output.push_back(Json{{"id", item_id},
                            {"type", "message"},
                            {"status", done ? "completed" : "in_progress"},
                            {"role", "assistant"},
                            {"content", Json::array({Json{{"type", "output_text"},
                                                          {"text", text},
                                                          {"annotations", Json::array()}}})}});
    }
    Json r = {{"id", id},
              {"object", "response"},
              {"created_at", created},
              {"status", status},
              {"model", call.state->model_name()},
              {"output", output},
              {"previous_response_id", rt.previous.empty() ? Json(nullptr) : Json(rt.previous)},
              {"instructions", rt.instructions.empty() ? Json(nullptr) : Json(rt.instructions)},
              {"store", rt.store},
              {"temperature", temperature},
              {"top_p", top_p},
              {"max_output_tokens", max_output > 0 ? Json(max_output) : Json(nullptr)},
              {"metadata", rt.metadata},
              {"parallel_tool_calls", false},
              {"tool_choice", "none"},
              {"tools", Json::array()},
              {"text", {{"format", {{"type", "text"}}}}},
              {"error", error != nullptr ? ErrorObject(*error) : Json(nullptr)},
              {"incomplete_details", nullptr},
              {"usage", nullptr}};
    if (done) {
      const core::TurnUsage& u = finished->usage;
      const uint64_t input = u.history_tokens + u.prompt_tokens;
      const uint64_t cached = rt.new_conversation ? 0 : u.history_tokens;
      r["usage"] = {{"input_tokens", input},
                    {"input_tokens_details", {{"cached_tokens", cached}}},
                    {"output_tokens", u.completion_tokens},
                    {"output_tokens_details", {{"reasoning_tokens", 0}}},
                    {"total_tokens", input + u.completion_tokens}};
      if (finished->finish_reason == core::FinishReason::kMaxTokens) {
        r["incomplete_details"] = {{"reason", "max_output_tokens"}};
      }
      if (rt.store) {
        r["xlstmd"] = {{"session_id", session_id}, {"session_version", finished->session_version}};
      }
    }
    return r;
  };
  bool open = false;
  const auto event = [&](const char* type, Json data) {
    data["type"] = type;
    data["sequence_number"] = seq++;
    return call.res.Write(absl::StrCat("event: ", type, "\ndata: ", DumpJson(data), "\n\n"));
  };
  const auto ensure_open = [&] {
    if (open) return !call.res.failed();
    open = true;
    HttpHeaders h = call.headers;
    h.emplace_back("X-Accel-Buffering", "no");
    if (!call.res.StartStream(200, "text/event-stream; charset=utf-8", h)) return false;
    const Json part = {{"type", "output_text"}, {"text", ""}, {"annotations", Json::array()}};
    return event("response.created", {{"response", response("in_progress", nullptr, nullptr)}}) &&
           event("response.in_progress",
                 {{"response", response("in_progress", nullptr, nullptr)}}) &&
           event("response.output_item.added",
                 {{"output_index", 0},
                  {"item", {{"id", item_id}, {"type", "message"}, {"status", "in_progress"},
                            {"role", "assistant"}, {"content", Json::array()}}}}) &&
           event("response.content_part.added",
                 {{"item_id", item_id}, {"output_index", 0}, {"content_index", 0},
                  {"part", part}});
  };
  std::optional<core::TurnEvent> finished;
  TurnHooks hooks;
  hooks.on_event = [&](const core::TurnEvent& e) {
    switch (e.kind) {
      case core::TurnEvent::Kind::kStarted:
        id = MakeResponseId(session_id, e.base_version + 1);
        return !stream || ensure_open();
      case core::TurnEvent::Kind::kDelta:
        text += e.text;
        if (!stream || e.text.empty()) return true;
        return ensure_open() && event("response.output_text.delta",
                                      {{"item_id", item_id}, {"output_index", 0},
                                       {"content_index", 0}, {"delta", e.text},
                                       {"logprobs", Json::array()}});
      case core::TurnEvent::Kind::kFinished:
        finished = e;
        return true;
    }
    return true;
  };
  if (stream) hooks.heartbeat = [&] { return ensure_open() && call.res.Write(": ping\n\n"); };
  bool gone = false;
  const absl::Status status = RunTurn(call, std::move(turn), hooks, &gone);
  if (gone) return;
  Json final_response;
  if (status.ok() && finished.has_value()) {
    const bool incomplete = finished->finish_reason == core::FinishReason::kMaxTokens;
    final_response = response(incomplete ? "incomplete" : "completed", &*finished, nullptr);
    if (rt.store) StoreResponse(id, final_response);
  }
  if (!stream) {
    if (!status.ok() || !finished.has_value()) {
      return SendError(call, status.ok() ? absl::InternalError("the turn ended without a result")
                                         : status);
    }
    return SendJson(call, 200, final_response);
  }
  if (!open) {
    if (!status.ok()) return SendError(call, status);
    if (!ensure_open()) return;
  }
  if (!status.ok() || !finished.has_value()) {
    const absl::Status err = status.ok() ? absl::InternalError("no result") : status;
    event("response.failed", {{"response", response("failed", nullptr, &err)}});
    return;
  }
  const Json part = {{"type", "output_text"}, {"text", text}, {"annotations", Json::array()}};
  event("response.output_text.done", {{"item_id", item_id}, {"output_index", 0},
                                      {"content_index", 0}, {"text", text},
                                      {"logprobs", Json::array()}}) &&
      event("response.content_part.done",
            {{"item_id", item_id}, {"output_index", 0}, {"content_index", 0}, {"part", part}}) &&
      event("response.output_item.done",
            {{"output_index", 0}, {"item", final_response["output"][0]}}) &&
      event(final_response["status"] == "incomplete" ? "response.incomplete"
                                                     : "response.completed",
            {{"response", final_response}});
}

}  // namespace xlstmd::server::web
