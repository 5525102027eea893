#include "core/state/snapshot_format.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack: no heap allocation per section
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace xlstmd::core::snapshot_format {

absl::Status WithReason(absl::Status s, std::string_view reason) {
  s.SetPayload(kReasonPayloadUrl, absl::Cord(Av(reason)));
  return s;
}
absl::Status Corrupt(std::string_view reason, absl::string_view message) {
  return WithReason(absl::DataLossError(message), reason);
}
absl::Status BadHeader(absl::string_view message) {
  return Corrupt("bad_header", absl::StrCat("snapshot header is invalid: ", message));
}
absl::Status NeedMore(uint64_t bytes) {
  return absl::OutOfRangeError(absl::StrCat("need at least ", bytes, " bytes of the snapshot"));
}
std::string Hex64(uint64_t v) { return absl::StrCat("0x", absl::Hex(v, absl::kZeroPad16)); }
// Strings from a snapshot are whatever its writer stored: escape them before they reach a log.
std::string Quoted(std::string_view s) { return absl::StrCat("\"", absl::CHexEscape(Av(s)), "\""); }

// ---------------------------------------------------------------------------------------------
// The layout.

std::string SectionName(const Section& s) {
  return absl::StrCat("section ", s.index, " (block ", s.block, " ",
                      StateSectionName(static_cast<StateSectionKind>(s.kind)), ")");
}

absl::StatusOr<LayoutInfo> DescribeLayout(const StateLayout& layout) {
  const uint64_t u32_max = std::numeric_limits<uint32_t>::max();
  if (layout.num_blocks() < 0 || layout.heads() < 0 || layout.dqk() < 0 || layout.dv() < 0 ||
      layout.floats_per_slot() < 0 || static_cast<uint64_t>(layout.num_blocks()) > u32_max ||
      static_cast<uint64_t>(layout.heads()) > u32_max ||
      static_cast<uint64_t>(layout.dqk()) > u32_max ||
      static_cast<uint64_t>(layout.dv()) > u32_max) {
    return absl::InvalidArgumentError(
        absl::StrCat("state layout ", layout.Describe(), " does not fit the snapshot format"));
  }
  LayoutInfo li;
  li.num_blocks = static_cast<uint64_t>(layout.num_blocks());
  li.heads = static_cast<uint64_t>(layout.heads());
  li.dqk = static_cast<uint64_t>(layout.dqk());
  li.dv = static_cast<uint64_t>(layout.dv());
  li.floats_per_slot = static_cast<uint64_t>(layout.floats_per_slot());
  li.family = layout.paper() ? kLayoutFamilyPaper : kLayoutFamilyMlstm;
  const std::vector<StateSection>& sections = layout.sections();
  const uint64_t section_count = sections.size();
  uint64_t table_bytes = 0;
  if (__builtin_mul_overflow(li.floats_per_slot, uint64_t{sizeof(float)}, &li.payload_bytes) ||
      __builtin_mul_overflow(section_count, kSectionEntryBytes, &table_bytes) ||
      section_count > u32_max) {
    return absl::InvalidArgumentError(
        absl::StrCat("state layout ", layout.Describe(), " is too large for the snapshot format"));
  }
  // Sections tile the slot exactly, in order, each keeping the layout's alignment padding, so a
  // restore is bit-exact for the whole slot.
  li.sections.reserve(section_count);
  int64_t prev_end = 0;
  for (const StateSection& sec : sections) {
    if (sec.offset != prev_end || sec.floats < 0 || sec.block < 0 ||
        static_cast<uint64_t>(sec.block) > u32_max) {
      return absl::InternalError(absl::StrCat("state layout ", layout.Describe(),
                                              " does not tile the slot contiguously"));
    }
    li.sections.push_back(Section{static_cast<uint32_t>(sec.kind), static_cast<uint32_t>(sec.block),
                                  static_cast<uint32_t>(li.sections.size()),
                                  static_cast<uint64_t>(sec.offset) * 4,
                                  static_cast<uint64_t>(sec.floats) * 4});
    prev_end = sec.offset + sec.floats;
  }
  if ((li.sections.empty() ? 0 : li.sections.back().offset_bytes + li.sections.back().bytes) !=
      li.payload_bytes) {
    return absl::InternalError(
        absl::StrCat("state layout ", layout.Describe(), " sections do not cover the slot"));
  }
  // Bounded by the format's own limits plus this layout's table: at most ~0.3 MB + 96 B/block.
  li.max_header_bytes =
      kFixedHeaderBytes + 2 * kSnapshotMaxFingerprintTextBytes + kSnapshotMaxSessionIdBytes +
      kSnapshotMaxOwnerBytes +
      kSnapshotMaxRequestIds * (kRequestEntryFixedBytes + kSnapshotMaxRequestIdBytes) + table_bytes;
  return li;
}

uint64_t HeadBytes(uint64_t header_len) {
  return AlignUp(kPreambleBytes + header_len + kChecksumBytes, kPayloadAlignment);
}

uint64_t MaxTotalBytes(const LayoutInfo& li) {
  uint64_t total = 0;
  if (__builtin_add_overflow(HeadBytes(li.max_header_bytes), li.payload_bytes, &total) ||
      __builtin_add_overflow(total, kFooterBytes, &total)) {
    return std::numeric_limits<uint64_t>::max();
  }
  return total;
}

std::string LayoutNumbers(uint64_t blocks, uint64_t heads, uint64_t dqk, uint64_t dv,
                          uint64_t floats) {
  return absl::StrCat("L=", blocks, " H=", heads, " dqk=", dqk, " dv=", dv, ", ", floats,
                      " floats");
}

namespace {

std::string FingerprintText(std::string_view weights_digest, std::string_view layout) {
  // Length-prefixed so no two (digest, layout) pairs serialize alike.
  return absl::StrCat(weights_digest.size(), ":", Av(weights_digest), ";", layout.size(), ":",
                      Av(layout));
}

}  // namespace

Hash128 FingerprintHash(std::string_view weights_digest, std::string_view layout) {
  const std::string text = FingerprintText(weights_digest, layout);
  const XXH128_hash_t h = XXH3_128bits(text.data(), text.size());
  return Hash128{h.low64, h.high64};
}

uint64_t Hash64(const char* p, size_t n) { return XXH3_64bits(p, n); }

uint64_t HashOfSectionHashes(const std::vector<uint64_t>& hashes) {
  std::string le(hashes.size() * 8, '\0');
  for (size_t i = 0; i < hashes.size(); ++i) PutLe(le.data() + 8 * i, hashes[i], 8);
  return XXH3_64bits(le.data(), le.size());
}

// Copies n bytes and returns XXH3-64 of them, reading the source from memory only once.
uint64_t CopyAndHash(char* dst, const char* src, size_t n) {
  if (n <= kHashChunkBytes) {
    std::memcpy(dst, src, n);
    return XXH3_64bits(dst, n);
  }
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  for (size_t off = 0; off < n; off += kHashChunkBytes) {
    const size_t len = std::min(kHashChunkBytes, n - off);
    std::memcpy(dst + off, src + off, len);
    XXH3_64bits_update(&st, dst + off, len);
  }
  return XXH3_64bits_digest(&st);
}

absl::Status CheckFinite(const Section& s, const char* values) {
  for (uint64_t j = 0; j < s.bytes / sizeof(float); ++j) {
    float v;
    std::memcpy(&v, values + j * sizeof(float), sizeof(float));
    if (!std::isfinite(v)) {
      return Corrupt("non_finite", absl::StrCat("snapshot ", SectionName(s),
                                                " holds a non-finite value at float ", j));
    }
  }
  return absl::OkStatus();
}

}  // namespace xlstmd::core::snapshot_format
