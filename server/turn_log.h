// The per-turn `turn` log line's shared parts (docs/observability.md), written by both
// transports: gRPC's ChatReactor and the web port's RunTurn.
#ifndef XLSTMD_SERVER_TURN_LOG_H_
#define XLSTMD_SERVER_TURN_LOG_H_

#include <string>

#include "absl/status/status.h"
#include "core/engine/turn_stream.h"
#include "server/logging.h"

namespace xlstmd::server {

// finish, tokens_in/out, history_tokens, ttft/queue/prefill/duration_ms and version of a
// committed turn.
void AddCommittedTurn(LogLine& line, const core::TurnEvent& finished);
// `error`: the status message with the session id replaced by its hash (log lines never
// carry ids). Nothing for OK.
void AddTurnError(LogLine& line, const absl::Status& status, const std::string& session_id);
// warn for server faults (INTERNAL, DATA_LOSS, UNKNOWN), else info.
void LogTurnLine(const LogLine& line, absl::StatusCode code);

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_TURN_LOG_H_
