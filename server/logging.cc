#include "server/logging.h"

#include <openssl/evp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "core/base/log_id.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/utf8.h"
#include "google/protobuf/stubs/logging.h"
#include "grpc/support/log.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace xlstmd::server {
namespace {

constexpr char kTextPattern[] = "%Y-%m-%dT%H:%M:%S.%e %* %v";

// The structured line being logged on this thread, and the payload it was logged with (the
// formatter only uses it for that exact message, never for another one logged meanwhile).
struct PendingLine {
  const char* payload = nullptr;
  const LogLine* line = nullptr;
};
thread_local PendingLine t_pending;

bool NeedsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= ' ' || c == '"' || c == '=' || c == '\\' || u == 0x7f) return true;
  }
  return false;
}

// Appends `c` escaped for a quoted value: the five common escapes by name, other control
// bytes with `control_format` (\xNN in text, \u00NN in JSON).
void AppendEscaped(std::string* out, char c, const absl::FormatSpec<unsigned>& control_format) {
  const auto u = static_cast<unsigned char>(c);
  switch (c) {
    case '"':
      *out += "\\\"";
      return;
    case '\\':
      *out += "\\\\";
      return;
    case '\n':
      *out += "\\n";
      return;
    case '\r':
      *out += "\\r";
      return;
    case '\t':
      *out += "\\t";
      return;
    default:
      if (u < 0x20 || u == 0x7f) {
        *out += absl::StrFormat(control_format, static_cast<unsigned>(u));
      } else {
        *out += c;
      }
  }
}

// A text-mode value: quoted (with escapes) only when it must be, so the common case stays
// readable and a value can never forge another field or a second line.
std::string TextValue(std::string_view v, bool quote) {
  if (!quote) return std::string(v);
  std::string out = "\"";
  for (char c : v) AppendEscaped(&out, c, "\\x%02x");
  out += '"';
  return out;
}

// The names --log-level takes: spdlog's own name for `warn` is "warning", so a user who set
// --log-level warn would grep for a word the log never contains.
std::string LevelName(spdlog::level::level_enum level) {
  if (level == spdlog::level::warn) return "warn";
  const spdlog::string_view_t name = spdlog::level::to_string_view(level);
  return std::string(name.data(), name.size());
}

// `%*` in the text pattern: LevelName.
class LevelFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string name = LevelName(msg.level);
    dest.append(name.data(), name.data() + name.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<LevelFlag>();
  }
};

// {"ts":...,"level":...,"msg":...} per line; a structured line's fields follow "msg".
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto t = spdlog::log_clock::to_time_t(msg.time);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()) % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char ts[96];  // room for any int the compiler cannot rule out
    std::snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms.count()));
    std::string out =
        absl::StrCat("{\"ts\":\"", ts, "\",\"level\":\"", LevelName(msg.level), "\",");
    if (t_pending.line != nullptr && t_pending.payload == msg.payload.data()) {
      out += t_pending.line->JsonMembers();
    } else {
      absl::StrAppend(
          &out, "\"msg\":", JsonQuote(std::string_view(msg.payload.data(), msg.payload.size())));
    }
    out += "}\n";
    dest.append(out.data(), out.data() + out.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

spdlog::level::level_enum GrpcLevel(gpr_log_severity s) {
  switch (s) {
    case GPR_LOG_SEVERITY_DEBUG:
      return spdlog::level::debug;
    case GPR_LOG_SEVERITY_INFO:
      return spdlog::level::info;
    case GPR_LOG_SEVERITY_ERROR:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::atomic<int64_t> g_grpc_accept_failures{0};

void GrpcLogToSpdlog(gpr_log_func_args* args) {
  // gRPC 1.51 abandons a listening socket after this error (listener_watch.h).
  if (args->message != nullptr && std::strncmp(args->message, "Failed accept4", 14) == 0) {
    g_grpc_accept_failures.fetch_add(1, std::memory_order_relaxed);
  }
  spdlog::level::level_enum level = GrpcLevel(args->severity);
  // A port that cannot be bound: the daemon reports it itself, in one line naming --listen;
  // gRPC's own long internal status would only come first and bury it.
  if (args->message != nullptr && std::strstr(args->message, "No address added out of total")) {
    level = spdlog::level::debug;
  }
  LogLine("grpc")
      .Add("message", args->message == nullptr ? "" : args->message)
      .Add("source", absl::StrCat(args->file == nullptr ? "?" : args->file, ":", args->line))
      .Log(level);
}

// After TearDownLogging: plain stderr, nothing that a static destructor may have freed.
void GrpcLogToStderr(gpr_log_func_args* args) {
  std::fprintf(stderr, "grpc: %s\n", args->message == nullptr ? "" : args->message);
}

void ProtobufLogToSpdlog(google::protobuf::LogLevel level, const char* filename, int line,
                         const std::string& message) {
  spdlog::level::level_enum l = spdlog::level::info;
  if (level == google::protobuf::LOGLEVEL_WARNING) l = spdlog::level::warn;
  if (level >= google::protobuf::LOGLEVEL_ERROR) l = spdlog::level::err;
  LogLine("protobuf")
      .Add("message", message)
      .Add("source", absl::StrCat(filename == nullptr ? "?" : filename, ":", line))
      .Log(l);
}

}  // namespace

LogFormat ParseLogFormat(std::string_view name) {
  return name == "json" ? LogFormat::kJson : LogFormat::kText;
}

std::unique_ptr<spdlog::formatter> NewLogFormatter(LogFormat format) {
  if (format == LogFormat::kJson) return std::make_unique<JsonFormatter>();
  auto text = std::make_unique<spdlog::pattern_formatter>();
  text->add_flag<LevelFlag>('*').set_pattern(kTextPattern);
  return text;
}

void TearDownLogging() {
  gpr_set_log_function(GrpcLogToStderr);
  google::protobuf::SetLogHandler(nullptr);
  spdlog::shutdown();
}

int64_t GrpcAcceptFailuresLogged() {
  return g_grpc_accept_failures.load(std::memory_order_relaxed);
}

void SetUpLogging(const std::string& level, LogFormat format) {
  auto logger = spdlog::stderr_logger_mt("xlstmd");
  logger->set_formatter(NewLogFormatter(format));
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::flush_on(spdlog::level::trace);
  gpr_set_log_function(GrpcLogToSpdlog);
  google::protobuf::SetLogHandler(ProtobufLogToSpdlog);
  // The engine's own lines name sessions by the same hash as the turn lines.
  base::SetSessionIdHasher(&HashSessionId);
}

// ---------------- LogLine ----------------

LogLine& LogLine::Add(std::string_view key, std::string_view value) {
  std::string v = core::Utf8Lossy(value);
  Field f{std::string(key), v, JsonQuote(v), NeedsQuotes(v)};
  fields_.push_back(std::move(f));
  return *this;
}

LogLine& LogLine::Add(std::string_view key, int64_t value) {
  const std::string v = absl::StrCat(value);
  fields_.push_back({std::string(key), v, v, false});
  return *this;
}

LogLine& LogLine::Add(std::string_view key, uint64_t value) {
  const std::string v = absl::StrCat(value);
  fields_.push_back({std::string(key), v, v, false});
  return *this;
}

LogLine& LogLine::AddMs(std::string_view key, double ms) {
  // JSON has no NaN or infinity; a clock oddity must not produce an invalid line.
  const std::string v = std::isfinite(ms) ? absl::StrFormat("%.1f", ms) : "0";
  fields_.push_back({std::string(key), v, v, false});
  return *this;
}

LogLine& LogLine::Add(std::string_view key, bool value) {
  const std::string v = value ? "true" : "false";
  fields_.push_back({std::string(key), v, v, false});
  return *this;
}

std::string LogLine::Text() const {
  std::string out = event_;
  for (const Field& f : fields_) {
    absl::StrAppend(&out, " ", f.key, "=", TextValue(f.text, f.quote_in_text));
  }
  return out;
}

std::string LogLine::JsonMembers() const {
  std::string out = absl::StrCat("\"msg\":", JsonQuote(event_));
  for (const Field& f : fields_) absl::StrAppend(&out, ",", JsonQuote(f.key), ":", f.json);
  return out;
}

void LogLine::Log(spdlog::level::level_enum level) const {
  spdlog::logger* logger = spdlog::default_logger_raw();
  if (logger == nullptr || !logger->should_log(level)) return;
  const std::string text = Text();
  const PendingLine saved = t_pending;
  t_pending = {text.data(), this};
  // The string_view overload logs the payload as is (no format pass), so the formatter sees
  // exactly `text.data()`.
  logger->log(level, spdlog::string_view_t(text.data(), text.size()));
  t_pending = saved;
}

// ---------------- helpers ----------------

std::string JsonQuote(std::string_view s) {
  const std::string valid = core::Utf8Lossy(s);
  std::string out;
  out.reserve(valid.size() + 2);
  out += '"';
  for (char c : valid) AppendEscaped(&out, c, "\\u%04x");
  out += '"';
  return out;
}

std::string HashSessionId(std::string_view session_id) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  // EVP_Digest cannot fail for SHA-256 on in-memory data short of memory exhaustion; the
  // fallback keeps the raw id out of the log even then.
  if (EVP_Digest(session_id.data(), session_id.size(), digest, &len, EVP_sha256(), nullptr) != 1 ||
      len < 8) {
    return "unhashable";
  }
  std::string out;
  for (unsigned int i = 0; i < 8; ++i) out += absl::StrFormat("%02x", digest[i]);
  return out;
}

}  // namespace xlstmd::server
