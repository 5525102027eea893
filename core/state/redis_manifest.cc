#include "core/state/redis_manifest.h"

#include <charconv>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/state/snapshot.h"

namespace xlstmd::core {
namespace {

// Debian's Abseil has its own string_view type, distinct from std::string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr size_t kHexEntryChars = 17;  // 16 hex digits and a ','

enum Field { kFormat, kVersion, kGen, kBytes, kChunkBytes, kChunks, kXxh3, kOwner, kUpdated };

bool ParseHex16(std::string_view s, uint64_t* out) {
  if (s.size() != 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return false;
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

template <typename T>
bool ParseStrict(std::string_view s, T* out) {
  if (s.empty() || (s.size() > 1 && s[0] == '0') || s[0] == '+') return false;
  T v{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return false;
  *out = v;
  return true;
}

}  // namespace

std::string RedisHex16(uint64_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<size_t>(i)] = kDigits[v & 0xf];
  return out;
}

bool ParseRedisDecimal(std::string_view s, uint64_t* out) { return ParseStrict(s, out); }

std::array<std::string, kRedisManifestFields.size()> EncodeRedisManifest(const RedisManifest& m) {
  std::string list;
  list.reserve(m.chunk_count() * kHexEntryChars);
  for (size_t i = 0; i < m.chunk_count(); ++i) {
    if (i > 0) list.push_back(',');
    list += RedisHex16(m.chunk_xxh3[i]);
  }
  return {std::to_string(kRedisManifestFormat),
          std::to_string(m.version),
          m.generation,
          std::to_string(m.total_bytes),
          std::to_string(m.chunk_bytes),
          std::to_string(m.chunk_count()),
          std::move(list),
          m.owner,
          std::to_string(m.updated_unix_ms)};
}

absl::StatusOr<RedisManifest> DecodeRedisManifest(
    absl::Span<const std::optional<std::string_view>> values, std::string_view where,
    uint64_t max_total_bytes) {
  auto corrupt = [&](std::string_view field, std::string_view why) {
    return absl::DataLossError(absl::StrCat(Av(where), ": field '", Av(field), "' ", Av(why)));
  };
  if (values.size() != kRedisManifestFields.size()) {
    return absl::InternalError(absl::StrCat(Av(where), ": wrong number of manifest fields"));
  }
  std::string_view f[kRedisManifestFields.size()];
  for (size_t i = 0; i < values.size(); ++i) {
    if (!values[i].has_value()) return corrupt(kRedisManifestFields[i], "is missing");
    f[i] = *values[i];
  }
  int format = 0;
  if (!ParseStrict(f[kFormat], &format)) return corrupt("format", "is not a number");
  if (format > kRedisManifestFormat) {
    return absl::FailedPreconditionError(
        absl::StrCat(Av(where), ": format ", format,
                     " was written by a newer xlstmd (this one reads ", kRedisManifestFormat, ")"));
  }
  if (format != kRedisManifestFormat) return corrupt("format", "is not 1");
  RedisManifest m;
  if (!ParseStrict(f[kVersion], &m.version)) return corrupt("version", "is not a number");
  uint64_t gen = 0;
  if (!ParseHex16(f[kGen], &gen)) return corrupt("gen", "is not 16 hex digits");
  m.generation = std::string(f[kGen]);
  if (!ParseStrict(f[kBytes], &m.total_bytes)) return corrupt("bytes", "is not a number");
  if (m.total_bytes > max_total_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        Av(where), ": declares ", m.total_bytes, " bytes, over the limit of ", max_total_bytes));
  }
  if (!ParseStrict(f[kChunkBytes], &m.chunk_bytes) || m.chunk_bytes == 0 ||
      m.chunk_bytes > kRedisMaxChunkBytes) {
    return corrupt("chunk_bytes", "is not in 1 .. 64 MiB");
  }
  uint64_t chunks = 0;
  if (!ParseStrict(f[kChunks], &chunks)) return corrupt("chunks", "is not a number");
  const uint64_t expected = m.total_bytes == 0 ? 0 : (m.total_bytes - 1) / m.chunk_bytes + 1;
  if (chunks != expected) {
    return corrupt("chunks", absl::StrCat("is ", chunks, ", but ", m.total_bytes, " bytes in ",
                                          m.chunk_bytes, "-byte chunks make ", expected));
  }
  // With tiny chunk_bytes a count that matches the size can still be huge: bound it before
  // sizing the checksum list by it.
  if (chunks > kRedisMaxChunks) return corrupt("chunks", "is over the chunk limit");
  const std::string_view list = f[kXxh3];
  if ((chunks == 0 && !list.empty()) ||
      (chunks > 0 && list.size() != chunks * kHexEntryChars - 1)) {
    return corrupt("xxh3", absl::StrCat("does not hold ", chunks, " checksums"));
  }
  m.chunk_xxh3.resize(chunks);
  for (uint64_t i = 0; i < chunks; ++i) {
    if (i > 0 && list[i * kHexEntryChars - 1] != ',') {
      return corrupt("xxh3", "is not comma-separated");
    }
    if (!ParseHex16(list.substr(i * kHexEntryChars, 16), &m.chunk_xxh3[i])) {
      return corrupt("xxh3", absl::StrCat("entry ", i, " is not 16 hex digits"));
    }
  }
  if (f[kOwner].size() > kSnapshotMaxOwnerBytes) return corrupt("owner", "is too long");
  m.owner = std::string(f[kOwner]);
  if (!ParseStrict(f[kUpdated], &m.updated_unix_ms)) {
    return corrupt("updated_ms", "is not a number");
  }
  return m;
}

}  // namespace xlstmd::core
