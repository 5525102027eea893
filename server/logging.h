// The daemon's logging: spdlog on stderr in one of two formats, and structured lines (an
// event name plus fields) that both formats render properly.
//
//   text: 2024-05-01T12:00:00.123 info turn session=3f9c1e6d2b7a4c58 tokens_in=12 code=OK
//   json: {"ts":"2024-05-01T12:00:00.123Z","level":"info","msg":"turn","session":"3f9c...",...}
//
// In json mode every line on stderr is one JSON object (valid UTF-8, properly escaped): the
// log output of gRPC and protobuf is routed through the same logger. Plain spdlog calls
// elsewhere become {"ts","level","msg"}.
//
// Structured lines reach the JSON formatter through a thread-local set around the logging
// call, which works because the daemon's logger is synchronous (it formats on the caller's
// thread). Threading: SetUpLogging once from main before other threads log; the rest from
// any thread.
#ifndef XLSTMD_SERVER_LOGGING_H_
#define XLSTMD_SERVER_LOGGING_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "spdlog/formatter.h"
#include "spdlog/spdlog.h"

namespace xlstmd::server {

enum class LogFormat { kText, kJson };

// "text" or "json" (what --log-format accepts); anything else is text.
LogFormat ParseLogFormat(std::string_view name);

// Installs the "xlstmd" stderr logger as spdlog's default, at `level` (an spdlog level name)
// in `format`, and routes gRPC's and protobuf's own log output into it.
// Hands gRPC's and protobuf's logging back to their defaults before exit, so a library thread
// that logs during static destruction never reaches a destroyed spdlog registry.
void TearDownLogging();
void SetUpLogging(const std::string& level, LogFormat format);
// "Failed accept4" messages gRPC logged through SetUpLogging's handler so far (each means a
// listening socket gRPC 1.51 no longer serves; listener_watch.h).
int64_t GrpcAcceptFailuresLogged();

// The formatters SetUpLogging installs (tests use them on their own sinks).
std::unique_ptr<spdlog::formatter> NewLogFormatter(LogFormat format);

// One structured log line. Field order is kept.
class LogLine {
 public:
  explicit LogLine(std::string event) : event_(std::move(event)) {}

  LogLine& Add(std::string_view key, std::string_view value);
  LogLine& Add(std::string_view key, const char* value) {
    return Add(key, std::string_view(value));
  }
  LogLine& Add(std::string_view key, int64_t value);
  LogLine& Add(std::string_view key, uint64_t value);
  LogLine& Add(std::string_view key, int value) { return Add(key, static_cast<int64_t>(value)); }
  LogLine& Add(std::string_view key, uint32_t value) {
    return Add(key, static_cast<uint64_t>(value));
  }
  // Rounded to 0.1 (milliseconds to a tenth are plenty for a log line).
  LogLine& AddMs(std::string_view key, double ms);
  LogLine& Add(std::string_view key, bool value);

  // `event key=value ...`, values quoted and escaped where needed (logfmt).
  std::string Text() const;
  // `"msg":"event","key":value,...` (the members of the JSON object, without braces).
  std::string JsonMembers() const;

  // Logs the line to the default logger at `level` (nothing when the level is off).
  void Log(spdlog::level::level_enum level) const;

 private:
  struct Field {
    std::string key;
    std::string text;  // as written in text mode, unquoted
    std::string json;  // as written in JSON: a quoted string, a number or a boolean
    bool quote_in_text = false;
  };
  std::string event_;
  std::vector<Field> fields_;
};

// `s` as a JSON string literal, quotes included; invalid UTF-8 becomes U+FFFD.
std::string JsonQuote(std::string_view s);

// What log lines show instead of a session id: the first 16 hex digits of SHA-256(id).
// Stable across restarts and replicas (an operator who knows an id can find its lines), but
// an id cannot be recovered from it (ids are 128 random bits).
std::string HashSessionId(std::string_view session_id);

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_LOGGING_H_
