// The Redis tier's manifest (docs/redis-tier.md, "Manifest fields"): what it records, how its
// fields are written as text into a Redis hash, and a decoder that validates every field, and
// the declared size against a cap, before anything sized by the manifest is allocated. Pure
// functions, no I/O; RedisStore (redis_store.h) does the Redis side.
#ifndef XLSTMD_CORE_STATE_REDIS_MANIFEST_H_
#define XLSTMD_CORE_STATE_REDIS_MANIFEST_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace xlstmd::core {

inline constexpr int kRedisManifestFormat = 1;
// Bounds that keep a corrupt manifest from sizing anything large (and the scripts' loops short).
inline constexpr uint64_t kRedisMaxChunks = 4096;
inline constexpr uint64_t kRedisMaxChunkBytes = uint64_t{64} << 20;

// A session's manifest as stored in Redis.
struct RedisManifest {
  uint64_t version = 0;              // the session version the caller committed
  std::string generation;            // 16 lowercase hex digits, names this write's chunk keys
  uint64_t total_bytes = 0;          // of the whole snapshot
  uint64_t chunk_bytes = 0;          // every chunk but the last has exactly this size
  std::vector<uint64_t> chunk_xxh3;  // XXH3-64 of each chunk, in order
  std::string owner;                 // free text from the writer (the tenant)
  int64_t updated_unix_ms = 0;       // from the writer's clock
  size_t chunk_count() const { return chunk_xxh3.size(); }
};

// The hash's field names, in the order of EncodeRedisManifest's values and of the values
// DecodeRedisManifest takes.
inline constexpr std::array<std::string_view, 9> kRedisManifestFields = {
    "format", "version", "gen", "bytes", "chunk_bytes", "chunks", "xxh3", "owner", "updated_ms"};

// The text values for kRedisManifestFields (decimal numbers, hex checksums joined by ',').
std::array<std::string, kRedisManifestFields.size()> EncodeRedisManifest(const RedisManifest& m);

// Validates the values read for kRedisManifestFields (nullopt: the field is absent; the caller
// treats "all absent" as no manifest). `where` prefixes messages, e.g. "redis host:port:
// manifest of session X". DATA_LOSS names a malformed or missing field; RESOURCE_EXHAUSTED when
// the declared size exceeds `max_total_bytes`; FAILED_PRECONDITION for a newer format.
absl::StatusOr<RedisManifest> DecodeRedisManifest(
    absl::Span<const std::optional<std::string_view>> values, std::string_view where,
    uint64_t max_total_bytes);

// 16 lowercase hex digits, as generations and checksums are written.
std::string RedisHex16(uint64_t v);
// Decimal as the manifest writes it: digits only, no sign, no leading zeros (so text and number
// always correspond; the scripts compare versions as text).
bool ParseRedisDecimal(std::string_view s, uint64_t* out);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_STATE_REDIS_MANIFEST_H_
