// How logs name a session: never by its id (with authentication off an id is all it takes to
// use a session), but by a stable hash the operator can compute from an id they hold. The
// daemon installs its hash (SHA-256 prefix, docs/observability.md) at startup so every line
// agrees; until then (tools, tests) an XXH3-64 prefix stands in.
#ifndef XLSTMD_CORE_BASE_LOG_ID_H_
#define XLSTMD_CORE_BASE_LOG_ID_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace xlstmd::base {

using SessionIdHasher = std::string (*)(std::string_view session_id);

// Not thread-safe against concurrent LogSessionId calls: install once, before serving.
void SetSessionIdHasher(SessionIdHasher hasher);
std::string LogSessionId(std::string_view session_id);
// `status` as text with every occurrence of `session_id` (file names, Redis keys) replaced by
// its log hash.
std::string LogStatus(const absl::Status& status, std::string_view session_id);

}  // namespace xlstmd::base

#endif  // XLSTMD_CORE_BASE_LOG_ID_H_
