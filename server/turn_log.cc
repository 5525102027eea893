#include "server/turn_log.h"

#include "absl/strings/str_replace.h"
#include "server/metrics.h"

namespace xlstmd::server {

void AddCommittedTurn(LogLine& line, const core::TurnEvent& finished) {
  const core::TurnUsage& u = finished.usage;
  line.Add("finish", ServerMetrics::FinishReasonName(finished.finish_reason))
      .Add("tokens_in", u.prompt_tokens)
      .Add("tokens_out", u.completion_tokens)
      .Add("history_tokens", u.history_tokens)
      .AddMs("ttft_ms", u.first_token_ms)
      .AddMs("queue_ms", u.queue_ms)
      .AddMs("prefill_ms", u.prefill_ms)
      .AddMs("duration_ms", u.total_ms)
      .Add("version", finished.session_version);
}

void AddTurnError(LogLine& line, const absl::Status& status, const std::string& session_id) {
  if (status.ok()) return;
  std::string error(status.message());
  if (!session_id.empty()) {
    error = absl::StrReplaceAll(error, {{session_id, HashSessionId(session_id)}});
  }
  line.Add("error", error);
}

void LogTurnLine(const LogLine& line, absl::StatusCode code) {
  const bool server_fault = code == absl::StatusCode::kInternal ||
                            code == absl::StatusCode::kDataLoss ||
                            code == absl::StatusCode::kUnknown;
  line.Log(server_fault ? spdlog::level::warn : spdlog::level::info);
}

}  // namespace xlstmd::server
