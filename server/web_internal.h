// Internals shared by the web listener's parts (web_server.cc: routing, auth, errors, CORS,
// the page; web_turn.cc: running a turn for an HTTP response; web_sessions.cc,
// web_openai.cc, web_responses.cc: the APIs). Not for use outside server/web_*.cc.
#ifndef XLSTMD_SERVER_WEB_INTERNAL_H_
#define XLSTMD_SERVER_WEB_INTERNAL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/engine/engine.h"
#include "nlohmann/json.hpp"
#include "server/http_listener.h"
#include "server/services.h"

namespace xlstmd::server::web {

using Json = nlohmann::json;

struct WebConfig {
  int64_t max_streams = 128;
  std::vector<std::string> cors_origins;
  absl::Duration heartbeat = absl::Seconds(15);
  bool ui = true;
};

// How one gRPC-style status is answered over HTTP (the one table; docs/web.md).
struct HttpError {
  int http_status = 500;
  std::string type;  // OpenAI error type
  std::string code;  // the gRPC code's name, lower-case
  bool retry_after = false;    // capacity or unavailable: Retry-After: 1
  bool should_not_retry = false;  // 409: x-should-retry: false
};
HttpError MapStatus(const absl::Status& status);
// A refusal only HTTP has a status for (415 wrong Content-Type, 405 wrong method): the code
// stays a gRPC one (INVALID_ARGUMENT), the HTTP status rides in a payload.
inline constexpr char kHttpStatusPayloadUrl[] = "type.xlstmd.dev/http-status";
absl::Status WithHttpStatus(absl::Status status, int http_status);

// The OpenAI-shaped error object {"message", "type", "param", "code"}.
Json ErrorObject(const absl::Status& status, const std::string& param = "");

// What every handler gets: the request, the response, who is calling, the engine.
struct Call {
  const HttpRequest& req;
  HttpResponse& res;
  const ServingState* state;
  const WebConfig* config;
  std::atomic<int64_t>* open_streams;
  std::string tenant;
  core::Engine* engine = nullptr;
  HttpHeaders headers;  // added to every response (CORS, security)
  // Runs once the turn is over and before the reply's last bytes go out (a temporary
  // session is deleted there, so a client that has read the reply never sees it).
  std::function<void()> after_turn;
  std::string route = "other";  // the metrics label
};

void SendJson(Call& call, int status, const Json& body, HttpHeaders extra = {});
// 405 with `Allow: allow` and the usual error body.
void MethodNotAllowed(Call& call, const char* allow);
// An error response for `status` (its mapped HTTP status and headers).
void SendError(Call& call, const absl::Status& status, const std::string& param = "");

// The request body as a JSON object: 415 unless Content-Type is application/json, 400 for
// anything that is not one object (or invalid UTF-8).
absl::StatusOr<Json> ParseJsonBody(const HttpRequest& req);
std::string DumpJson(const Json& j);

// Runs a turn on the connection's thread, handing each event to `on_event` (false = the
// client is gone: the turn is cancelled and rolled back). Returns the turn's final status; a
// refusal before any event (StartTurn's, or a Redis lookup's) comes back without `on_event`
// having run. `heartbeat` (may be empty) is called every config->heartbeat while no event
// comes; false = the client is gone. The client's departure is also noticed between events
// (HttpResponse::PeerGone), so a queued turn is cancelled too.
struct TurnHooks {
  std::function<bool(const core::TurnEvent&)> on_event;
  std::function<bool()> heartbeat;
};
absl::Status RunTurn(Call& call, core::TurnRequest request, const TurnHooks& hooks,
                     bool* client_gone);

// Takes one of --web-max-streams; false when all are open (answer 429). Released by the
// destructor.
class StreamSlot;
// Takes a stream slot into `slot`, or answers 429 and returns false.
bool TakeStreamSlot(Call& call, std::optional<StreamSlot>* slot);

class StreamSlot {
 public:
  explicit StreamSlot(Call& call);
  ~StreamSlot();
  bool ok() const { return ok_; }

 private:
  Call& call_;
  bool ok_ = false;
};

// Engine session commands, waited for on the connection thread.
absl::StatusOr<core::SessionInfo> CreateSessionSync(Call& call, std::string system_prompt);
absl::Status DeleteSessionSync(Call& call, const std::string& id);
absl::StatusOr<core::SessionInfo> LookupSessionSync(Call& call, const std::string& id);
absl::StatusOr<core::SessionInfo> ForkSessionSync(Call& call, const std::string& id,
                                                  std::optional<uint64_t> version = std::nullopt);
absl::StatusOr<core::SessionInfo> RewindSessionSync(Call& call, const std::string& id,
                                                    uint64_t version);

// Sampling fields shared by the OpenAI shapes: fills `out` from body fields (temperature,
// top_p, seed, stop, max_tokens..., and xlstmd's extras top_k, min_p, repetition_penalty).
// INVALID_ARGUMENT naming the field for a wrong type.
absl::Status ReadSampling(const Json& body, const char* max_tokens_field, core::SamplingConfig* out,
                          std::string* bad_param);

// OpenAI shapes shared by chat completions and responses.
const char* OpenAiFinishReason(core::FinishReason reason);
// usage: prompt_tokens counts the history too (what a stateless server would have read),
// with prompt_tokens_details.cached_tokens the part that was not re-read.
Json Usage(const core::TurnUsage& usage);
// choices[].logprobs of one delta event.
Json LogprobsJson(const core::Tokenizer& tokenizer, const core::TurnEvent& event);
// Runs `turn` and answers in the chat-completions shape, streamed (SSE chunks, [DONE]) or
// whole. `report_session`: the reply names the session and its new version.
void RunChatCompletion(Call& call, core::TurnRequest turn, bool stream, bool include_usage,
                       bool report_session);

// The Responses API's turn: what the response object repeats from the request.
struct ResponseTurn {
  // A new conversation: its instructions were prefilled by this request, so nothing counts
  // as cached.
  bool new_conversation = false;
  std::string previous;
  std::string instructions;
  bool store = true;
  Json metadata;
};
void RunResponse(Call& call, core::TurnRequest turn, bool stream, const ResponseTurn& rt);
void StoreResponse(const std::string& id, const Json& response);
std::string MakeResponseId(const std::string& session_id, uint64_t version);

// The APIs.
void HandleSessions(Call& call, const std::vector<std::string>& parts);
void HandleChatCompletions(Call& call);
void HandleModels(Call& call);
void HandleResponses(Call& call, const std::vector<std::string>& parts);

// Unix seconds now (the OpenAI `created` fields).
int64_t UnixNow();
// A fresh id with `prefix` ("chatcmpl-", ...).
std::string NewId(const std::string& prefix);

}  // namespace xlstmd::server::web

#endif  // XLSTMD_SERVER_WEB_INTERNAL_H_
