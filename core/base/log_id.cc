#include "core/base/log_id.h"

#include <cstdio>

#include "absl/strings/str_replace.h"
#include <xxhash.h>

namespace xlstmd::base {
namespace {

std::string DefaultHash(std::string_view session_id) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(session_id.data(), session_id.size())));
  return buf;
}

SessionIdHasher g_hasher = &DefaultHash;

}  // namespace

void SetSessionIdHasher(SessionIdHasher hasher) { g_hasher = hasher != nullptr ? hasher : &DefaultHash; }

std::string LogSessionId(std::string_view session_id) { return g_hasher(session_id); }

std::string LogStatus(const absl::Status& status, std::string_view session_id) {
  std::string text = status.ToString();
  if (session_id.empty()) return text;
  const std::string hashed = LogSessionId(session_id);
  return absl::StrReplaceAll(
      text, {{absl::string_view(session_id.data(), session_id.size()), absl::string_view(hashed)}});
}

}  // namespace xlstmd::base
