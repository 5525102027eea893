// Session snapshots: the binary encoding of one session's committed recurrent state plus its
// metadata, as written to the disk tier, exported to clients and (later) stored in Redis. The
// byte layout, checksums and version policy are in docs/snapshot-format.md.
//
// The decoder trusts nothing in the bytes: every count and length is compared against limits
// and against the sizes the *loaded model's* StateLayout dictates before anything is allocated
// or copied, so a hostile or corrupt snapshot costs at most one state's worth of memory and
// one pass over its bytes. Error codes (callers remap as they need, e.g. an import turns
// DATA_LOSS into INVALID_ARGUMENT):
//   DATA_LOSS           corrupt: bad magic, checksum mismatch, truncated, trailing bytes,
//                       inconsistent lengths; the message names the problem and the section.
//   FAILED_PRECONDITION intact but not for this model: other weights, other state layout, or a
//                       format version newer than this build ("written by a newer xlstmd").
//   RESOURCE_EXHAUSTED  larger than any snapshot of this model can be.
//   INVALID_ARGUMENT    the caller's own arguments are wrong (state size, over-long ids).
// SnapshotErrorReason() gives a short metric label for any of these (carried as a status
// payload: take it before rewrapping a status with a new message).
//
// Costs: one pass over the state at memory bandwidth. The hot paths (EncodeSnapshotParts to
// write, DecodeSnapshotInto to restore) never allocate the state; EncodeSnapshot and
// DecodeSnapshot return fresh 128 MiB buffers for a 7B state, whose first-touch page faults
// cost more than the codec itself.
//
// All functions are pure and thread-safe; nothing here does I/O (see snapshot_store.h). A
// decoded SnapshotMeta's session_id is whatever the writer stored: a caller that loaded the
// bytes under a key (a file name, a Redis key) should check that they agree.
#ifndef XLSTMD_CORE_STATE_SNAPSHOT_H_
#define XLSTMD_CORE_STATE_SNAPSHOT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/model/state_layout.h"

namespace xlstmd::core {

// Format versions this build writes and reads. A reader accepts
// [kSnapshotMinReadableVersion, kSnapshotFormatVersion].
inline constexpr uint16_t kSnapshotFormatVersion = 1;
inline constexpr uint16_t kSnapshotMinReadableVersion = 1;

// Hard bounds on the variable-length metadata, enforced by the encoder (INVALID_ARGUMENT) and
// the decoder (DATA_LOSS). They bound the header, and so the memory a decode can ask for.
inline constexpr size_t kSnapshotMaxSessionIdBytes = 128;
inline constexpr size_t kSnapshotMaxOwnerBytes = 1024;
inline constexpr size_t kSnapshotMaxFingerprintTextBytes = 1024;  // each of digest and layout
inline constexpr size_t kSnapshotMaxRequestIds = 1024;            // = the engine's memory
inline constexpr size_t kSnapshotMaxRequestIdBytes = 256;
// Version and token count: far beyond any real session, and far enough below 2^64 that the
// commits of any session read back can never wrap them.
inline constexpr uint64_t kSnapshotMaxCount = uint64_t{1} << 62;

// One committed request id (idempotency key) and the session version it produced.
struct CommittedRequest {
  std::string request_id;
  uint64_t version = 0;
  bool operator==(const CommittedRequest&) const = default;
};

// What a snapshot records about its session besides the state itself.
struct SnapshotMeta {
  std::string session_id;
  std::string owner;         // tenant
  uint64_t version = 0;      // committed turns
  uint64_t token_count = 0;  // tokens consumed into the state
  int64_t created_unix_ms = 0;
  int64_t updated_unix_ms = 0;
  uint32_t flags = 0;  // engine-defined bits (session start done, reply open, ...)
  std::vector<CommittedRequest> recent_requests;  // oldest first, <= kSnapshotMaxRequestIds
  bool operator==(const SnapshotMeta&) const = default;
};

// Which model a state belongs to: a state is only meaningful for the exact weights and layout
// that produced it. Build it with For() so `layout` is always StateLayout::Describe().
struct StateFingerprint {
  std::string weights_digest;  // XlstmModel::weights_digest()
  std::string layout;          // StateLayout::Describe()

  static StateFingerprint For(std::string weights_digest, const StateLayout& layout);
  // 32 hex chars: XXH3-128 over both strings. The compact id stored in every snapshot header
  // (and usable as a key prefix for shared tiers).
  std::string Id() const;
};

// A snapshot split so that a writer can send the state straight from the caller's memory
// (write/writev, Redis chunks) without first copying 128 MiB into one buffer:
// the file is `head`, then the bytes of `payload`, then `tail`.
struct SnapshotParts {
  std::string head;                 // preamble, header, header checksum, zero padding
  absl::Span<const float> payload;  // views the caller's state: keep it alive and unchanged
  std::string tail;                 // footer commit marker
  uint64_t total_bytes() const {
    return head.size() + payload.size() * sizeof(float) + tail.size();
  }
};

// Encodes `state` (layout.floats_per_slot() floats, the slot as the engine holds it, padding
// included) with `meta`. `fingerprint` must have been built for `layout`. INVALID_ARGUMENT on
// a wrong state size, a fingerprint of another layout, or metadata over the bounds above.
absl::StatusOr<std::string> EncodeSnapshot(const SnapshotMeta& meta,
                                           const StateFingerprint& fingerprint,
                                           const StateLayout& layout,
                                           absl::Span<const float> state);
// Same bytes as EncodeSnapshot, without the payload copy (hashes the state in place).
absl::StatusOr<SnapshotParts> EncodeSnapshotParts(const SnapshotMeta& meta,
                                                  const StateFingerprint& fingerprint,
                                                  const StateLayout& layout,
                                                  absl::Span<const float> state);

struct DecodedSnapshot {
  SnapshotMeta meta;
  uint16_t format_version = 0;
  std::vector<float> state;  // layout.floats_per_slot() floats
};

// Validates `bytes` completely (structure, identity, every checksum, the footer) against the
// loaded model's `expected` fingerprint and `layout`, and returns its contents. Allocates the
// state only after the header and the total length have been checked.
absl::StatusOr<DecodedSnapshot> DecodeSnapshot(std::string_view bytes,
                                               const StateFingerprint& expected,
                                               const StateLayout& layout);

// The restore path: like DecodeSnapshot, but copies the state straight into `dst`
// (layout.floats_per_slot() floats, e.g. a staging slot) while verifying it, in one pass.
// On error `dst` holds unspecified bytes: never decode into a state that is live.
absl::StatusOr<SnapshotMeta> DecodeSnapshotInto(std::string_view bytes,
                                                const StateFingerprint& expected,
                                                const StateLayout& layout, absl::Span<float> dst);

// What the head of a snapshot says, validated (preamble, header checksum, identity, section
// table), without touching the payload.
struct SnapshotHeadInfo {
  SnapshotMeta meta;
  uint16_t format_version = 0;
  uint64_t head_bytes = 0;   // where the payload starts
  uint64_t total_bytes = 0;  // exact size of the whole snapshot
};
// For streaming readers (an import, a chunked tier): pass the first bytes received. Returns
// OUT_OF_RANGE "need at least N bytes" while `prefix` is too short to hold the head (call again
// with more), otherwise the codes above. Lets a reader reject a foreign or oversized snapshot
// and learn its exact length before buffering the payload.
absl::StatusOr<SnapshotHeadInfo> DecodeSnapshotHead(std::string_view prefix,
                                                    const StateFingerprint& expected,
                                                    const StateLayout& layout);

// Exact size EncodeSnapshot would produce; INVALID_ARGUMENT as for EncodeSnapshot.
absl::StatusOr<uint64_t> EncodedSnapshotBytes(const SnapshotMeta& meta,
                                              const StateFingerprint& fingerprint,
                                              const StateLayout& layout);
// Upper bound on any valid snapshot for `layout` (metadata at its bounds). Readers use it to
// cap reads before looking at the bytes; decoding anything larger is RESOURCE_EXHAUSTED.
uint64_t MaxSnapshotBytes(const StateLayout& layout);

// A short, stable label for a snapshot error, for metrics and quarantine names: "bad_magic",
// "truncated", "trailing_bytes", "checksum", "bad_header", "bad_footer", "newer_version",
// "foreign_model", "foreign_layout", "oversized", or for other errors the lower-case code name.
std::string SnapshotErrorReason(const absl::Status& status);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_STATE_SNAPSHOT_H_
