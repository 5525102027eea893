#include "core/state/snapshot.h"

#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "core/base/check.h"
#include "core/base/status_macros.h"
#include "core/state/snapshot_format.h"

namespace xlstmd::core {
namespace snapshot_format {
namespace {

// ---------------------------------------------------------------------------------------------
// Encoding.

struct EncodePlan {
  LayoutInfo li;
  uint64_t header_len = 0;
  uint64_t head_bytes = 0;
  uint64_t total_bytes = 0;
};

absl::Status CheckFingerprint(const StateFingerprint& fp, const StateLayout& layout) {
  if (fp.layout != layout.Describe()) {
    return absl::InvalidArgumentError(
        absl::StrCat("fingerprint layout \"", fp.layout, "\" was not built for state layout \"",
                     layout.Describe(), "\" (use StateFingerprint::For)"));
  }
  if (fp.weights_digest.size() > kSnapshotMaxFingerprintTextBytes ||
      fp.layout.size() > kSnapshotMaxFingerprintTextBytes) {
    return absl::InvalidArgumentError(absl::StrCat("fingerprint strings are limited to ",
                                                   kSnapshotMaxFingerprintTextBytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<EncodePlan> PlanEncode(const SnapshotMeta& meta, const StateFingerprint& fp,
                                      const StateLayout& layout) {
  XLSTMD_RETURN_IF_ERROR(CheckFingerprint(fp, layout));
  if (meta.session_id.size() > kSnapshotMaxSessionIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("session id is ", meta.session_id.size(),
                                                   " bytes, over the snapshot limit of ",
                                                   kSnapshotMaxSessionIdBytes));
  }
  if (meta.owner.size() > kSnapshotMaxOwnerBytes) {
    return absl::InvalidArgumentError(absl::StrCat("owner is ", meta.owner.size(),
                                                   " bytes, over the snapshot limit of ",
                                                   kSnapshotMaxOwnerBytes));
  }
  if (meta.recent_requests.size() > kSnapshotMaxRequestIds) {
    return absl::InvalidArgumentError(
        absl::StrCat(meta.recent_requests.size(),
                     " recent request ids, over the snapshot limit of ", kSnapshotMaxRequestIds));
  }
  if (meta.version > kSnapshotMaxCount || meta.token_count > kSnapshotMaxCount) {
    return absl::InvalidArgumentError(absl::StrCat("version ", meta.version, " or token count ",
                                                   meta.token_count, " over the snapshot limit of ",
                                                   kSnapshotMaxCount));
  }
  EncodePlan plan;
  XLSTMD_ASSIGN_OR_RETURN(plan.li, DescribeLayout(layout));
  uint64_t variable =
      fp.weights_digest.size() + fp.layout.size() + meta.session_id.size() + meta.owner.size();
  for (const CommittedRequest& r : meta.recent_requests) {
    if (r.request_id.size() > kSnapshotMaxRequestIdBytes) {
      return absl::InvalidArgumentError(absl::StrCat("request id is ", r.request_id.size(),
                                                     " bytes, over the snapshot limit of ",
                                                     kSnapshotMaxRequestIdBytes));
    }
    variable += kRequestEntryFixedBytes + r.request_id.size();
  }
  plan.header_len = kFixedHeaderBytes + variable + plan.li.sections.size() * kSectionEntryBytes;
  if (plan.header_len > plan.li.max_header_bytes ||
      plan.header_len > std::numeric_limits<uint32_t>::max()) {
    return absl::InternalError("snapshot header size math disagrees with its limits");
  }
  plan.head_bytes = HeadBytes(plan.header_len);
  if (__builtin_add_overflow(plan.head_bytes, plan.li.payload_bytes, &plan.total_bytes) ||
      __builtin_add_overflow(plan.total_bytes, kFooterBytes, &plan.total_bytes) ||
      plan.total_bytes > std::numeric_limits<size_t>::max()) {
    return absl::InvalidArgumentError("snapshot would not fit in memory");
  }
  return plan;
}

// Writes preamble, header, header checksum and zero padding into out[0, plan.head_bytes).
void WriteHead(const SnapshotMeta& meta, const StateFingerprint& fp, const EncodePlan& plan,
               const std::vector<uint64_t>& hashes, char* out) {
  std::memset(out, 0, plan.head_bytes);
  ByteWriter w(out, plan.head_bytes);
  w.Bytes(std::string_view(kMagic, sizeof(kMagic)));
  w.U16(kSnapshotFormatVersion);
  w.U16(0);  // flags: f32 payload, uncompressed
  w.U32(plan.header_len);
  const Hash128 id = FingerprintHash(fp.weights_digest, fp.layout);
  w.U64(id.low64);
  w.U64(id.high64);
  w.U32(plan.li.family);
  w.U32(plan.li.num_blocks);
  w.U32(plan.li.heads);
  w.U32(plan.li.dqk);
  w.U32(plan.li.dv);
  w.U32(plan.li.sections.size());
  w.U64(plan.li.floats_per_slot);
  w.U64(plan.head_bytes);
  w.U64(plan.li.payload_bytes);
  w.U64(meta.version);
  w.U64(meta.token_count);
  w.U64(static_cast<uint64_t>(meta.created_unix_ms));
  w.U64(static_cast<uint64_t>(meta.updated_unix_ms));
  w.U32(meta.flags);
  w.U32(meta.recent_requests.size());
  w.U16(fp.weights_digest.size());
  w.U16(fp.layout.size());
  w.U16(meta.session_id.size());
  w.U16(meta.owner.size());
  w.Bytes(fp.weights_digest);
  w.Bytes(fp.layout);
  w.Bytes(meta.session_id);
  w.Bytes(meta.owner);
  for (const CommittedRequest& r : meta.recent_requests) {
    w.U64(r.version);
    w.U16(r.request_id.size());
    w.Bytes(r.request_id);
  }
  for (size_t i = 0; i < plan.li.sections.size(); ++i) {
    const Section& s = plan.li.sections[i];
    w.U32(s.kind);
    w.U32(s.block);
    w.U64(plan.head_bytes + s.offset_bytes);
    w.U64(s.bytes);
    w.U64(hashes[i]);
  }
  const uint64_t checksum_at = kPreambleBytes + plan.header_len;
  XLSTMD_CHECK(static_cast<uint64_t>(w.pos() - out) == checksum_at);
  w.U64(Hash64(out, checksum_at));
}

void WriteFooter(const EncodePlan& plan, const std::vector<uint64_t>& hashes, char* out) {
  ByteWriter w(out, kFooterBytes);
  w.Bytes(std::string_view(kFooterMagic, sizeof(kFooterMagic)));
  w.U64(plan.total_bytes);
  w.U64(HashOfSectionHashes(hashes));
}

absl::Status CheckStateSize(const LayoutInfo& li, size_t floats) {
  if (floats != li.floats_per_slot) {
    return absl::InvalidArgumentError(
        absl::StrCat("state has ", floats, " floats, the layout ", li.floats_per_slot));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Decoding.

struct ParsedHead {
  SnapshotHeadInfo info;
  std::vector<uint64_t> hashes;  // per section, from the table
};

// Layout numbers, layout description and weights digest against the loaded model. Both sides
// are named so an operator can tell which model a stray snapshot came from.
absl::Status CheckIdentity(const StateFingerprint& expected, const LayoutInfo& li, uint64_t family,
                           uint64_t blocks, uint64_t heads, uint64_t dqk, uint64_t dv,
                           uint64_t floats, std::string_view digest, std::string_view layout_text) {
  const bool layout_differs = family != li.family || blocks != li.num_blocks ||
                              heads != li.heads || dqk != li.dqk || dv != li.dv ||
                              floats != li.floats_per_slot || layout_text != expected.layout;
  const bool weights_differ = digest != expected.weights_digest;
  if (!layout_differs && !weights_differ) return absl::OkStatus();
  std::string msg = "snapshot belongs to another model:";
  if (weights_differ) {
    absl::StrAppend(&msg, " weights digest ", Quoted(digest), ", loaded model has ",
                    Quoted(expected.weights_digest), ";");
  }
  if (layout_differs) {
    absl::StrAppend(&msg, " state layout ", Quoted(layout_text), " (family ", family, ", ",
                    LayoutNumbers(blocks, heads, dqk, dv, floats), "), loaded model has ",
                    Quoted(expected.layout), " (family ", li.family, ", ",
                    LayoutNumbers(li.num_blocks, li.heads, li.dqk, li.dv, li.floats_per_slot),
                    ");");
  }
  msg.pop_back();
  return WithReason(absl::FailedPreconditionError(msg),
                    weights_differ ? "foreign_model" : "foreign_layout");
}

// Preamble and header checksum; returns header_len. `prefix`: `b` may be a prefix of the
// snapshot, so running out of bytes is NeedMore rather than truncation.
absl::StatusOr<uint64_t> CheckPreamble(std::string_view b, const LayoutInfo& li, bool prefix,
                                       uint16_t* version) {
  if (b.size() < kPreambleBytes) {
    if (prefix) return NeedMore(kPreambleBytes);
    return Corrupt("truncated", absl::StrCat("snapshot truncated: ", b.size(),
                                             " bytes, shorter than the 16-byte preamble"));
  }
  if (std::memcmp(b.data(), kMagic, sizeof(kMagic)) != 0) {
    return Corrupt("bad_magic", "snapshot has a bad magic number (not an xlstmd session snapshot)");
  }
  *version = static_cast<uint16_t>(GetLe(b.data() + 8, 2));
  const uint64_t flags = GetLe(b.data() + 10, 2);
  const uint64_t header_len = GetLe(b.data() + 12, 4);
  if (header_len < kFixedHeaderBytes || header_len > li.max_header_bytes) {
    return BadHeader(absl::StrCat("header length ", header_len, " is outside [", kFixedHeaderBytes,
                                  ", ", li.max_header_bytes, "] for this model"));
  }
  const uint64_t checksum_at = kPreambleBytes + header_len;
  if (b.size() < checksum_at + kChecksumBytes) {
    if (prefix) return NeedMore(checksum_at + kChecksumBytes);
    return Corrupt("truncated",
                   absl::StrCat("snapshot truncated: ", b.size(), " bytes end inside the ",
                                checksum_at + kChecksumBytes, "-byte header"));
  }
  const uint64_t stored = GetLe(b.data() + checksum_at, 8);
  const uint64_t computed = Hash64(b.data(), checksum_at);
  if (stored != computed) {
    return Corrupt("checksum", absl::StrCat("snapshot header checksum mismatch (stored ",
                                            Hex64(stored), ", computed ", Hex64(computed), ")"));
  }
  // The version is only believed once the checksum says the preamble is intact: a flipped bit
  // must read as corruption, not as "too new". The preamble and this checksum rule are frozen
  // for every format version so that any reader can tell the two apart.
  if (*version > kSnapshotFormatVersion) {
    const std::string msg = absl::StrCat(
        "snapshot format version ", *version, " was written by a newer xlstmd (this build reads ",
        "versions ", kSnapshotMinReadableVersion, "..", kSnapshotFormatVersion, ")");
    return WithReason(absl::FailedPreconditionError(msg), "newer_version");
  }
  if (*version == 0) return BadHeader("format version 0 does not exist");
  if (*version < kSnapshotMinReadableVersion) {
    return WithReason(
        absl::FailedPreconditionError(absl::StrCat(
            "snapshot format version ", *version, " is too old for this build (reads versions ",
            kSnapshotMinReadableVersion, "..", kSnapshotFormatVersion, ")")),
        "old_version");
  }
  if (flags != 0) return BadHeader(absl::StrCat("unknown flags 0x", absl::Hex(flags)));
  return header_len;
}

// The fixed struct after the preamble (docs/snapshot-format.md, "Fixed header").
struct FixedHeader {
  uint64_t id_low = 0, id_high = 0;
  uint64_t family = 0, blocks = 0, heads = 0, dqk = 0, dv = 0, section_count = 0;
  uint64_t floats = 0, payload_offset = 0, payload_bytes = 0;
  uint64_t request_count = 0, digest_len = 0, layout_len = 0, sid_len = 0, owner_len = 0;
};

absl::Status EndedInside(const ByteReader& r) {
  return BadHeader(absl::StrCat("it ends inside the ", r.failed_at(), " field"));
}

// Reads the fixed struct (session scalars go straight into `meta`) and checks every length
// in it against the format's bounds, before any of them is used.
absl::Status ReadFixedHeader(ByteReader& r, FixedHeader* h, SnapshotMeta* meta) {
  h->id_low = r.U64("fingerprint");
  h->id_high = r.U64("fingerprint");
  h->family = r.U32("layout family");
  h->blocks = r.U32("num_blocks");
  h->heads = r.U32("heads");
  h->dqk = r.U32("dqk");
  h->dv = r.U32("dv");
  h->section_count = r.U32("section count");
  h->floats = r.U64("floats_per_slot");
  h->payload_offset = r.U64("payload offset");
  h->payload_bytes = r.U64("payload length");
  meta->version = r.U64("version");
  meta->token_count = r.U64("token_count");
  meta->created_unix_ms = static_cast<int64_t>(r.U64("created_unix_ms"));
  meta->updated_unix_ms = static_cast<int64_t>(r.U64("updated_unix_ms"));
  meta->flags = static_cast<uint32_t>(r.U32("flags"));
  h->request_count = r.U32("request id count");
  h->digest_len = r.U16("weights digest length");
  h->layout_len = r.U16("layout length");
  h->sid_len = r.U16("session id length");
  h->owner_len = r.U16("owner length");
  if (!r.ok()) return EndedInside(r);
  struct Bound {
    const char* what;
    uint64_t value, max;
  };
  for (const Bound& c :
       {Bound{"weights digest length", h->digest_len, kSnapshotMaxFingerprintTextBytes},
        Bound{"layout length", h->layout_len, kSnapshotMaxFingerprintTextBytes},
        Bound{"session id length", h->sid_len, kSnapshotMaxSessionIdBytes},
        Bound{"owner length", h->owner_len, kSnapshotMaxOwnerBytes},
        Bound{"request id count", h->request_count, kSnapshotMaxRequestIds},
        Bound{"version", meta->version, kSnapshotMaxCount},
        Bound{"token_count", meta->token_count, kSnapshotMaxCount}}) {
    if (c.value > c.max) {
      return BadHeader(absl::StrCat(c.what, " ", c.value, " exceeds the limit of ", c.max));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadRequestIds(ByteReader& r, uint64_t count, SnapshotMeta* meta) {
  meta->recent_requests.reserve(count);  // <= kSnapshotMaxRequestIds, checked
  for (uint64_t i = 0; i < count; ++i) {
    CommittedRequest req;
    req.version = r.U64("request id version");
    const uint64_t len = r.U16("request id length");
    if (len > kSnapshotMaxRequestIdBytes) {
      return BadHeader(absl::StrCat("request id ", i, " length ", len, " exceeds the limit of ",
                                    kSnapshotMaxRequestIdBytes));
    }
    req.request_id.assign(r.Bytes(len, "request id"));
    if (!r.ok()) return EndedInside(r);
    meta->recent_requests.push_back(std::move(req));
  }
  return absl::OkStatus();
}

// Every table entry must equal what the loaded layout dictates: the table is checked, never
// used to find data.
absl::Status ReadSectionTable(ByteReader& r, const LayoutInfo& li, uint64_t head_bytes,
                              std::vector<uint64_t>* hashes) {
  hashes->reserve(li.sections.size());
  for (const Section& want : li.sections) {
    const uint64_t kind = r.U32("section kind");
    const uint64_t block = r.U32("section block");
    const uint64_t offset = r.U64("section offset");
    const uint64_t length = r.U64("section length");
    const uint64_t hash = r.U64("section checksum");
    if (!r.ok()) return EndedInside(r);
    const uint64_t want_offset = head_bytes + want.offset_bytes;
    if (kind != want.kind || block != want.block || offset != want_offset || length != want.bytes) {
      return BadHeader(absl::StrCat(SectionName(want), " table entry says kind ", kind, " block ",
                                    block, " offset ", offset, " length ", length,
                                    ", expected kind ", want.kind, " block ", want.block,
                                    " offset ", want_offset, " length ", want.bytes));
    }
    hashes->push_back(hash);
  }
  return absl::OkStatus();
}

// Everything before the payload: preamble, header (identity first, then the structure the
// loaded layout dictates), header checksum and padding.
absl::StatusOr<ParsedHead> ParseHead(std::string_view b, const StateFingerprint& expected,
                                     const LayoutInfo& li, bool prefix) {
  ParsedHead out;
  SnapshotHeadInfo& info = out.info;
  XLSTMD_ASSIGN_OR_RETURN(const uint64_t header_len,
                          CheckPreamble(b, li, prefix, &info.format_version));
  ByteReader r(b.substr(kPreambleBytes, header_len));
  FixedHeader h;
  XLSTMD_RETURN_IF_ERROR(ReadFixedHeader(r, &h, &info.meta));
  const std::string_view digest = r.Bytes(h.digest_len, "weights digest");
  const std::string_view layout_text = r.Bytes(h.layout_len, "layout");
  const std::string_view sid = r.Bytes(h.sid_len, "session id");
  const std::string_view owner = r.Bytes(h.owner_len, "owner");
  if (!r.ok()) return EndedInside(r);

  XLSTMD_RETURN_IF_ERROR(CheckIdentity(expected, li, h.family, h.blocks, h.heads, h.dqk, h.dv,
                                       h.floats, digest, layout_text));
  const Hash128 id = FingerprintHash(digest, layout_text);
  if (id.low64 != h.id_low || id.high64 != h.id_high) {
    return BadHeader("the fingerprint id does not match its weights digest and layout");
  }
  // From here on the layout is the loaded model's, so every size below is known exactly.
  info.head_bytes = HeadBytes(header_len);
  if (h.section_count != li.sections.size()) {
    return BadHeader(
        absl::StrCat("section count ", h.section_count, ", this layout has ", li.sections.size()));
  }
  if (h.payload_bytes != li.payload_bytes || h.payload_offset != info.head_bytes) {
    return BadHeader(absl::StrCat("payload at ", h.payload_offset, " length ", h.payload_bytes,
                                  ", expected at ", info.head_bytes, " length ", li.payload_bytes));
  }
  info.meta.session_id.assign(sid);
  info.meta.owner.assign(owner);
  XLSTMD_RETURN_IF_ERROR(ReadRequestIds(r, h.request_count, &info.meta));
  XLSTMD_RETURN_IF_ERROR(ReadSectionTable(r, li, info.head_bytes, &out.hashes));
  if (r.remaining() != 0) {
    return BadHeader(absl::StrCat(r.remaining(), " unparsed bytes at the end of the header"));
  }

  // Padding is verified too, so that no byte of a snapshot can change unnoticed.
  if (b.size() < info.head_bytes) {
    if (prefix) return NeedMore(info.head_bytes);
    return Corrupt("truncated", absl::StrCat("snapshot truncated: ", b.size(),
                                             " bytes end before the payload at ", info.head_bytes));
  }
  for (uint64_t i = kPreambleBytes + header_len + kChecksumBytes; i < info.head_bytes; ++i) {
    if (b[i] != '\0') return BadHeader("nonzero padding before the payload");
  }
  info.total_bytes = info.head_bytes + li.payload_bytes + kFooterBytes;  // <= MaxTotalBytes
  return out;
}

// Total length and the footer commit marker; cheap, so done before allocating or hashing.
absl::Status CheckFrame(std::string_view b, const ParsedHead& head, const LayoutInfo& li) {
  const uint64_t total = head.info.total_bytes;
  if (b.size() < total) {
    std::string where = "the footer";
    for (const Section& s : li.sections) {
      if (b.size() < head.info.head_bytes + s.offset_bytes + s.bytes) {
        where = SectionName(s);
        break;
      }
    }
    return Corrupt("truncated", absl::StrCat("snapshot truncated: ", b.size(), " of ", total,
                                             " bytes; it ends inside ", where));
  }
  if (b.size() > total) {
    return Corrupt("trailing_bytes", absl::StrCat("snapshot has ", b.size() - total,
                                                  " trailing bytes after the footer (", b.size(),
                                                  " bytes, expected ", total, ")"));
  }
  const char* f = b.data() + total - kFooterBytes;
  if (std::memcmp(f, kFooterMagic, sizeof(kFooterMagic)) != 0) {
    return Corrupt("bad_footer", absl::StrCat("snapshot footer commit marker \"XLSTMEND\" is ",
                                              "missing at offset ", total - kFooterBytes));
  }
  const uint64_t stored_total = GetLe(f + 8, 8);
  if (stored_total != total) {
    return Corrupt("bad_footer", absl::StrCat("snapshot footer records ", stored_total,
                                              " bytes, the snapshot has ", total));
  }
  const uint64_t stored = GetLe(f + 16, 8);
  const uint64_t computed = HashOfSectionHashes(head.hashes);
  if (stored != computed) {
    return Corrupt("bad_footer",
                   absl::StrCat("snapshot footer hash over the section checksums mismatches ",
                                "(stored ", Hex64(stored), ", computed ", Hex64(computed), ")"));
  }
  return absl::OkStatus();
}

// Verifies every section checksum; with `dst` copies the payload there in the same pass.
absl::Status CheckSections(std::string_view b, const ParsedHead& head, const LayoutInfo& li,
                           char* dst) {
  const char* payload = b.data() + head.info.head_bytes;
  for (size_t i = 0; i < li.sections.size(); ++i) {
    const Section& s = li.sections[i];
    const char* src = payload + s.offset_bytes;
    const uint64_t computed =
        dst != nullptr ? CopyAndHash(dst + s.offset_bytes, src, s.bytes) : Hash64(src, s.bytes);
    if (computed != head.hashes[i]) {
      return Corrupt("checksum",
                     absl::StrCat("snapshot ", SectionName(s), " checksum mismatch (stored ",
                                  Hex64(head.hashes[i]), ", computed ", Hex64(computed), ")"));
    }
    XLSTMD_RETURN_IF_ERROR(CheckFinite(s, dst != nullptr ? dst + s.offset_bytes : src));
  }
  return absl::OkStatus();
}

absl::StatusOr<LayoutInfo> LayoutForDecode(const StateFingerprint& expected,
                                           const StateLayout& layout) {
  XLSTMD_RETURN_IF_ERROR(CheckFingerprint(expected, layout));
  return DescribeLayout(layout);
}

// Everything a full decode checks except the section checksums, which the caller verifies
// while copying the payload. Nothing is allocated for the state before this passes.
struct Checked {
  LayoutInfo li;
  ParsedHead head;
};
absl::StatusOr<Checked> CheckAllButSections(std::string_view bytes,
                                            const StateFingerprint& expected,
                                            const StateLayout& layout) {
  Checked c;
  XLSTMD_ASSIGN_OR_RETURN(c.li, LayoutForDecode(expected, layout));
  if (bytes.size() > MaxTotalBytes(c.li)) {
    return WithReason(absl::ResourceExhaustedError(
                          absl::StrCat("snapshot is ", bytes.size(), " bytes, over the ",
                                       MaxTotalBytes(c.li), "-byte maximum for this model")),
                      "oversized");
  }
  XLSTMD_ASSIGN_OR_RETURN(c.head, ParseHead(bytes, expected, c.li, /*prefix=*/false));
  XLSTMD_RETURN_IF_ERROR(CheckFrame(bytes, c.head, c.li));
  return c;
}

}  // namespace
}  // namespace snapshot_format

namespace sf = snapshot_format;

// ---------------------------------------------------------------------------------------------

StateFingerprint StateFingerprint::For(std::string weights_digest, const StateLayout& layout) {
  return StateFingerprint{std::move(weights_digest), layout.Describe()};
}

std::string StateFingerprint::Id() const {
  const sf::Hash128 h = sf::FingerprintHash(weights_digest, layout);
  return absl::StrCat(absl::Hex(h.high64, absl::kZeroPad16), absl::Hex(h.low64, absl::kZeroPad16));
}

absl::StatusOr<uint64_t> EncodedSnapshotBytes(const SnapshotMeta& meta,
                                              const StateFingerprint& fingerprint,
                                              const StateLayout& layout) {
  XLSTMD_ASSIGN_OR_RETURN(const sf::EncodePlan plan, sf::PlanEncode(meta, fingerprint, layout));
  return plan.total_bytes;
}

uint64_t MaxSnapshotBytes(const StateLayout& layout) {
  absl::StatusOr<sf::LayoutInfo> li = sf::DescribeLayout(layout);
  return li.ok() ? sf::MaxTotalBytes(*li) : 0;
}

absl::StatusOr<std::string> EncodeSnapshot(const SnapshotMeta& meta,
                                           const StateFingerprint& fingerprint,
                                           const StateLayout& layout,
                                           absl::Span<const float> state) {
  XLSTMD_ASSIGN_OR_RETURN(const sf::EncodePlan plan, sf::PlanEncode(meta, fingerprint, layout));
  XLSTMD_RETURN_IF_ERROR(sf::CheckStateSize(plan.li, state.size()));
  std::string out;
  out.resize(plan.total_bytes);
  char* payload = out.data() + plan.head_bytes;
  const char* src = reinterpret_cast<const char*>(state.data());
  std::vector<uint64_t> hashes;
  hashes.reserve(plan.li.sections.size());
  for (const sf::Section& s : plan.li.sections) {
    hashes.push_back(sf::CopyAndHash(payload + s.offset_bytes, src + s.offset_bytes, s.bytes));
  }
  sf::WriteHead(meta, fingerprint, plan, hashes, out.data());
  sf::WriteFooter(plan, hashes, payload + plan.li.payload_bytes);
  return out;
}

absl::StatusOr<SnapshotParts> EncodeSnapshotParts(const SnapshotMeta& meta,
                                                  const StateFingerprint& fingerprint,
                                                  const StateLayout& layout,
                                                  absl::Span<const float> state) {
  XLSTMD_ASSIGN_OR_RETURN(const sf::EncodePlan plan, sf::PlanEncode(meta, fingerprint, layout));
  XLSTMD_RETURN_IF_ERROR(sf::CheckStateSize(plan.li, state.size()));
  const char* src = reinterpret_cast<const char*>(state.data());
  std::vector<uint64_t> hashes;
  hashes.reserve(plan.li.sections.size());
  for (const sf::Section& s : plan.li.sections) {
    hashes.push_back(sf::Hash64(src + s.offset_bytes, s.bytes));
  }
  SnapshotParts parts;
  parts.head.resize(plan.head_bytes);
  sf::WriteHead(meta, fingerprint, plan, hashes, parts.head.data());
  parts.payload = state;
  parts.tail.resize(sf::kFooterBytes);
  sf::WriteFooter(plan, hashes, parts.tail.data());
  return parts;
}

absl::StatusOr<DecodedSnapshot> DecodeSnapshot(std::string_view bytes,
                                               const StateFingerprint& expected,
                                               const StateLayout& layout) {
  XLSTMD_ASSIGN_OR_RETURN(sf::Checked c, sf::CheckAllButSections(bytes, expected, layout));
  DecodedSnapshot out;
  out.state.resize(c.li.floats_per_slot);  // the loaded layout's size, nothing from the bytes
  XLSTMD_RETURN_IF_ERROR(
      sf::CheckSections(bytes, c.head, c.li, reinterpret_cast<char*>(out.state.data())));
  out.meta = std::move(c.head.info.meta);
  out.format_version = c.head.info.format_version;
  return out;
}

absl::StatusOr<SnapshotMeta> DecodeSnapshotInto(std::string_view bytes,
                                                const StateFingerprint& expected,
                                                const StateLayout& layout, absl::Span<float> dst) {
  if (dst.size() != static_cast<size_t>(layout.floats_per_slot())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "destination has ", dst.size(), " floats, the layout ", layout.floats_per_slot()));
  }
  XLSTMD_ASSIGN_OR_RETURN(sf::Checked c, sf::CheckAllButSections(bytes, expected, layout));
  XLSTMD_RETURN_IF_ERROR(
      sf::CheckSections(bytes, c.head, c.li, reinterpret_cast<char*>(dst.data())));
  return std::move(c.head.info.meta);
}

absl::StatusOr<SnapshotHeadInfo> DecodeSnapshotHead(std::string_view prefix,
                                                    const StateFingerprint& expected,
                                                    const StateLayout& layout) {
  XLSTMD_ASSIGN_OR_RETURN(const sf::LayoutInfo li, sf::LayoutForDecode(expected, layout));
  XLSTMD_ASSIGN_OR_RETURN(sf::ParsedHead head,
                          sf::ParseHead(prefix, expected, li, /*prefix=*/true));
  return std::move(head.info);
}

std::string SnapshotErrorReason(const absl::Status& status) {
  if (absl::optional<absl::Cord> reason = status.GetPayload(sf::kReasonPayloadUrl)) {
    return std::string(*reason);
  }
  return absl::AsciiStrToLower(absl::StatusCodeToString(status.code()));
}

}  // namespace xlstmd::core
