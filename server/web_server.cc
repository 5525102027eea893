#include "server/web_server.h"

#include <atomic>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/base/random.h"
#include "core/base/retry.h"
#include "server/convert.h"
#include "server/http_listener.h"
#include "server/web_internal.h"
#include "server/web_page.h"

namespace xlstmd::server {
namespace {
constexpr absl::string_view kText = "text/plain; charset=utf-8";
}  // namespace

namespace web {

int64_t UnixNow() { return absl::ToUnixSeconds(absl::Now()); }

std::string NewId(const std::string& prefix) {
  constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  unsigned char bytes[24];
  base::RandomBytes(bytes, sizeof(bytes));
  std::string id = prefix;
  for (unsigned char b : bytes) id += kAlphabet[b % 36];
  return id;
}

absl::Status WithHttpStatus(absl::Status status, int http_status) {
  status.SetPayload(kHttpStatusPayloadUrl, absl::Cord(std::to_string(http_status)));
  return status;
}

HttpError MapStatus(const absl::Status& status) {
  HttpError e;
  std::string code = absl::StatusCodeToString(status.code());
  absl::AsciiStrToLower(&code);
  e.code = code;
  switch (status.code()) {
    case absl::StatusCode::kOk:
      e.http_status = 200;
      break;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      e.http_status = 400;
      e.type = "invalid_request_error";
      break;
    case absl::StatusCode::kUnauthenticated:
      e.http_status = 401;
      e.type = "authentication_error";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.http_status = 403;
      e.type = "permission_error";
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      e.type = "not_found_error";
      break;
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kAlreadyExists:
      e.http_status = 409;
      e.type = "conflict_error";
      e.should_not_retry = true;
      break;
    case absl::StatusCode::kResourceExhausted:
      // Capacity (come back later) or a request over a limit (never fits): decided by the
      // payload the refusal carries, never by its text.
      if (base::IsCapacityError(status)) {
        e.http_status = 429;
        e.type = "rate_limit_error";
        e.retry_after = true;
      } else {
        e.http_status = 400;
        e.type = "invalid_request_error";
      }
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 503;
      e.type = "service_unavailable_error";
      e.retry_after = true;
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.http_status = 504;
      e.type = "timeout_error";
      break;
    case absl::StatusCode::kCancelled:
      e.http_status = 499;
      e.type = "cancelled_error";
      break;
    default:  // INTERNAL, DATA_LOSS, UNKNOWN, UNIMPLEMENTED
      e.http_status = status.code() == absl::StatusCode::kUnimplemented ? 501 : 500;
      e.type = "server_error";
      break;
  }
  // An HTTP-only refusal (415, 405) says its status itself.
  if (auto http = status.GetPayload(kHttpStatusPayloadUrl); http.has_value()) {
    int n = 0;
    if (absl::SimpleAtoi(std::string(*http), &n) && n >= 400 && n < 600) e.http_status = n;
  }
  return e;
}

Json ErrorObject(const absl::Status& status, const std::string& param) {
  const HttpError e = MapStatus(status);
  Json err = {{"message", std::string(status.message())},
              {"type", e.type},
              {"param", param.empty() ? Json(nullptr) : Json(param)},
              {"code", e.code}};
  return err;
}

std::string DumpJson(const Json& j) {
  // Replace, never throw: every string the server builds is UTF-8 already.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

void SendJson(Call& call, int status, const Json& body, HttpHeaders extra) {
  HttpHeaders headers = call.headers;
  headers.insert(headers.end(), extra.begin(), extra.end());
  call.res.Send(status, "application/json", DumpJson(body) + "\n", headers);
}

void SendError(Call& call, const absl::Status& status, const std::string& param) {
  const HttpError e = MapStatus(status);
  HttpHeaders extra;
  if (e.retry_after) {
    const std::string reason = base::CapacityReason(status);
    const int64_t ms = reason.empty() ? 1000 : RetryDelayMs(reason);
    extra.emplace_back("Retry-After", std::to_string((ms + 999) / 1000));
    if (!reason.empty()) {
      if (ServerMetrics* m = call.state->observability().metrics) m->OnShed(reason);
    }
  }
  if (e.should_not_retry) extra.emplace_back("x-should-retry", "false");
  if (e.http_status == 401) extra.emplace_back("WWW-Authenticate", "Bearer realm=\"xlstmd\"");
  SendJson(call, e.http_status, Json{{"error", ErrorObject(status, param)}}, std::move(extra));
}

void MethodNotAllowed(Call& call, const char* allow) {
  SendJson(call, 405,
           Json{{"error", ErrorObject(WithHttpStatus(absl::InvalidArgumentError(absl::StrCat(
                                                         "method not allowed; use ", allow)),
                                                     405))}},
           {{"Allow", allow}});
}

absl::StatusOr<Json> ParseJsonBody(const HttpRequest& req) {
  const std::string* type = req.header("content-type");
  std::string media = type == nullptr ? "" : std::string(absl::StripAsciiWhitespace(
                                                 absl::string_view(*type).substr(0, type->find(';'))));
  absl::AsciiStrToLower(&media);
  if (media != "application/json") {
    return WithHttpStatus(absl::InvalidArgumentError(
                              "the request body must be JSON (Content-Type: application/json)"),
                          415);
  }
  Json j = Json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(
        "the request body is not valid JSON (or holds invalid UTF-8)");
  }
  if (!j.is_object()) return absl::InvalidArgumentError("the request body must be a JSON object");
  return j;
}

StreamSlot::StreamSlot(Call& call) : call_(call) {
  const int64_t n = call.open_streams->fetch_add(1, std::memory_order_acq_rel);
  ok_ = n < call.config->max_streams;
  if (!ok_) {
    call.open_streams->fetch_sub(1, std::memory_order_acq_rel);
    return;
  }
  if (ServerMetrics* m = call.state->observability().metrics) m->OnWebStreamOpen(1);
}

bool TakeStreamSlot(Call& call, std::optional<StreamSlot>* slot) {
  slot->emplace(call);
  if ((*slot)->ok()) return true;
  SendError(call, base::CapacityError(absl::StrCat("too many open web streams (--web-max-streams ",
                                                   call.config->max_streams, "); retry later"),
                                      base::kShedStreams));
  return false;
}

StreamSlot::~StreamSlot() {
  if (!ok_) return;
  call_.open_streams->fetch_sub(1, std::memory_order_acq_rel);
  if (ServerMetrics* m = call_.state->observability().metrics) m->OnWebStreamOpen(-1);
}

namespace {

bool IsApiPath(const std::string& path) { return absl::StartsWith(path, "/v1/"); }

}  // namespace
}  // namespace web

using web::Call;
using web::Json;

class WebServer::Impl {
 public:
  Impl(const ServingState* state, web::WebConfig config)
      : state_(state), config_(std::move(config)) {}

  absl::Status Start(const ServerOptions& options, const TlsFiles& tls) {
    HttpListenerOptions o;
    o.name = "web";
    o.max_connections = static_cast<int>(options.web_threads);
    o.request_timeout = absl::Seconds(30);
    o.idle_timeout = absl::Seconds(30);
    o.write_timeout = absl::Seconds(30);
    o.limits.max_header_bytes = 32 << 10;
    o.limits.max_headers = 100;
    o.limits.max_body_bytes = static_cast<size_t>(options.web_max_body_bytes);
    if (tls.enabled()) {
      absl::StatusOr<std::shared_ptr<HttpTlsContext>> ctx =
          HttpTlsContext::Create(tls.cert_path, tls.key_path, tls.client_ca_path);
      if (!ctx.ok()) return ctx.status();
      o.tls = *std::move(ctx);
    }
    absl::StatusOr<std::unique_ptr<HttpListener>> l = HttpListener::Start(
        options.web_listen, std::move(o),
        [this](const HttpRequest& req, HttpResponse& res) { Handle(req, res); });
    if (!l.ok()) return l.status();
    listener_ = *std::move(l);
    return absl::OkStatus();
  }

  void Stop(absl::Duration grace) {
    if (listener_ != nullptr) listener_->Stop(grace);
  }
  const std::string& address() const { return listener_->address(); }
  int port() const { return listener_->port(); }
  int64_t open_streams() const { return open_streams_.load(std::memory_order_acquire); }

 private:
  void Handle(const HttpRequest& req, HttpResponse& res) {
    Call call{req, res, state_, &config_, &open_streams_, std::string(), nullptr, HttpHeaders(),
              nullptr, "other"};
    call.headers = {{"X-Content-Type-Options", "nosniff"}, {"Cache-Control", "no-store"}};
    if (!AddCors(call)) return;
    Route(call);
    if (ServerMetrics* m = state_->observability().metrics) {
      m->OnWebRequest(call.route, res.status());
    }
  }

  // CORS for the configured origins only: the API carries keys and conversations, so never
  // '*'. False when the request was a preflight (answered here).
  bool AddCors(Call& call) {
    const std::string* origin = call.req.header("origin");
    if (origin == nullptr) return true;
    bool allowed = false;
    for (const std::string& o : config_.cors_origins) allowed = allowed || o == *origin;
    const bool preflight = call.req.method == "OPTIONS";
    if (allowed) {
      call.headers.emplace_back("Access-Control-Allow-Origin", *origin);
      call.headers.emplace_back("Vary", "Origin");
      call.headers.emplace_back("Access-Control-Expose-Headers",
                                "X-Session-Id, X-Session-Version, Retry-After");
    }
    if (!preflight) return true;
    call.route = "preflight";
    if (!allowed) {
      call.res.Send(403, kText, "origin not allowed (--web-cors-origins)\n", call.headers);
      return false;
    }
    HttpHeaders h = call.headers;
    h.emplace_back("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
    h.emplace_back("Access-Control-Allow-Headers",
                   "Authorization, Content-Type, X-Session-Id, Idempotency-Key");
    h.emplace_back("Access-Control-Max-Age", "600");
    call.res.Send(204, "", "", h);
    if (ServerMetrics* m = state_->observability().metrics) m->OnWebRequest("preflight", 204);
    return false;
  }

  void Route(Call& call) {
    const std::string& path = call.req.path;
    if (!web::IsApiPath(path)) {
      call.route = "ui";
      ServePage(call);
      return;
    }
    // Authenticate first, so an unauthenticated caller learns nothing.
    std::vector<absl::string_view> authorization;
    if (state_->auth().enabled()) {
      for (const auto& [name, value] : call.req.headers) {
        if (name == "authorization") authorization.emplace_back(value);
      }
    }
    absl::StatusOr<std::string> who = state_->auth().Authenticate(authorization);
    if (!who.ok()) {
      call.route = "unauthenticated";
      web::SendError(call, who.status());
      return;
    }
    call.tenant = *std::move(who);
    call.engine = state_->engine();
    std::vector<std::string> parts = absl::StrSplit(path.substr(4), '/');
    const std::string& top = parts[0];
    if (call.engine == nullptr) {
      web::SendError(call, absl::UnavailableError("model loading; retry shortly"));
      return;
    }
    if (state_->refusing() || call.res.stopping()) {
      web::SendError(call, absl::UnavailableError("server shutting down; retry on another replica"));
      return;
    }
    if (top == "models") {
      call.route = "models";
      web::HandleModels(call);
    } else if (top == "chat" && parts.size() == 2 && parts[1] == "completions") {
      call.route = "chat_completions";
      if (call.req.method != "POST") return web::MethodNotAllowed(call, "POST");
      web::HandleChatCompletions(call);
    } else if (top == "responses") {
      call.route = "responses";
      web::HandleResponses(call, parts);
    } else if (top == "sessions") {
      call.route = parts.size() >= 3 && parts[2] == "turns" ? "session_turns" : "sessions";
      web::HandleSessions(call, parts);
    } else {
      web::SendError(call, absl::NotFoundError(absl::StrCat("no such endpoint: ", path)));
    }
  }

  void ServePage(Call& call) {
    // Browsers ask for an icon on their own; an empty answer keeps a 404 out of the console.
    if (config_.ui && call.req.path == "/favicon.ico") {
      call.res.Send(204, "", "", call.headers);
      return;
    }
    const std::string path = call.req.path == "/" ? "/index.html" : call.req.path;
    std::optional<std::string_view> asset = FindWebAsset(path);
    if (!config_.ui || !asset.has_value()) {
      call.res.Send(404, kText, "not found\n", call.headers);
      return;
    }
    if (call.req.method != "GET" && call.req.method != "HEAD") {
      HttpHeaders h = call.headers;
      h.emplace_back("Allow", "GET, HEAD");
      call.res.Send(405, kText, "method not allowed\n", h);
      return;
    }
    HttpHeaders h = call.headers;
    // The page needs nothing from anywhere else (its script and style are files served
    // from here, never inline), so 'self' alone.
    h.emplace_back("Content-Security-Policy",
                   "default-src 'self'; script-src 'self'; style-src 'self'; "
                   "connect-src 'self'; img-src 'self'; frame-ancestors 'none'; "
                   "base-uri 'none'; form-action 'none'");
    h.emplace_back("Referrer-Policy", "no-referrer");
    const char* type = absl::EndsWith(path, ".js")    ? "text/javascript; charset=utf-8"
                       : absl::EndsWith(path, ".css") ? "text/css; charset=utf-8"
                                                      : "text/html; charset=utf-8";
    call.res.Send(200, type, absl::string_view(asset->data(), asset->size()), h);
  }

  const ServingState* state_;
  const web::WebConfig config_;
  std::atomic<int64_t> open_streams_{0};
  std::unique_ptr<HttpListener> listener_;
};

absl::StatusOr<std::unique_ptr<WebServer>> WebServer::Start(const ServerOptions& options,
                                                            const TlsFiles& tls,
                                                            const ServingState* state) {
  web::WebConfig config;
  config.max_streams = options.web_max_streams;
  config.heartbeat = absl::Seconds(options.web_heartbeat_s);
  config.ui = !options.no_web_ui;
  for (absl::string_view o : absl::StrSplit(options.web_cors_origins, ',', absl::SkipEmpty())) {
    config.cors_origins.emplace_back(absl::StripAsciiWhitespace(o));
  }
  auto impl = std::make_unique<Impl>(state, std::move(config));
  if (absl::Status s = impl->Start(options, tls); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("--web-listen: ", s.message()));
  }
  return std::unique_ptr<WebServer>(new WebServer(std::move(impl)));
}

WebServer::WebServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WebServer::~WebServer() { impl_->Stop(absl::ZeroDuration()); }
const std::string& WebServer::address() const { return impl_->address(); }
int WebServer::port() const { return impl_->port(); }
int64_t WebServer::open_streams() const { return impl_->open_streams(); }
void WebServer::Stop(absl::Duration grace) { impl_->Stop(grace); }

}  // namespace xlstmd::server
