// Helpers shared by the snapshot tests: layouts, random states and metadata, and raw access to
// the byte layout of docs/snapshot-format.md so tests can edit a field and re-seal the header
// checksum (proving the validation behind the checksum, not only the checksum).
// Test-only; single-threaded use.
#ifndef XLSTMD_TESTS_STATE_SNAPSHOT_TESTUTIL_H_
#define XLSTMD_TESTS_STATE_SNAPSHOT_TESTUTIL_H_

#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/model/state_layout.h"
#include "core/state/snapshot.h"

namespace xlstmd::testing {

// Offsets of the fixed fields (docs/snapshot-format.md, "Preamble" and "Fixed header").
namespace snapshot_offsets {
inline constexpr size_t kVersion = 8;
inline constexpr size_t kFlags = 10;
inline constexpr size_t kHeaderLen = 12;
inline constexpr size_t kFingerprint = 16;
inline constexpr size_t kFamily = 32;
inline constexpr size_t kNumBlocks = 36;
inline constexpr size_t kHeads = 40;
inline constexpr size_t kDqk = 44;
inline constexpr size_t kDv = 48;
inline constexpr size_t kSectionCount = 52;
inline constexpr size_t kFloatsPerSlot = 56;
inline constexpr size_t kPayloadOffset = 64;
inline constexpr size_t kPayloadBytes = 72;
inline constexpr size_t kSessionVersion = 80;
inline constexpr size_t kTokenCount = 88;
inline constexpr size_t kSessionFlags = 112;
inline constexpr size_t kRequestCount = 116;
inline constexpr size_t kDigestLen = 120;
inline constexpr size_t kLayoutLen = 122;
inline constexpr size_t kSessionIdLen = 124;
inline constexpr size_t kOwnerLen = 126;
inline constexpr size_t kVariable = 128;  // strings, request ids, section table
inline constexpr size_t kSectionEntryBytes = 32;
inline constexpr size_t kFooterBytes = 24;
}  // namespace snapshot_offsets

inline uint64_t GetLe(const std::string& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}
inline void PutLe(std::string& b, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

inline uint64_t HeaderLen(const std::string& b) {
  return GetLe(b, snapshot_offsets::kHeaderLen, 4);
}
// Offset of the section table: it is the last part of the header.
inline size_t SectionTableAt(const std::string& b) {
  const uint64_t sections = GetLe(b, snapshot_offsets::kSectionCount, 4);
  return 16 + HeaderLen(b) - sections * snapshot_offsets::kSectionEntryBytes;
}
inline size_t PayloadAt(const std::string& b) {
  return GetLe(b, snapshot_offsets::kPayloadOffset, 8);
}
// Recomputes the header checksum after an edit, using the header_len now in the bytes (when
// that still fits in `b`), so the edit reaches the field validation.
inline void Reseal(std::string& b) {
  const uint64_t at = 16 + HeaderLen(b);
  if (at + 8 > b.size()) return;
  PutLe(b, at, XXH3_64bits(b.data(), at), 8);
}

inline core::StateLayout Layout(int64_t blocks, int64_t heads, int64_t dqk, int64_t dv) {
  return core::StateLayout::ForMlstmStack(blocks, heads, dqk, dv);
}

// Random bit patterns, NaNs and infinities included: a restore must be bit-exact, not just
// numerically close.
// Random bit patterns, every finite float kind included (subnormals, -0, extremes): a decode
// refuses NaN and inf, so an exponent of all ones is moved one step down.
inline std::vector<float> RandomState(const core::StateLayout& layout, uint64_t seed) {
  std::vector<float> state(static_cast<size_t>(layout.floats_per_slot()));
  std::mt19937_64 rng(seed);
  for (float& f : state) {
    uint32_t bits = static_cast<uint32_t>(rng());
    if ((bits & 0x7F800000u) == 0x7F800000u) bits &= ~0x00800000u;
    std::memcpy(&f, &bits, sizeof(f));
  }
  return state;
}

inline core::SnapshotMeta SampleMeta(int requests = 3) {
  core::SnapshotMeta m;
  m.session_id = "AbCdEfGhIjKlMnOpQr_-0w";
  m.owner = "tenant-7";
  m.version = 42;
  m.token_count = 123456789;
  m.created_unix_ms = 1700000000000;
  m.updated_unix_ms = 1700000123456;
  m.flags = 0x3;
  for (int i = 0; i < requests; ++i) {
    m.recent_requests.push_back({"req-" + std::to_string(i), 40u + static_cast<uint64_t>(i)});
  }
  return m;
}

inline core::StateFingerprint Fingerprint(
    const core::StateLayout& layout,
    const std::string& digest = "0123456789abcdef0123456789abcdef") {
  return core::StateFingerprint::For(digest, layout);
}

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_STATE_SNAPSHOT_TESTUTIL_H_
