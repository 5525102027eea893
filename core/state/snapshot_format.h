// Internals of the snapshot codec shared by snapshot.cc and snapshot_format.cc: the byte
// layout's constants (docs/snapshot-format.md), little-endian field access, bounded readers,
// the section list a StateLayout dictates, hashing, and errors carrying a reason label.
// Not an API: everything outside core/state/ includes snapshot.h.
#ifndef XLSTMD_CORE_STATE_SNAPSHOT_FORMAT_H_
#define XLSTMD_CORE_STATE_SNAPSHOT_FORMAT_H_

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/base/check.h"
#include "core/model/state_layout.h"
#include "core/state/snapshot.h"

namespace xlstmd::core::snapshot_format {

// The payload is the slot's float32 array copied byte for byte; the format is little-endian,
// so a big-endian host would need a per-float swap this code does not have.
static_assert(std::endian::native == std::endian::little, "snapshot payload assumes little-endian");

inline constexpr char kMagic[8] = {'X', 'L', 'S', 'T', 'M', 'S', 'S', '\0'};
inline constexpr char kFooterMagic[8] = {'X', 'L', 'S', 'T', 'M', 'E', 'N', 'D'};
inline constexpr uint64_t kPreambleBytes = 16;      // magic, version, flags, header_len
inline constexpr uint64_t kFixedHeaderBytes = 112;  // the fixed struct right after the preamble
inline constexpr uint64_t kRequestEntryFixedBytes = 10;  // u64 version + u16 length
inline constexpr uint64_t kSectionEntryBytes = 32;       // kind, block, offset, length, xxh3
inline constexpr uint64_t kChecksumBytes = 8;
// Footer: "XLSTMEND", total length, hash of the section checksums.
inline constexpr uint64_t kFooterBytes = 24;
// Sections start cache-line (and AVX-512) aligned.
inline constexpr uint64_t kPayloadAlignment = 64;
// The layout family in the header: family A's mLSTM stack, or family B's mixed stack (the
// section kinds are StateSectionKind's numbers).
inline constexpr uint32_t kLayoutFamilyMlstm = 1;
inline constexpr uint32_t kLayoutFamilyPaper = 2;
// Copy-and-hash works in chunks that stay in L2, so the hash reads what the copy just wrote
// instead of streaming the state from DRAM a second time.
inline constexpr size_t kHashChunkBytes = size_t{256} << 10;
inline constexpr const char* kReasonPayloadUrl = "xlstmd/snapshot-error-reason";

inline uint64_t AlignUp(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

// Debian's Abseil has its own string_view type, distinct from std::string_view.
inline absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// ---------------------------------------------------------------------------------------------
// Errors. Each carries a short reason label as a status payload so metrics and quarantine
// names do not have to parse messages.

absl::Status WithReason(absl::Status s, std::string_view reason);
absl::Status Corrupt(std::string_view reason, absl::string_view message);  // DATA_LOSS
absl::Status BadHeader(absl::string_view message);                         // DATA_LOSS
absl::Status NeedMore(uint64_t bytes);                                     // OUT_OF_RANGE
std::string Hex64(uint64_t v);
// Strings from a snapshot are whatever its writer stored: escape them before they reach a log.
std::string Quoted(std::string_view s);

// ---------------------------------------------------------------------------------------------
// Little-endian fields.

inline void PutLe(char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
inline uint64_t GetLe(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// Appends into a buffer the caller sized exactly; overrunning it is a bug in the size math.
class ByteWriter {
 public:
  ByteWriter(char* p, size_t size) : p_(p), end_(p + size) {}
  void U16(uint64_t v) { Le(v, 2); }
  void U32(uint64_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Bytes(std::string_view s) {
    Reserve(s.size());
    std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }
  const char* pos() const { return p_; }

 private:
  void Le(uint64_t v, int n) {
    Reserve(n);
    PutLe(p_, v, n);
    p_ += n;
  }
  void Reserve(size_t n) {
    XLSTMD_CHECK(static_cast<size_t>(end_ - p_) >= n);  // else the size math is wrong
  }
  char* p_;
  char* end_;
};

// Reads fields from the header; the first read past the end latches an error naming the field,
// and every later read returns zero/empty, so a parse checks ok() once per group of fields.
class ByteReader {
 public:
  explicit ByteReader(std::string_view data) : data_(data) {}
  uint64_t U16(const char* what) { return Le(2, what); }
  uint64_t U32(const char* what) { return Le(4, what); }
  uint64_t U64(const char* what) { return Le(8, what); }
  std::string_view Bytes(uint64_t n, const char* what) {
    if (!Has(n, what)) return {};
    std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  bool ok() const { return failed_at_ == nullptr; }
  const char* failed_at() const { return failed_at_; }
  uint64_t remaining() const { return data_.size() - pos_; }

 private:
  bool Has(uint64_t n, const char* what) {
    if (failed_at_ != nullptr) return false;
    if (n > data_.size() - pos_) {
      failed_at_ = what;
      return false;
    }
    return true;
  }
  uint64_t Le(int n, const char* what) {
    if (!Has(n, what)) return 0;
    const uint64_t v = GetLe(data_.data() + pos_, n);
    pos_ += n;
    return v;
  }
  std::string_view data_;
  size_t pos_ = 0;
  const char* failed_at_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// What the loaded model's layout dictates. Everything a decoder compares against comes from
// here, never from the bytes.

struct Section {
  uint32_t kind;  // StateSectionKind: 1 = C, 2 = n, 3 = m, 4 = conv window, 5..8 = sLSTM h, c, n, m
  uint32_t block;
  uint32_t index;  // position in the section table
  uint64_t offset_bytes;  // from the start of the payload (= the slot)
  uint64_t bytes;
};

struct LayoutInfo {
  uint32_t family = kLayoutFamilyMlstm;
  uint64_t num_blocks = 0, heads = 0, dqk = 0, dv = 0;
  uint64_t floats_per_slot = 0;
  uint64_t payload_bytes = 0;
  uint64_t max_header_bytes = 0;
  std::vector<Section> sections;
};

std::string SectionName(const Section& s);
absl::StatusOr<LayoutInfo> DescribeLayout(const StateLayout& layout);
// Bytes before the payload for a header of `header_len` bytes (preamble, header, checksum,
// zero padding to the payload alignment).
uint64_t HeadBytes(uint64_t header_len);
uint64_t MaxTotalBytes(const LayoutInfo& li);  // saturates at UINT64_MAX
std::string LayoutNumbers(uint64_t blocks, uint64_t heads, uint64_t dqk, uint64_t dv,
                          uint64_t floats);

struct Hash128 {
  uint64_t low64, high64;
};
// XXH3-128 over the length-prefixed weights digest and layout description.
Hash128 FingerprintHash(std::string_view weights_digest, std::string_view layout);
// XXH3-64 over the section checksums as little-endian u64s (the footer's hash).
uint64_t HashOfSectionHashes(const std::vector<uint64_t>& hashes);
uint64_t Hash64(const char* p, size_t n);  // XXH3-64
// Copies n bytes and returns XXH3-64 of them, reading the source from memory only once.
uint64_t CopyAndHash(char* dst, const char* src, size_t n);
// DATA_LOSS (reason non_finite) when section `s`, whose floats start at `values`, holds NaN or
// inf: a crafted snapshot can carry a valid checksum over them, and they would poison every
// later step of the session (the engine itself never stores one).
absl::Status CheckFinite(const Section& s, const char* values);

}  // namespace xlstmd::core::snapshot_format

#endif  // XLSTMD_CORE_STATE_SNAPSHOT_FORMAT_H_
