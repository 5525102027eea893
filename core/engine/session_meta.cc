#include "core/engine/session_meta.h"

#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace xlstmd::core {

SessionMeta SessionMeta::FromSnapshot(const SnapshotMeta& s) {
  SessionMeta m;
  m.info.session_id = s.session_id;
  m.info.owner = s.owner;
  m.info.version = s.version;
  m.info.token_count = s.token_count;
  m.info.created_unix_ms = s.created_unix_ms;
  m.info.updated_unix_ms = s.updated_unix_ms;
  m.session_start_done = (s.flags & kFlagSessionStartDone) != 0;
  m.reply_open = (s.flags & kFlagReplyOpen) != 0;
  for (const CommittedRequest& r : s.recent_requests) {
    // A snapshot's entry is the id, then (when known) NUL and 16 hex digits of the body's
    // fingerprint: ids are UUIDs, so they never hold a NUL (docs/snapshot-format.md).
    const size_t nul = r.request_id.find('\0');
    std::string id = r.request_id.substr(0, nul);
    uint64_t fp = 0;
    if (nul != std::string::npos && absl::SimpleHexAtoi(r.request_id.substr(nul + 1), &fp) &&
        fp != 0) {
      m.request_fingerprints[id] = fp;
    }
    // A crafted import could repeat an id; the order must name each id once, or trimming
    // it later would leave the maps without an entry the order still names.
    if (!m.request_versions.contains(id)) m.request_order.push_back(id);
    m.request_versions[id] = r.version;
  }
  return m;
}

SnapshotMeta SessionMeta::ToSnapshot() const {
  SnapshotMeta out;
  out.session_id = info.session_id;
  out.owner = info.owner;
  out.version = info.version;
  out.token_count = info.token_count;
  out.created_unix_ms = info.created_unix_ms;
  out.updated_unix_ms = info.updated_unix_ms;
  out.flags = (session_start_done ? kFlagSessionStartDone : 0) | (reply_open ? kFlagReplyOpen : 0);
  for (const std::string& r : request_order) {
    std::string entry = r;
    if (auto fp = request_fingerprints.find(r); fp != request_fingerprints.end()) {
      absl::StrAppend(&entry, std::string(1, '\0'), absl::Hex(fp->second, absl::kZeroPad16));
    }
    out.recent_requests.push_back({std::move(entry), request_versions.at(r)});
  }
  return out;
}

void SessionMeta::ApplyCommit(const CommitDelta& delta, int64_t now_unix_ms) {
  info.version += 1;
  info.token_count += delta.tokens;
  info.updated_unix_ms = now_unix_ms;
  if (delta.adds_session_start) session_start_done = true;
  reply_open = delta.is_message;
  if (delta.request_id.empty()) return;
  request_versions[delta.request_id] = info.version;
  if (delta.request_fingerprint != 0) {
    request_fingerprints[delta.request_id] = delta.request_fingerprint;
  }
  request_order.push_back(delta.request_id);
  if (request_order.size() > kRequestIdsPerSession) {
    request_versions.erase(request_order.front());
    request_fingerprints.erase(request_order.front());
    request_order.pop_front();
  }
}

void SessionMeta::RewindTo(const RewindPoint& point, int64_t now_unix_ms) {
  info.version = point.version;
  info.token_count = point.token_count;
  info.updated_unix_ms = now_unix_ms;
  session_start_done = point.session_start_done;
  reply_open = point.reply_open;
  std::deque<std::string> kept;
  for (const std::string& r : request_order) {
    if (request_versions[r] <= point.version) {
      kept.push_back(r);
    } else {
      request_versions.erase(r);
      request_fingerprints.erase(r);
    }
  }
  request_order = std::move(kept);
}

RewindPoint SessionMeta::ToRewindPoint() const {
  RewindPoint p;
  p.version = info.version;
  p.token_count = info.token_count;
  p.session_start_done = session_start_done;
  p.reply_open = reply_open;
  return p;
}

std::optional<uint64_t> SessionMeta::FingerprintOf(const std::string& request_id) const {
  auto it = request_fingerprints.find(request_id);
  if (it == request_fingerprints.end()) return std::nullopt;
  return it->second;
}

std::optional<uint64_t> SessionMeta::CommittedVersionOf(const std::string& request_id) const {
  auto it = request_versions.find(request_id);
  if (it == request_versions.end()) return std::nullopt;
  return it->second;
}

}  // namespace xlstmd::core
