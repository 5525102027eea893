// The session API over HTTP: the gRPC ChatService's shapes as proto3 JSON, turns as SSE.
//
//   POST   /v1/sessions                 {"system_prompt"?}          201 Session
//   GET    /v1/sessions?page_size&page_token                        ListSessionsResponse
//   GET    /v1/sessions/{id}                                        Session
//   DELETE /v1/sessions/{id}                                        {}
//   POST   /v1/sessions/{id}/fork                                   201 Session
//   POST   /v1/sessions/{id}/rewind     {"version"}                 Session
//   POST   /v1/sessions/{id}/turns      ChatRequest without session_id   text/event-stream
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "server/convert.h"
#include "server/web_internal.h"

namespace xlstmd::server::web {
namespace {

namespace pbu = ::google::protobuf::util;

std::string ProtoJson(const google::protobuf::Message& m) {
  std::string out;
  pbu::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  // Serialising our own messages cannot fail.
  (void)pbu::MessageToJsonString(m, &out, o);
  return out;
}

void SendProto(Call& call, int status, const google::protobuf::Message& m) {
  call.res.Send(status, "application/json", ProtoJson(m) + "\n", call.headers);
}

// The body as proto3 JSON of `out` (empty body = the defaults). Unknown fields are refused,
// as a typo should not be silently ignored.
absl::Status ParseProtoBody(const HttpRequest& req, google::protobuf::Message* out) {
  if (req.body.empty()) return absl::OkStatus();
  absl::StatusOr<Json> j = ParseJsonBody(req);  // Content-Type, UTF-8, one object
  if (!j.ok()) return j.status();
  pbu::JsonParseOptions o;
  o.ignore_unknown_fields = false;
  const auto s = pbu::JsonStringToMessage(req.body, out, o);
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the request body does not match ",
                                                   out->GetDescriptor()->name(), ": ",
                                                   std::string(s.message())));
  }
  return absl::OkStatus();
}

bool Method(Call& call, const char* want) {
  if (call.req.method == want) return true;
  MethodNotAllowed(call, want);
  return false;
}

std::string QueryParam(const std::string& query, const std::string& name) {
  for (absl::string_view kv : absl::StrSplit(query, '&')) {
    const size_t eq = kv.find('=');
    if (kv.substr(0, eq) == name) return eq == absl::string_view::npos ? "" : std::string(kv.substr(eq + 1));
  }
  return "";
}

// One SSE event: `event: NAME` and one `data:` line (JSON has no raw newlines).
std::string SseEvent(absl::string_view name, absl::string_view data) {
  return absl::StrCat("event: ", name, "\ndata: ", data, "\n\n");
}

void List(Call& call) {
  int32_t page_size = 0;
  const std::string size = QueryParam(call.req.query, "page_size");
  if (!size.empty() && !absl::SimpleAtoi(size, &page_size)) {
    return SendError(call, absl::InvalidArgumentError("page_size must be an integer"),
                     "page_size");
  }
  absl::StatusOr<v1::ListSessionsResponse> out = ListSessionsPage(
      *call.engine, call.tenant, page_size, QueryParam(call.req.query, "page_token"));
  if (!out.ok()) return SendError(call, out.status());
  SendProto(call, 200, *out);
}

void SendSession(Call& call, int status, const absl::StatusOr<core::SessionInfo>& info) {
  if (!info.ok()) return SendError(call, info.status());
  v1::Session s;
  ToProto(*info, &s);
  SendProto(call, status, s);
}

void Turn(Call& call, const std::string& id) {
  v1::ChatRequest req;
  if (absl::Status s = ParseProtoBody(call.req, &req); !s.ok()) return SendError(call, s);
  if (!req.session_id().empty() && req.session_id() != id) {
    return SendError(call, absl::InvalidArgumentError(
                               "session_id in the body differs from the one in the path"),
                     "session_id");
  }
  req.set_session_id(id);
  absl::StatusOr<core::TurnRequest> turn = ToTurnRequest(req, call.tenant);
  if (!turn.ok()) return SendError(call, turn.status());
  std::optional<StreamSlot> slot;
  if (!TakeStreamSlot(call, &slot)) return;
  // The head goes out with the first event (or heartbeat), so a refusal before any event
  // is still an HTTP error status.
  bool open = false;
  const auto ensure_open = [&] {
    if (open) return !call.res.failed();
    open = true;
    HttpHeaders h = call.headers;
    h.emplace_back("X-Accel-Buffering", "no");  // nginx: do not buffer the stream
    return call.res.StartStream(200, "text/event-stream; charset=utf-8", h);
  };
  v1::ChatEvent proto;
  TurnHooks hooks;
  hooks.on_event = [&](const core::TurnEvent& event) {
    if (!ensure_open()) return false;
    ToProto(event, &proto);
    const char* name = event.kind == core::TurnEvent::Kind::kStarted   ? "started"
                       : event.kind == core::TurnEvent::Kind::kFinished ? "finished"
                                                                       : "delta";
    // The oneof's payload alone: the event name already says which.
    const google::protobuf::Message* payload = &proto;
    if (proto.has_started()) payload = &proto.started();
    if (proto.has_delta()) payload = &proto.delta();
    if (proto.has_finished()) payload = &proto.finished();
    return call.res.Write(SseEvent(name, ProtoJson(*payload)));
  };
  hooks.heartbeat = [&] { return ensure_open() && call.res.Write(": ping\n\n"); };
  bool gone = false;
  const absl::Status status = RunTurn(call, *std::move(turn), hooks, &gone);
  if (gone) return;
  if (!open && !status.ok()) return SendError(call, status);
  if (!status.ok()) {
    const HttpError e = MapStatus(status);
    Json err = {{"code", e.code},
                {"http_status", e.http_status},
                {"message", std::string(status.message())}};
    call.res.Write(SseEvent("error", DumpJson(err)));
  }
}

}  // namespace

void HandleSessions(Call& call, const std::vector<std::string>& parts) {
  // parts: {"sessions"} or {"sessions", id} or {"sessions", id, action}
  if (parts.size() == 1 || (parts.size() == 2 && parts[1].empty())) {
    if (call.req.method == "GET") return List(call);
    if (!Method(call, "POST")) return;
    v1::CreateSessionRequest req;
    if (absl::Status s = ParseProtoBody(call.req, &req); !s.ok()) return SendError(call, s);
    return SendSession(call, 201, CreateSessionSync(call, req.system_prompt()));
  }
  const std::string& id = parts[1];
  if (absl::Status s = ValidateSessionId(id); !s.ok()) return SendError(call, s, "session_id");
  if (const std::string* h = call.req.header("x-session-id"); h != nullptr && *h != id) {
    // What a ring-hash proxy routes on (docs/deploy.md) must name the session of the path.
    return SendError(call,
                     absl::InvalidArgumentError(
                         "the X-Session-Id header names another session than the request path"),
                     "session_id");
  }
  if (parts.size() == 2) {
    if (call.req.method == "GET") return SendSession(call, 200, LookupSessionSync(call, id));
    if (!Method(call, "DELETE")) return;
    const absl::Status s = DeleteSessionSync(call, id);
    if (!s.ok()) return SendError(call, s);
    return SendJson(call, 200, Json::object());
  }
  if (parts.size() != 3) return SendError(call, absl::NotFoundError("no such endpoint"));
  const std::string& action = parts[2];
  if (action == "turns") {
    if (!Method(call, "POST")) return;
    return Turn(call, id);
  }
  if (action == "fork") {
    if (!Method(call, "POST")) return;
    v1::ForkSessionRequest req;
    if (absl::Status s = ParseProtoBody(call.req, &req); !s.ok()) return SendError(call, s);
    return SendSession(call, 201,
                       ForkSessionSync(call, id, req.has_version()
                                                     ? std::optional<uint64_t>(req.version())
                                                     : std::nullopt));
  }
  if (action == "rewind") {
    if (!Method(call, "POST")) return;
    v1::RewindSessionRequest req;
    if (absl::Status s = ParseProtoBody(call.req, &req); !s.ok()) return SendError(call, s);
    return SendSession(call, 200, RewindSessionSync(call, id, req.version()));
  }
  SendError(call, absl::NotFoundError(absl::StrCat("no such session action: ", action)));
}

}  // namespace xlstmd::server::web
