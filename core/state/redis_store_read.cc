// RedisStore reads: the manifest, and snapshots chunk by chunk with their checksums, retried
// when a concurrent write replaces the session mid-read. Writes, deletes and TTLs are in
// redis_store.cc.
#include <hiredis/hiredis.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/state/redis_manifest.h"
#include "core/state/redis_store.h"
#include "core/state/redis_store_internal.h"

namespace xlstmd::core {
namespace {

using redis_internal::Av;
using redis_internal::IsWrongType;
using redis_internal::Unexpected;

// Manifest replaced mid-read this many times in a row: give up (UNAVAILABLE).
constexpr int kReadAttempts = 3;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Manifest

namespace {

// Reads the manifest (HMGET of its fields) and validates it. NOT_FOUND when there is none.
absl::StatusOr<RedisManifest> FetchManifest(RedisConnection& conn, const std::string& key,
                                            std::string_view session_id, uint64_t max_bytes) {
  std::vector<std::string_view> args = {"HMGET", key};
  args.insert(args.end(), kRedisManifestFields.begin(), kRedisManifestFields.end());
  XLSTMD_ASSIGN_OR_RETURN(RedisReplyPtr reply, conn.Call(args));
  const std::string where =
      absl::StrCat("redis ", conn.address(), ": manifest of session ", Av(session_id));
  if (reply->type == REDIS_REPLY_ERROR) {
    if (IsWrongType(reply.get())) {
      return absl::DataLossError(absl::StrCat(where, ": the key is not a hash"));
    }
    return conn.ErrorReplyStatus("HMGET", reply.get());
  }
  absl::Span<redisReply* const> e = ReplyElements(reply.get());
  if (reply->type != REDIS_REPLY_ARRAY || e.size() != kRedisManifestFields.size()) {
    return Unexpected(conn, "HMGET", reply.get());
  }
  std::optional<std::string_view> values[kRedisManifestFields.size()];
  bool any = false;
  for (size_t i = 0; i < e.size(); ++i) {
    std::string_view v;
    if (ReplyString(e[i], &v)) {
      values[i] = v;
      any = true;
    } else if (!ReplyIsNil(e[i])) {
      return Unexpected(conn, "HMGET", reply.get());
    }
  }
  if (!any) {
    return absl::NotFoundError(absl::StrCat("redis: session ", Av(session_id), " not found"));
  }
  return DecodeRedisManifest(values, where, max_bytes);
}

}  // namespace

absl::StatusOr<RedisManifest> RedisStore::GetManifest(std::string_view session_id) {
  if (!IsValidSessionId(session_id)) {
    return absl::InvalidArgumentError("redis: invalid session id");
  }
  absl::StatusOr<RedisConnection> conn = pool_->Acquire();
  if (!conn.ok()) return Track(conn.status());
  absl::StatusOr<RedisManifest> m =
      FetchManifest(*conn, ManifestKey(session_id), session_id, options_.max_snapshot_bytes);
  if (!m.ok()) return Track(m.status());
  return m;
}

// ---------------------------------------------------------------------------------------------
// Get

absl::StatusOr<RedisSnapshot> RedisStore::Get(std::string_view session_id) {
  RedisSnapshot out;
  XLSTMD_ASSIGN_OR_RETURN(out.manifest,
                          ReadInto(session_id, options_.max_snapshot_bytes, &out.bytes, {}));
  return out;
}

absl::StatusOr<RedisManifest> RedisStore::GetInto(std::string_view session_id,
                                                  absl::Span<char> dst) {
  return ReadInto(session_id, std::min<uint64_t>(dst.size(), options_.max_snapshot_bytes), nullptr,
                  dst);
}

namespace {

// Reads and verifies every chunk of `m` into dst[0, m.total_bytes). DATA_LOSS names the chunk.
absl::Status ReadChunks(RedisConnection& conn, const RedisStore& store, std::string_view session_id,
                        const RedisManifest& m, char* dst) {
  for (uint64_t i = 0; i < m.chunk_count(); ++i) {
    const uint64_t offset = i * m.chunk_bytes;
    const uint64_t len = std::min<uint64_t>(m.chunk_bytes, m.total_bytes - offset);
    const std::string key = store.ChunkKey(session_id, m.generation, i);
    auto lost = [&](std::string_view why) {
      return absl::DataLossError(absl::StrCat("redis ", conn.address(), ": session ",
                                              Av(session_id), ": chunk ", i, " of ",
                                              m.chunk_count(), " (", key, ") ", Av(why)));
    };
    // GETRANGE's end is inclusive: asking for one byte more than expected exposes a chunk that
    // is too long without ever transferring more than len + 1 bytes.
    const std::string end = std::to_string(len);
    const std::string_view cmd[] = {"GETRANGE", key, "0", end};
    XLSTMD_ASSIGN_OR_RETURN(RedisReplyPtr reply, conn.Call(cmd));
    if (reply->type == REDIS_REPLY_ERROR) {
      if (IsWrongType(reply.get())) return lost("is not a string");
      return conn.ErrorReplyStatus("GETRANGE", reply.get());
    }
    std::string_view data;
    if (!ReplyString(reply.get(), &data) || reply->type != REDIS_REPLY_STRING) {
      return Unexpected(conn, "GETRANGE", reply.get());
    }
    if (data.empty()) {
      // GETRANGE cannot tell a missing key from an empty one; this is the error path only.
      const std::string_view exists[] = {"EXISTS", key};
      XLSTMD_ASSIGN_OR_RETURN(RedisReplyPtr e, conn.CallOk(exists));
      long long n = 0;
      return lost(ReplyInteger(e.get(), &n) && n == 0 ? "is missing" : "is empty");
    }
    if (data.size() > len)
      return lost(absl::StrCat("is longer than the manifest's ", len, " bytes"));
    if (data.size() < len) {
      return lost(absl::StrCat("has ", data.size(), " bytes; the manifest says ", len));
    }
    const uint64_t hash = XXH3_64bits(data.data(), data.size());
    if (hash != m.chunk_xxh3[i]) {
      return lost(absl::StrCat("fails its checksum (xxh3 ", RedisHex16(hash), ", manifest says ",
                               RedisHex16(m.chunk_xxh3[i]), ")"));
    }
    std::memcpy(dst + offset, data.data(), data.size());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RedisManifest> RedisStore::ReadInto(std::string_view session_id, uint64_t capacity,
                                                   std::string* grow, absl::Span<char> fixed) {
  if (!IsValidSessionId(session_id)) {
    return absl::InvalidArgumentError("redis: invalid session id");
  }
  absl::StatusOr<RedisConnection> leased = pool_->Acquire();
  if (!leased.ok()) return Track(leased.status());
  RedisConnection& conn = *leased;
  const std::string manifest_key = ManifestKey(session_id);
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    // The manifest is checked against `capacity` before anything is allocated.
    absl::StatusOr<RedisManifest> m =
        FetchManifest(conn, manifest_key, session_id, options_.max_snapshot_bytes);
    if (!m.ok()) return Track(m.status());
    if (m->total_bytes > capacity) {
      return absl::ResourceExhaustedError(
          absl::StrCat("redis: session ", Av(session_id), ": snapshot of ", m->total_bytes,
                       " bytes does not fit the ", capacity, "-byte buffer"));
    }
    char* dst = fixed.data();
    if (grow != nullptr) {
      grow->resize(m->total_bytes);
      dst = grow->data();
    }
    absl::Status s = ReadChunks(conn, *this, session_id, *m, dst);
    if (s.ok()) {
      ++counters_.gets;
      counters_.bytes_read += static_cast<int64_t>(m->total_bytes);
      return m;
    }
    if (!absl::IsDataLoss(s)) return Track(s);
    // A chunk was missing or wrong. If a concurrent Put, Delete or expiry replaced the
    // manifest meanwhile, the chunks were deleted under us: that is not corruption.
    const std::string_view cmd[] = {"HGET", manifest_key, "gen"};
    absl::StatusOr<RedisReplyPtr> r = conn.CallOk(cmd);
    if (!r.ok()) return Track(r.status());
    std::string_view gen;
    if (ReplyIsNil(r->get())) {
      return absl::NotFoundError(
          absl::StrCat("redis: session ", Av(session_id), " was deleted during the read"));
    }
    if (!ReplyString(r->get(), &gen) || gen == m->generation) return Track(s);
    ++counters_.read_retries;
  }
  return Track(
      absl::UnavailableError(absl::StrCat("redis: session ", Av(session_id), " was replaced ",
                                          kReadAttempts, " times while being read")));
}

}  // namespace xlstmd::core
