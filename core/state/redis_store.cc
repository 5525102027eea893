#include "core/state/redis_store.h"

#include <hiredis/hiredis.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/state/redis_manifest.h"
#include "core/state/redis_store_internal.h"
#include "core/state/snapshot.h"

namespace xlstmd::core {
namespace {

using redis_internal::Av;
using redis_internal::Unexpected;

constexpr size_t kMaxKeyPrefixBytes = 256;
constexpr size_t kMaxSessionIdBytes = 128;


// Helpers shared by both scripts. `current` reads what the manifest key holds: '' when there is
// none, the version string of a manifest, or '!<why>' for a key that is not a readable
// manifest (so the caller can tell "absent" from "corrupt"). `chunk_keys` lists a manifest's
// chunk keys, or nothing when its gen/chunks fields are not plausible: a corrupt manifest must
// never make the script touch keys outside this session or loop without bound.
constexpr char kScriptHelpers[] = R"lua(
local function current(key)
  local t = redis.call('TYPE', key).ok
  if t == 'none' then return '', false, nil end
  if t ~= 'hash' then return '!key type ' .. t, false, nil end
  local v = redis.call('HGET', key, 'version') or '!no version field'
  local g = redis.call('HGET', key, 'gen')
  local n = tonumber(redis.call('HGET', key, 'chunks') or '')
  return v, g, n
end
local function chunk_keys(base, gen, n, max_n, skip_gen)
  local keys = {}
  if type(gen) == 'string' and gen ~= skip_gen and string.match(gen, '^%x+$') and
     n and n >= 0 and n <= max_n and n == math.floor(n) then
    for i = 0, n - 1 do keys[#keys + 1] = base .. gen .. ':' .. i end
  end
  return keys
end
)lua";

// Put's commit, atomic because Redis runs a script without interleaving other commands.
// KEYS[1]: manifest; KEYS[2..]: the chunks this write uploaded.
// ARGV: expected ('*' any, '' absent, else a decimal version), chunk key base, new generation,
// TTL ms ('0': none), max chunk count, then the new manifest's field/value pairs.
// Returns {1, previous} committed; {0, found} version conflict (this write's chunks deleted);
// {2, key} a chunk vanished before the commit (pending TTL expired; chunks deleted).
constexpr char kCommitScript[] = R"lua(
local cur, gen, n = current(KEYS[1])
if ARGV[1] ~= '*' and ARGV[1] ~= cur then
  for i = 2, #KEYS do redis.call('UNLINK', KEYS[i]) end
  return {0, cur}
end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    for j = 2, #KEYS do redis.call('UNLINK', KEYS[j]) end
    return {2, KEYS[i]}
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
for i = 1, #KEYS do
  if ARGV[4] ~= '0' then redis.call('PEXPIRE', KEYS[i], ARGV[4])
  elseif i > 1 then redis.call('PERSIST', KEYS[i]) end
end
for _, k in ipairs(chunk_keys(ARGV[2], gen, n, tonumber(ARGV[5]), ARGV[3])) do
  redis.call('UNLINK', k)
end
return {1, cur}
)lua";

// Delete / TTL changes over a manifest and its chunks, atomically.
// KEYS[1]: manifest. ARGV: chunk key base, op ('del' or 'ttl'), TTL ms ('0': persist),
// expected ('*' or a decimal version), max chunk count.
// Returns {-1, ''} no manifest; {0, found} version conflict; {1, found} done.
constexpr char kApplyScript[] = R"lua(
local cur, gen, n = current(KEYS[1])
if cur == '' then return {-1, ''} end
if ARGV[4] ~= '*' and ARGV[4] ~= cur then return {0, cur} end
local keys = chunk_keys(ARGV[1], gen, n, tonumber(ARGV[5]), false)
keys[#keys + 1] = KEYS[1]
for _, k in ipairs(keys) do
  if ARGV[2] == 'del' then redis.call('UNLINK', k)
  elseif ARGV[3] == '0' then redis.call('PERSIST', k)
  else redis.call('PEXPIRE', k, ARGV[3]) end
end
return {1, cur}
)lua";

const std::string& CommitScript() {
  static const std::string* const script =
      new std::string(absl::StrCat(kScriptHelpers, kCommitScript));
  return *script;
}
const std::string& ApplyScript() {
  static const std::string* const script =
      new std::string(absl::StrCat(kScriptHelpers, kApplyScript));
  return *script;
}

// splitmix64: spreads seed + counter over 64 bits.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// How the scripts see an expectation.
std::string WireExpected(const ExpectedVersion& e) {
  if (e.is_any()) return "*";
  if (e.is_absent()) return "";
  return std::to_string(e.version());
}

// What the scripts found, for messages.
std::string DescribeFound(std::string_view found) {
  if (found.empty()) return "absent";
  uint64_t v = 0;
  if (ParseRedisDecimal(found, &v)) return absl::StrCat("version ", v);
  if (found[0] == '!') found.remove_prefix(1);
  return absl::StrCat("an unreadable manifest (", Av(found.substr(0, 64)), ")");
}

// Yields consecutive byte ranges of a list of pieces as if they were one buffer. A range that
// lies inside one piece is returned as a view of it; only ranges spanning pieces are copied
// (into `scratch`, at most one chunk).
class PieceReader {
 public:
  explicit PieceReader(absl::Span<const std::string_view> pieces) : pieces_(pieces) {}
  std::string_view Next(size_t n, std::string* scratch) {
    SkipEmpty();
    if (piece_ < pieces_.size() && pieces_[piece_].size() - offset_ >= n) {
      std::string_view out = pieces_[piece_].substr(offset_, n);
      offset_ += n;
      return out;
    }
    scratch->clear();
    while (scratch->size() < n && piece_ < pieces_.size()) {
      const size_t take = std::min(n - scratch->size(), pieces_[piece_].size() - offset_);
      scratch->append(pieces_[piece_].data() + offset_, take);
      offset_ += take;
      SkipEmpty();
    }
    return *scratch;
  }

 private:
  void SkipEmpty() {
    while (piece_ < pieces_.size() && offset_ == pieces_[piece_].size()) {
      ++piece_;
      offset_ = 0;
    }
  }
  absl::Span<const std::string_view> pieces_;
  size_t piece_ = 0;
  size_t offset_ = 0;
};

std::vector<std::string_view> Views(const std::vector<std::string>& args) {
  return std::vector<std::string_view>(args.begin(), args.end());
}


// Reads a two-element script reply {integer code, string}.
absl::Status ScriptReply(const RedisConnection& conn, std::string_view what,
                         const redisReply* reply, long long* code, std::string_view* text) {
  absl::Span<redisReply* const> e = ReplyElements(reply);
  if (e.size() != 2 || !ReplyInteger(e[0], code) || !ReplyString(e[1], text)) {
    return Unexpected(conn, what, reply);
  }
  return absl::OkStatus();
}


}  // namespace

std::string ExpectedVersion::ToString() const {
  switch (kind_) {
    case Kind::kAbsent:
      return "absent";
    case Kind::kAny:
      return "any version";
    case Kind::kVersion:
      break;
  }
  return absl::StrCat("version ", version_);
}

// ---------------------------------------------------------------------------------------------
// Setup

absl::StatusOr<std::unique_ptr<RedisStore>> RedisStore::Connect(std::string_view url,
                                                                Options options) {
  auto bad = [](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("redis store options: ", Av(why)));
  };
  if (options.key_prefix.empty() || options.key_prefix.size() > kMaxKeyPrefixBytes) {
    return bad("key_prefix must be 1..256 bytes (e.g. RedisStore::KeyPrefixFor(fingerprint))");
  }
  if (options.chunk_bytes == 0 || options.chunk_bytes > kMaxChunkBytes) {
    return bad("chunk_bytes must be 1 .. 64 MiB");
  }
  if (options.max_snapshot_bytes == 0 ||
      (options.max_snapshot_bytes - 1) / options.chunk_bytes + 1 > kMaxChunks) {
    return bad(absl::StrCat("max_snapshot_bytes needs 1..", kMaxChunks, " chunks of chunk_bytes"));
  }
  const RedisPoolOptions& p = options.pool;
  if (p.connect_timeout_ms <= 0 || p.io_timeout_ms <= 0 || p.max_connections <= 0 ||
      p.pool_wait_timeout_ms < 0 || p.reconnect_backoff_ms < 0) {
    return bad("timeouts and max_connections must be positive");
  }
  if (options.idle_ttl_ms < 0 || options.pending_chunk_ttl_ms <= 0) {
    return bad("idle_ttl_ms must be >= 0 and pending_chunk_ttl_ms > 0");
  }
  XLSTMD_ASSIGN_OR_RETURN(RedisAddress address, ParseRedisUrl(url));
  std::random_device rd;
  const uint64_t seed = (uint64_t{rd()} << 32) ^ rd();
  const bool lazily = options.connect_lazily;
  auto pool = std::make_unique<RedisPool>(std::move(address), options.pool);
  std::unique_ptr<RedisStore> store(new RedisStore(std::move(pool), std::move(options), seed));
  if (!lazily) XLSTMD_RETURN_IF_ERROR(store->Ping());
  return store;
}

RedisStore::RedisStore(std::unique_ptr<RedisPool> pool, Options options, uint64_t generation_seed)
    : pool_(std::move(pool)), options_(std::move(options)), generation_seed_(generation_seed) {}

RedisStore::~RedisStore() = default;

std::string RedisStore::KeyPrefixFor(std::string_view fingerprint_id) {
  return absl::StrCat("xlstmd:", Av(fingerprint_id), ":");
}

bool RedisStore::IsValidSessionId(std::string_view id) {
  if (id.empty() || id.size() > kMaxSessionIdBytes) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

std::string RedisStore::ManifestKey(std::string_view session_id) const {
  return absl::StrCat(options_.key_prefix, "m:", Av(session_id));
}
std::string RedisStore::ChunkKeyBase(std::string_view session_id) const {
  return absl::StrCat(options_.key_prefix, "s:", Av(session_id), ":");
}
std::string RedisStore::ChunkKey(std::string_view session_id, std::string_view generation,
                                 uint64_t index) const {
  return absl::StrCat(ChunkKeyBase(session_id), Av(generation), ":", index);
}

std::string RedisStore::NewGeneration() {
  return RedisHex16(Mix(generation_seed_ ^ Mix(generation_counter_.fetch_add(1))));
}

absl::Status RedisStore::Track(absl::Status status) {
  if (absl::IsUnavailable(status)) ++counters_.unavailable;
  if (absl::IsDataLoss(status)) ++counters_.data_loss;
  return status;
}

RedisStoreStats RedisStore::Stats() const {
  RedisStoreStats s;
  s.puts = counters_.puts.load();
  s.put_conflicts = counters_.put_conflicts.load();
  s.gets = counters_.gets.load();
  s.read_retries = counters_.read_retries.load();
  s.data_loss = counters_.data_loss.load();
  s.unavailable = counters_.unavailable.load();
  s.bytes_written = counters_.bytes_written.load();
  s.bytes_read = counters_.bytes_read.load();
  s.pool = pool_->Stats();
  return s;
}

absl::Status RedisStore::Ping() {
  absl::StatusOr<RedisConnection> conn = pool_->Acquire();
  if (!conn.ok()) return Track(conn.status());
  const std::string_view cmd[] = {"PING"};
  absl::StatusOr<RedisReplyPtr> r = conn->CallOk(cmd);
  if (!r.ok()) return Track(r.status());
  std::string_view text;
  if (!ReplyString(r->get(), &text) || text != "PONG") return Unexpected(*conn, "PING", r->get());
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Put

absl::StatusOr<RedisManifest> RedisStore::Put(const RedisPutRequest& request,
                                              std::string_view bytes) {
  const std::string_view pieces[] = {bytes};
  return Put(request, pieces);
}

absl::StatusOr<RedisManifest> RedisStore::Put(const RedisPutRequest& request,
                                              absl::Span<const std::string_view> pieces) {
  const std::string& sid = request.session_id;
  if (!IsValidSessionId(sid)) return absl::InvalidArgumentError("redis: invalid session id");
  if (request.owner.size() > kSnapshotMaxOwnerBytes) {
    return absl::InvalidArgumentError("redis: owner is too long");
  }
  if (request.expected.is_version() && request.new_version <= request.expected.version()) {
    return absl::InvalidArgumentError(absl::StrCat("redis: session ", sid, ": new version ",
                                                   request.new_version, " does not follow ",
                                                   request.expected.ToString()));
  }
  uint64_t total = 0;
  for (std::string_view p : pieces) total += p.size();
  if (total > options_.max_snapshot_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("redis: session ", sid, ": snapshot of ",
                                                     total, " bytes is over the limit of ",
                                                     options_.max_snapshot_bytes));
  }
  RedisManifest m;
  m.version = request.new_version;
  m.generation = NewGeneration();
  m.total_bytes = total;
  m.chunk_bytes = options_.chunk_bytes;
  m.owner = request.owner;
  m.updated_unix_ms = request.updated_unix_ms;

  absl::StatusOr<RedisConnection> leased = pool_->Acquire();
  if (!leased.ok()) return Track(leased.status());
  RedisConnection& conn = *leased;
  // Cheap early check, so a writer that already lost does not upload 128 MiB for nothing. The
  // commit script repeats it atomically; an error or odd reply here just defers to the script.
  if (!request.expected.is_any()) {
    const std::string manifest_key = ManifestKey(sid);
    const std::string_view cmd[] = {"HGET", manifest_key, "version"};
    absl::StatusOr<RedisReplyPtr> r = conn.Call(cmd);
    if (!r.ok()) return Track(r.status());
    std::string_view found;
    if (ReplyIsNil(r->get())) {
      if (!request.expected.is_absent()) return Conflict(sid, request.expected, "");
    } else if (ReplyString(r->get(), &found) && found != WireExpected(request.expected)) {
      return Conflict(sid, request.expected, found);
    }
  }
  std::vector<std::string> chunk_keys;
  XLSTMD_RETURN_IF_ERROR(Track(UploadChunks(conn, sid, pieces, &m, &chunk_keys)));
  return Commit(conn, request, std::move(m), chunk_keys);
}

absl::Status RedisStore::UploadChunks(RedisConnection& conn, std::string_view session_id,
                                      absl::Span<const std::string_view> pieces, RedisManifest* m,
                                      std::vector<std::string>* chunk_keys) {
  // Each chunk carries the pending TTL until the commit makes it permanent, so a writer that
  // dies here leaves nothing behind for long.
  const std::string pending_ttl = std::to_string(options_.pending_chunk_ttl_ms);
  const uint64_t chunks = m->total_bytes == 0 ? 0 : (m->total_bytes - 1) / m->chunk_bytes + 1;
  PieceReader reader(pieces);
  std::string scratch;
  for (uint64_t i = 0; i < chunks; ++i) {
    const uint64_t len = std::min<uint64_t>(m->chunk_bytes, m->total_bytes - i * m->chunk_bytes);
    const std::string_view data = reader.Next(len, &scratch);
    m->chunk_xxh3.push_back(XXH3_64bits(data.data(), data.size()));
    chunk_keys->push_back(ChunkKey(session_id, m->generation, i));
    const std::string_view cmd[] = {"SET", chunk_keys->back(), data, "PX", pending_ttl};
    absl::StatusOr<RedisReplyPtr> r = conn.CallOk(cmd);
    absl::Status s = r.status();
    std::string_view ok;
    if (s.ok() && (!ReplyString(r->get(), &ok) || ok != "OK")) {
      s = Unexpected(conn, "SET", r->get());
    }
    if (!s.ok()) {
      // Best effort (the pending TTL removes them anyway); a broken connection cannot.
      if (!absl::IsUnavailable(s)) {
        std::vector<std::string_view> del = {"UNLINK"};
        del.insert(del.end(), chunk_keys->begin(), chunk_keys->end());
        (void)conn.Call(del);
      }
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RedisManifest> RedisStore::Commit(RedisConnection& conn,
                                                 const RedisPutRequest& request, RedisManifest m,
                                                 const std::vector<std::string>& chunk_keys) {
  const std::string& sid = request.session_id;
  std::vector<std::string> args = {"EVAL", CommitScript(), std::to_string(1 + chunk_keys.size()),
                                   ManifestKey(sid)};
  args.insert(args.end(), chunk_keys.begin(), chunk_keys.end());
  args.insert(args.end(), {WireExpected(request.expected), ChunkKeyBase(sid), m.generation,
                           std::to_string(options_.idle_ttl_ms), std::to_string(kMaxChunks)});
  const auto values = EncodeRedisManifest(m);
  for (size_t i = 0; i < values.size(); ++i) {
    args.emplace_back(kRedisManifestFields[i]);
    args.push_back(values[i]);
  }
  absl::StatusOr<RedisReplyPtr> r = conn.CallOk(Views(args));
  if (!r.ok()) {
    if (absl::IsUnavailable(r.status())) {
      // The script may have run before the connection failed: only a re-read can tell.
      // The generation tells the caller whether a later GetManifest shows this write.
      return Track(absl::UnavailableError(absl::StrCat(r.status().message(), " (session ", sid,
                                                       ": the commit of generation ", m.generation,
                                                       " may or may not have happened)")));
    }
    return Track(r.status());
  }
  long long code = 0;
  std::string_view found;
  XLSTMD_RETURN_IF_ERROR(ScriptReply(conn, "commit script", r->get(), &code, &found));
  switch (code) {
    case 1:
      ++counters_.puts;
      counters_.bytes_written += static_cast<int64_t>(m.total_bytes);
      return m;
    case 0:
      return Conflict(sid, request.expected, found);
    case 2:
      return Track(absl::UnavailableError(absl::StrCat(
          "redis ", conn.address(), ": session ", sid, ": chunk ", Av(found),
          " vanished before the commit (pending_chunk_ttl_ms too short, or deleted)")));
    default:
      return Unexpected(conn, "commit script", r->get());
  }
}

absl::Status RedisStore::Conflict(std::string_view session_id, const ExpectedVersion& expected,
                                  std::string_view found) {
  ++counters_.put_conflicts;
  return absl::AbortedError(absl::StrCat("redis: session ", Av(session_id),
                                         ": version conflict: expected ", expected.ToString(),
                                         ", found ", DescribeFound(found)));
}

// ---------------------------------------------------------------------------------------------
// Delete, TTLs

absl::Status RedisStore::Delete(std::string_view session_id, ExpectedVersion expected) {
  if (expected.is_absent()) {
    return absl::InvalidArgumentError("redis: Delete cannot expect an absent session");
  }
  return ApplyToSession(session_id, "del", 0, expected);
}

absl::Status RedisStore::Touch(std::string_view session_id) {
  if (!IsValidSessionId(session_id)) return absl::InvalidArgumentError("redis: invalid session id");
  if (options_.idle_ttl_ms == 0) return absl::OkStatus();
  return ApplyToSession(session_id, "ttl", options_.idle_ttl_ms, ExpectedVersion::Any());
}

absl::Status RedisStore::Expire(std::string_view session_id, int64_t ttl_ms) {
  if (ttl_ms < 0) return absl::InvalidArgumentError("redis: negative TTL");
  return ApplyToSession(session_id, "ttl", ttl_ms, ExpectedVersion::Any());
}

absl::Status RedisStore::ApplyToSession(std::string_view session_id, std::string_view op,
                                        int64_t ttl_ms, ExpectedVersion expected) {
  if (!IsValidSessionId(session_id)) return absl::InvalidArgumentError("redis: invalid session id");
  absl::StatusOr<RedisConnection> leased = pool_->Acquire();
  if (!leased.ok()) return Track(leased.status());
  RedisConnection& conn = *leased;
  const std::vector<std::string> args = {"EVAL",
                                         ApplyScript(),
                                         "1",
                                         ManifestKey(session_id),
                                         ChunkKeyBase(session_id),
                                         std::string(op),
                                         std::to_string(ttl_ms),
                                         WireExpected(expected),
                                         std::to_string(kMaxChunks)};
  absl::StatusOr<RedisReplyPtr> r = conn.CallOk(Views(args));
  if (!r.ok()) return Track(r.status());
  long long code = 0;
  std::string_view found;
  XLSTMD_RETURN_IF_ERROR(ScriptReply(conn, "session script", r->get(), &code, &found));
  switch (code) {
    case 1:
      return absl::OkStatus();
    case 0:
      return absl::AbortedError(absl::StrCat("redis: session ", Av(session_id),
                                             ": version conflict: expected ", expected.ToString(),
                                             ", found ", DescribeFound(found)));
    case -1:
      return absl::NotFoundError(absl::StrCat("redis: session ", Av(session_id), " not found"));
    default:
      return Unexpected(conn, "session script", r->get());
  }
}

}  // namespace xlstmd::core
