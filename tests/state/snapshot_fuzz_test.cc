// Fuzz-style robustness test for the snapshot decoder (RELIABILITY.md section 7, "Files"):
// thousands of deterministic mutations of a valid snapshot (bit flips, byte overwrites,
// truncation at every length, length fields set to huge / negative / overflowing values with
// and without a re-sealed header checksum, duplicated sections, appended garbage, splices).
// Every mutant must be refused with a corruption / identity / size code, never accepted,
// never crash, and never make the decoder allocate more than one snapshot's worth of memory
// whatever its length fields claim. Allocations are counted by replacing operator new.
#include <cstdlib>
#include <map>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "core/state/snapshot.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/state/snapshot_testutil.h"

namespace {
// Counts what the current thread allocates while `tracking` is set.
thread_local bool tracking = false;
thread_local size_t tracked_bytes = 0;
thread_local size_t largest_allocation = 0;
}  // namespace

// TSan's runtime defines operator new/delete itself (strongly: a second definition does not
// link), so under TSan nothing is counted and the allocation bounds are checked by the other
// builds only.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define XLSTMD_NO_NEW_REPLACEMENT 1
#endif
#endif
#ifndef XLSTMD_NO_NEW_REPLACEMENT
// malloc/free behind non-inlined helpers: gcc otherwise sees the pairing through inlined
// replacement operators and flags it (-Wmismatched-new-delete).
[[gnu::noinline]] static void* RawAlloc(size_t n) { return std::malloc(n == 0 ? 1 : n); }
[[gnu::noinline]] static void RawFree(void* p) { std::free(p); }

void* operator new(size_t n) {
  if (tracking) {
    tracked_bytes += n;
    largest_allocation = std::max(largest_allocation, n);
  }
  if (void* p = RawAlloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { RawFree(p); }
void operator delete[](void* p) noexcept { RawFree(p); }
void operator delete(void* p, size_t) noexcept { RawFree(p); }
void operator delete[](void* p, size_t) noexcept { RawFree(p); }
constexpr bool kCountsAllocations = true;
#else
constexpr bool kCountsAllocations = false;
#endif

namespace xlstmd::core {
namespace {

namespace off = ::xlstmd::testing::snapshot_offsets;
using ::xlstmd::testing::Fingerprint;
using ::xlstmd::testing::GetLe;
using ::xlstmd::testing::Layout;
using ::xlstmd::testing::PayloadAt;
using ::xlstmd::testing::PutLe;
using ::xlstmd::testing::RandomState;
using ::xlstmd::testing::Reseal;
using ::xlstmd::testing::SampleMeta;
using ::xlstmd::testing::SectionTableAt;

struct Mutant {
  std::string kind;
  std::string bytes;
};

class Mutator {
 public:
  explicit Mutator(std::string good) : good_(std::move(good)) {}

  std::vector<Mutant> All() {
    BitFlips(2000);
    MultiBitFlips(500);
    ByteOverwrites(1000);
    Truncations();
    LengthFieldEdits();
    DuplicatedSections();
    AppendedGarbage(300);
    Splices(300);
    return std::move(out_);
  }

 private:
  void Add(const char* kind, std::string b) {
    if (b != good_) out_.push_back({kind, std::move(b)});
  }
  size_t Pos() { return rng_() % good_.size(); }

  void BitFlips(int n) {
    for (int i = 0; i < n; ++i) {
      std::string b = good_;
      b[Pos()] ^= static_cast<char>(1u << (rng_() % 8));
      Add("bit flip", std::move(b));
    }
  }
  void MultiBitFlips(int n) {
    for (int i = 0; i < n; ++i) {
      std::string b = good_;
      for (int k = 0, flips = 2 + rng_() % 7; k < flips; ++k) {
        b[Pos()] ^= static_cast<char>(1u << (rng_() % 8));
      }
      Add("multi-bit flip", std::move(b));
    }
  }
  void ByteOverwrites(int n) {
    for (int i = 0; i < n; ++i) {
      std::string b = good_;
      const size_t at = Pos();
      for (size_t k = at, len = 1 + rng_() % 16; k < b.size() && k < at + len; ++k) {
        b[k] = static_cast<char>(rng_());
      }
      Add("byte overwrite", std::move(b));
    }
  }
  // Every prefix: the cut lands once in each region (preamble, header fields, strings,
  // request ids, section table, header checksum, padding, each section, the footer).
  void Truncations() {
    for (size_t n = 0; n < good_.size(); ++n) Add("truncation", good_.substr(0, n));
  }
  // Each length/count/offset field set to values a hostile writer would pick, once with the
  // header checksum left stale and once re-sealed so that the field checks themselves run.
  void LengthFieldEdits() {
    struct Field {
      size_t at;
      int bytes;
    };
    std::vector<Field> fields = {
        {off::kHeaderLen, 4},
        {off::kNumBlocks, 4},
        {off::kHeads, 4},
        {off::kDqk, 4},
        {off::kDv, 4},
        {off::kSectionCount, 4},
        {off::kFloatsPerSlot, 8},
        {off::kPayloadOffset, 8},
        {off::kPayloadBytes, 8},
        {off::kRequestCount, 4},
        {off::kDigestLen, 2},
        {off::kLayoutLen, 2},
        {off::kSessionIdLen, 2},
        {off::kOwnerLen, 2},
        {off::kVersion, 2},
        {good_.size() - 16, 8},  // footer total length
    };
    const size_t table = SectionTableAt(good_);
    const uint64_t sections = GetLe(good_, off::kSectionCount, 4);
    for (uint64_t s = 0; s < sections; ++s) {
      const size_t e = table + s * off::kSectionEntryBytes;
      fields.push_back({e, 4});       // kind
      fields.push_back({e + 4, 4});   // block
      fields.push_back({e + 8, 8});   // offset
      fields.push_back({e + 16, 8});  // length
    }
    // Request id length fields: after the four strings, each entry is u64 version, u16 len.
    size_t at = off::kVariable;
    for (size_t f : {off::kDigestLen, off::kLayoutLen, off::kSessionIdLen, off::kOwnerLen}) {
      at += GetLe(good_, f, 2);
    }
    for (uint64_t r = 0, n = GetLe(good_, off::kRequestCount, 4); r < n; ++r) {
      fields.push_back({at + 8, 2});
      at += 10 + GetLe(good_, at + 8, 2);
    }
    for (const Field& f : fields) {
      const uint64_t cur = GetLe(good_, f.at, f.bytes);
      const uint64_t mask = f.bytes == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * f.bytes)) - 1;
      const uint64_t values[] = {0,
                                 1,
                                 cur + 1,
                                 cur - 1,  // wraps to all-ones at 0
                                 cur * 2,
                                 mask,             // -1 / max
                                 mask >> 1,        // INT_MAX
                                 (mask >> 1) + 1,  // INT_MIN as unsigned
                                 mask - cur + 1,   // cur + this overflows to 0
                                 static_cast<uint64_t>(good_.size()) * 1000};
      for (uint64_t v : values) {
        std::string b = good_;
        PutLe(b, f.at, v & mask, f.bytes);
        Add("length field (stale checksum)", b);
        Reseal(b);
        Add("length field (re-sealed)", std::move(b));
      }
    }
  }
  // Section payloads and table entries copied over other sections.
  void DuplicatedSections() {
    const size_t table = SectionTableAt(good_);
    const uint64_t sections = GetLe(good_, off::kSectionCount, 4);
    for (uint64_t i = 0; i < sections; ++i) {
      for (uint64_t j = 0; j < sections; ++j) {
        if (i == j) continue;
        const size_t ei = table + i * off::kSectionEntryBytes;
        const size_t ej = table + j * off::kSectionEntryBytes;
        const uint64_t oi = GetLe(good_, ei + 8, 8), li = GetLe(good_, ei + 16, 8);
        const uint64_t oj = GetLe(good_, ej + 8, 8), lj = GetLe(good_, ej + 16, 8);
        std::string b = good_;
        b.replace(oj, std::min(li, lj), good_.substr(oi, std::min(li, lj)));
        Add("duplicated section payload", b);
        b.replace(ej, off::kSectionEntryBytes, good_.substr(ei, off::kSectionEntryBytes));
        Reseal(b);
        Add("duplicated section entry (re-sealed)", std::move(b));
      }
    }
    // A whole extra copy of the payload before the footer.
    const size_t payload = PayloadAt(good_);
    std::string b = good_;
    b.insert(good_.size() - off::kFooterBytes,
             good_.substr(payload, good_.size() - off::kFooterBytes - payload));
    Add("payload appended twice", std::move(b));
  }
  void AppendedGarbage(int n) {
    for (int i = 0; i < n; ++i) {
      std::string b = good_;
      for (size_t k = 0, len = 1 + rng_() % 300; k < len; ++k)
        b.push_back(static_cast<char>(rng_()));
      Add("appended garbage", std::move(b));
    }
    Add("appended copy", good_ + good_);
    Add("appended footer", good_ + good_.substr(good_.size() - off::kFooterBytes));
  }
  void Splices(int n) {
    for (int i = 0; i < n; ++i) {
      std::string b = good_;
      const size_t at = Pos();
      const size_t len = 1 + rng_() % 64;
      if (i % 2 == 0) {
        b.insert(at, std::string(len, static_cast<char>(rng_())));
      } else {
        b.erase(at, len);
      }
      Add(i % 2 == 0 ? "inserted bytes" : "deleted bytes", std::move(b));
    }
  }

  const std::string good_;
  std::mt19937_64 rng_{20240611};
  std::vector<Mutant> out_;
};

TEST(SnapshotFuzzTest, MutatedSnapshotsAreAlwaysRefused) {
  // Small and odd-sized so thousands of decodes stay fast; sections keep their padding.
  const StateLayout layout = Layout(2, 2, 3, 5);
  const StateFingerprint fp = Fingerprint(layout);
  const std::vector<float> state = RandomState(layout, 11);
  const absl::StatusOr<std::string> good = EncodeSnapshot(SampleMeta(3), fp, layout, state);
  ASSERT_TRUE(good.ok()) << good.status();
  ASSERT_TRUE(DecodeSnapshot(*good, fp, layout).ok());

  // The most any decode may allocate: the state plus metadata at the format's bounds. What
  // the length fields claim must never raise it.
  const size_t budget = MaxSnapshotBytes(layout);
  std::vector<Mutant> mutants = Mutator(*good).All();
  ASSERT_GE(mutants.size(), 5000u);

  std::map<std::string, int> per_kind;
  std::map<std::string, int> per_reason;
  size_t max_tracked = 0;
  std::vector<float> dst(state.size());
  for (size_t i = 0; i < mutants.size(); ++i) {
    const Mutant& m = mutants[i];
    tracked_bytes = 0;
    tracking = true;
    absl::Status s;
    switch (i % 3) {
      case 0:
        s = DecodeSnapshot(m.bytes, fp, layout).status();
        break;
      case 1:
        s = DecodeSnapshotInto(m.bytes, fp, layout, absl::MakeSpan(dst)).status();
        break;
      default: {
        // The streaming head decoder must agree that the whole thing is bad: either its head
        // is refused, or the full decode is.
        absl::StatusOr<SnapshotHeadInfo> h = DecodeSnapshotHead(m.bytes, fp, layout);
        s = h.ok() || h.status().code() == absl::StatusCode::kOutOfRange
                ? DecodeSnapshot(m.bytes, fp, layout).status()
                : h.status();
      }
    }
    tracking = false;
    max_tracked = std::max(max_tracked, tracked_bytes);
    ++per_kind[m.kind];
    ++per_reason[SnapshotErrorReason(s)];

    ASSERT_FALSE(s.ok()) << "mutant " << i << " (" << m.kind << ") was accepted";
    ASSERT_THAT(s.code(),
                ::testing::AnyOf(absl::StatusCode::kDataLoss, absl::StatusCode::kFailedPrecondition,
                                 absl::StatusCode::kResourceExhausted))
        << "mutant " << i << " (" << m.kind << "): " << s;
    ASSERT_FALSE(s.message().empty());
    if (kCountsAllocations) {
      ASSERT_LE(tracked_bytes, budget) << "mutant " << i << " (" << m.kind << "): " << s;
    }
  }
  std::string summary;
  for (const auto& [kind, n] : per_kind) summary += "  " + kind + ": " + std::to_string(n) + "\n";
  summary += " by reason:";
  for (const auto& [reason, n] : per_reason) summary += " " + reason + "=" + std::to_string(n);
  std::printf(
      "[snapshot fuzz] %zu mutants of a %zu-byte snapshot refused; most allocated by one "
      "decode: %zu bytes (cap %zu)\n%s\n",
      mutants.size(), good->size(), max_tracked, budget, summary.c_str());
}

// The same property on a big layout: a hostile header cannot make a decode allocate more
// than the model's own state size, however large its length fields are.
TEST(SnapshotFuzzTest, HugeLengthFieldsDoNotAllocate) {
  const StateLayout layout = Layout(4, 4, 64, 64);
  const StateFingerprint fp = Fingerprint(layout);
  const std::vector<float> state = RandomState(layout, 5);
  const std::string good = *EncodeSnapshot(SampleMeta(), fp, layout, state);
  const size_t cap = 64 << 10;  // metadata only: the state is never allocated for a bad file
  for (size_t at : {off::kOwnerLen, off::kRequestCount, off::kPayloadBytes, off::kHeaderLen,
                    off::kFloatsPerSlot, off::kSectionCount}) {
    std::string b = good;
    PutLe(b, at, ~uint64_t{0}, at == off::kOwnerLen ? 2 : 4);
    Reseal(b);
    tracked_bytes = 0;
    largest_allocation = 0;
    tracking = true;
    const absl::Status s = DecodeSnapshot(b, fp, layout).status();
    tracking = false;
    EXPECT_FALSE(s.ok());
    if (kCountsAllocations) {
      EXPECT_LE(tracked_bytes, cap) << "field at " << at << ": " << s;
    }
  }
}

}  // namespace
}  // namespace xlstmd::core
