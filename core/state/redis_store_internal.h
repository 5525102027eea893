// Helpers shared by redis_store.cc (writes, deletes) and redis_store_read.cc (reads).
// Internal to core/state.
#ifndef XLSTMD_CORE_STATE_REDIS_STORE_INTERNAL_H_
#define XLSTMD_CORE_STATE_REDIS_STORE_INTERNAL_H_

#include <hiredis/hiredis.h>

#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/state/redis_connection.h"

namespace xlstmd::core::redis_internal {

// Debian's Abseil has its own string_view type, distinct from std::string_view.
inline absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

inline absl::Status Unexpected(const RedisConnection& conn, std::string_view what,
                               const redisReply* reply) {
  return absl::InternalError(absl::StrCat("redis ", conn.address(), ": ", Av(what),
                                          ": unexpected ", DescribeReply(reply)));
}

inline bool IsWrongType(const redisReply* reply) {
  return reply->type == REDIS_REPLY_ERROR && reply->str != nullptr &&
         std::string_view(reply->str, reply->len).substr(0, 9) == "WRONGTYPE";
}

}  // namespace xlstmd::core::redis_internal

#endif  // XLSTMD_CORE_STATE_REDIS_STORE_INTERNAL_H_
