// RedisStore: the shared Redis tier for session snapshots. Several daemons serving the same
// model share one Redis, so a session advanced on one can continue on another; a version
// compare-and-set keeps two daemons that both run a turn on one session from losing an
// update (one of them gets ABORTED). It stores opaque bytes (an encoded snapshot, see
// snapshot.h); validating them is the caller's job, as with SnapshotDir.
//
// Keys (docs/redis-tier.md), all under Options::key_prefix, which names the model so two
// models never share keys (KeyPrefixFor(fingerprint.Id())):
//   <prefix>s:<sid>:<gen>:<i>   chunk i (<= chunk_bytes) of generation <gen> (16 hex digits,
//                               random per write, so concurrent writers never touch each
//                               other's chunks)
//   <prefix>m:<sid>             the manifest, a hash written LAST: version, gen, chunk count,
//                               total bytes, XXH3-64 per chunk, owner, updated time
// Put uploads the chunks (with a short "pending" TTL so a writer that dies leaves nothing
// behind for long), then one Lua script atomically checks the stored version, writes the
// manifest, sets TTLs and deletes the previous generation's chunks. A reader checks every
// length against the manifest, and the manifest against max_snapshot_bytes, before it
// allocates, and verifies each chunk's checksum.
//
// Redis is a cache/migration tier: without `appendfsync always` an acknowledged write can be
// lost when Redis restarts. Durability comes from the disk tier.
//
// Errors: UNAVAILABLE when Redis cannot be reached or times out (naming the address, never the
// password); ABORTED when the version check fails (naming both versions); NOT_FOUND when the
// session has no manifest; DATA_LOSS when a manifest is malformed or a chunk is missing, has
// the wrong length or fails its checksum (naming the chunk); RESOURCE_EXHAUSTED when a
// snapshot exceeds max_snapshot_bytes (or Redis is out of memory); INTERNAL for other Redis
// error replies and replies of an unexpected type.
//
// Thread-safe: the engine's I/O threads call every method concurrently; each call leases one
// connection from a pool of up to max_connections. Calls are blocking.
#ifndef XLSTMD_CORE_STATE_REDIS_STORE_H_
#define XLSTMD_CORE_STATE_REDIS_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/state/redis_connection.h"
#include "core/state/redis_manifest.h"

namespace xlstmd::core {

// What a write or delete requires the stored session to be. Explicit, so "create" and "update
// from version N" can never be confused.
class ExpectedVersion {
 public:
  // No manifest may exist (the session is new to Redis).
  static ExpectedVersion Absent() { return ExpectedVersion(Kind::kAbsent, 0); }
  // The stored manifest's version must equal `version`.
  static ExpectedVersion Is(uint64_t version) { return ExpectedVersion(Kind::kVersion, version); }
  // No check: overwrite or delete whatever is there (a corrupt manifest included).
  static ExpectedVersion Any() { return ExpectedVersion(Kind::kAny, 0); }

  bool is_absent() const { return kind_ == Kind::kAbsent; }
  bool is_any() const { return kind_ == Kind::kAny; }
  bool is_version() const { return kind_ == Kind::kVersion; }
  uint64_t version() const { return version_; }
  std::string ToString() const;  // "absent", "version 7", "any version"

 private:
  enum class Kind { kAbsent, kVersion, kAny };
  ExpectedVersion(Kind kind, uint64_t version) : kind_(kind), version_(version) {}
  Kind kind_;
  uint64_t version_;
};

struct RedisPutRequest {
  std::string session_id;  // [A-Za-z0-9_-]{1,128}
  ExpectedVersion expected = ExpectedVersion::Absent();
  uint64_t new_version = 0;  // must be greater than expected.version() when that is a version
  std::string owner;         // <= kSnapshotMaxOwnerBytes
  int64_t updated_unix_ms = 0;
};

struct RedisSnapshot {
  RedisManifest manifest;
  std::string bytes;
};

// Counters for the metrics layer; a consistent-enough copy (each field is exact).
struct RedisStoreStats {
  int64_t puts = 0;           // committed writes
  int64_t put_conflicts = 0;  // writes refused by the version check (ABORTED)
  int64_t gets = 0;           // complete, verified reads
  int64_t read_retries = 0;   // reads restarted because a concurrent write replaced the session
  int64_t data_loss = 0;      // reads refused: malformed manifest or bad/missing chunk
  int64_t unavailable = 0;    // calls failed because Redis could not be reached in time
  int64_t bytes_written = 0;
  int64_t bytes_read = 0;
  RedisPoolStats pool;
};

class RedisStore {
 public:
  struct Options {
    // Required namespace for every key, e.g. KeyPrefixFor(fingerprint.Id()). 1..256 bytes.
    std::string key_prefix;
    RedisPoolOptions pool;
    // Snapshots are written in chunks of at most this many bytes (a 128 MiB single value would
    // block single-threaded Redis and approach its 512 MB bulk limit). 1 .. 64 MiB.
    uint64_t chunk_bytes = uint64_t{4} << 20;
    // Largest snapshot Put accepts and Get allocates (RESOURCE_EXHAUSTED above it). Set it to
    // MaxSnapshotBytes(layout) of the loaded model. At most kMaxChunks chunks.
    uint64_t max_snapshot_bytes = uint64_t{1} << 30;
    // TTL that Put and Touch give a session's keys; 0 = they do not expire.
    int64_t idle_ttl_ms = 0;
    // TTL of chunks between upload and commit: a writer that dies mid-Put leaves garbage for
    // at most this long. Must exceed the longest upload.
    int64_t pending_chunk_ttl_ms = 10 * 60 * 1000;
    // false: Connect opens one connection and PINGs (UNAVAILABLE if Redis is down). true:
    // Connect only checks the URL; the first call connects.
    bool connect_lazily = false;
  };

  static constexpr uint64_t kMaxChunks = kRedisMaxChunks;
  static constexpr uint64_t kMaxChunkBytes = kRedisMaxChunkBytes;

  // `url`: redis://[[user]:password@]host[:port][/db] or unix:///path. INVALID_ARGUMENT for a
  // bad URL or options, UNAVAILABLE if the eager connection fails.
  static absl::StatusOr<std::unique_ptr<RedisStore>> Connect(std::string_view url, Options options);
  ~RedisStore();
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  // "xlstmd:<fingerprint id>:", the conventional prefix for a model.
  static std::string KeyPrefixFor(std::string_view fingerprint_id);
  // [A-Za-z0-9_-]{1,128}: no ':' so key names stay unambiguous.
  static bool IsValidSessionId(std::string_view id);

  // Stores the concatenation of `pieces` (e.g. SnapshotParts: head, payload, tail; nothing is
  // concatenated in memory beyond one chunk) as version `request.new_version`, if the stored
  // version matches `request.expected`. Otherwise ABORTED "expected version 3, found version 4"
  // (or "absent"), and the chunks this call uploaded are deleted. Returns the
  // manifest now stored. INVALID_ARGUMENT for a bad id, owner or version order. UNAVAILABLE
  // if the connection failed; when that happened during the commit, the message says so and
  // names the generation, which a later GetManifest shows if the commit did happen.
  absl::StatusOr<RedisManifest> Put(const RedisPutRequest& request,
                                    absl::Span<const std::string_view> pieces);
  absl::StatusOr<RedisManifest> Put(const RedisPutRequest& request, std::string_view bytes);

  // The manifest alone (one round trip). NOT_FOUND if there is none.
  absl::StatusOr<RedisManifest> GetManifest(std::string_view session_id);
  // The whole snapshot, verified. A write that replaces the session during the read restarts
  // it (up to 3 times, then UNAVAILABLE), so a concurrent update never reads as DATA_LOSS.
  absl::StatusOr<RedisSnapshot> Get(std::string_view session_id);
  // Same into a caller's buffer (e.g. one of MaxSnapshotBytes reused across restores): the
  // snapshot is dst[0, manifest.total_bytes). RESOURCE_EXHAUSTED if it does not fit; on any
  // error dst holds unspecified bytes.
  absl::StatusOr<RedisManifest> GetInto(std::string_view session_id, absl::Span<char> dst);

  // Removes the manifest and its chunks atomically, if the stored version matches `expected`
  // (ABORTED otherwise; Absent is INVALID_ARGUMENT). NOT_FOUND if there is no manifest.
  absl::Status Delete(std::string_view session_id,
                      ExpectedVersion expected = ExpectedVersion::Any());
  // Restarts the idle TTL (Options::idle_ttl_ms) of the session's keys; a no-op when it is 0.
  absl::Status Touch(std::string_view session_id);
  // Sets the TTL of the session's keys to `ttl_ms`, or removes it when `ttl_ms` is 0.
  absl::Status Expire(std::string_view session_id, int64_t ttl_ms);

  // One round trip: OK if Redis answers.
  absl::Status Ping();

  RedisStoreStats Stats() const;
  const std::string& address() const { return pool_->address(); }
  const std::string& key_prefix() const { return options_.key_prefix; }
  std::string ManifestKey(std::string_view session_id) const;
  std::string ChunkKey(std::string_view session_id, std::string_view generation,
                       uint64_t index) const;

 private:
  struct Counters {
    std::atomic<int64_t> puts{0}, put_conflicts{0}, gets{0}, read_retries{0}, data_loss{0},
        unavailable{0}, bytes_written{0}, bytes_read{0};
  };
  RedisStore(std::unique_ptr<RedisPool> pool, Options options, uint64_t generation_seed);
  std::string NewGeneration();
  std::string ChunkKeyBase(std::string_view session_id) const;  // "<prefix>s:<sid>:"
  // Counts `status` in the stats and returns it.
  absl::Status Track(absl::Status status);
  // Put's steps: upload the chunks (filling m->chunk_xxh3 and `chunk_keys`), then the commit
  // script.
  absl::Status UploadChunks(RedisConnection& conn, std::string_view session_id,
                            absl::Span<const std::string_view> pieces, RedisManifest* m,
                            std::vector<std::string>* chunk_keys);
  absl::StatusOr<RedisManifest> Commit(RedisConnection& conn, const RedisPutRequest& request,
                                       RedisManifest m, const std::vector<std::string>& chunk_keys);
  // ABORTED for a failed version check (counted).
  absl::Status Conflict(std::string_view session_id, const ExpectedVersion& expected,
                        std::string_view found);
  absl::StatusOr<RedisManifest> ReadInto(std::string_view session_id, uint64_t capacity,
                                         std::string* grow, absl::Span<char> fixed);
  absl::Status ApplyToSession(std::string_view session_id, std::string_view op, int64_t ttl_ms,
                              ExpectedVersion expected);

  const std::unique_ptr<RedisPool> pool_;
  const Options options_;
  const uint64_t generation_seed_;
  std::atomic<uint64_t> generation_counter_{0};
  Counters counters_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_STATE_REDIS_STORE_H_
