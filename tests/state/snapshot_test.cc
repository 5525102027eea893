// Snapshot encode/decode: bit-exact round trips over odd layouts, one test per corruption
// class (code, message and reason label), identity checks, the streaming head decoder, and a
// throughput log line for a 128 MiB (xLSTM-7B sized) state.
#include "core/state/snapshot.h"

#include <chrono>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/state/snapshot_testutil.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

namespace off = ::xlstmd::testing::snapshot_offsets;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::xlstmd::testing::Fingerprint;
using ::xlstmd::testing::GetLe;
using ::xlstmd::testing::Layout;
using ::xlstmd::testing::PayloadAt;
using ::xlstmd::testing::PutLe;
using ::xlstmd::testing::RandomState;
using ::xlstmd::testing::Reseal;
using ::xlstmd::testing::SampleMeta;
using ::xlstmd::testing::SectionTableAt;
using ::xlstmd::testing::StatusIs;

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class SnapshotTest : public ::testing::Test {
 protected:
  // Odd sizes on purpose: sections are not multiples of 16 floats before padding.
  StateLayout layout_ = Layout(3, 3, 5, 7);
  StateFingerprint fp_ = Fingerprint(layout_);
  SnapshotMeta meta_ = SampleMeta();
  std::vector<float> state_ = RandomState(layout_, 1);

  std::string Encode() {
    absl::StatusOr<std::string> s = EncodeSnapshot(meta_, fp_, layout_, state_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : std::string();
  }
  absl::Status Decode(const std::string& bytes) {
    return DecodeSnapshot(bytes, fp_, layout_).status();
  }
  // Byte offset of section `i` (3 per block: C, n, m) in the encoded file.
  size_t SectionAt(const std::string& bytes, size_t i) {
    return GetLe(bytes, SectionTableAt(bytes) + i * off::kSectionEntryBytes + 8, 8);
  }
};

TEST_F(SnapshotTest, RoundTripIsBitExactOverRandomLayouts) {
  std::mt19937_64 rng(7);
  for (int iter = 0; iter < 40; ++iter) {
    const StateLayout layout = Layout(1 + rng() % 5, 1 + rng() % 4, 1 + rng() % 19, 1 + rng() % 23);
    const StateFingerprint fp = Fingerprint(layout, "digest-" + std::to_string(iter));
    const std::vector<float> state = RandomState(layout, iter);
    SnapshotMeta meta = SampleMeta(static_cast<int>(rng() % 5));
    meta.flags = static_cast<uint32_t>(rng());
    meta.created_unix_ms = -static_cast<int64_t>(rng() % 1000);  // signed fields survive

    absl::StatusOr<std::string> bytes = EncodeSnapshot(meta, fp, layout, state);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(*EncodedSnapshotBytes(meta, fp, layout), bytes->size());
    EXPECT_LE(bytes->size(), MaxSnapshotBytes(layout));
    EXPECT_EQ(PayloadAt(*bytes) % 64, 0u) << "payload must be 64-byte aligned";

    absl::StatusOr<DecodedSnapshot> d = DecodeSnapshot(*bytes, fp, layout);
    ASSERT_TRUE(d.ok()) << layout.Describe() << ": " << d.status();
    EXPECT_TRUE(SameBits(d->state, state)) << layout.Describe();
    EXPECT_EQ(d->meta, meta);
    EXPECT_EQ(d->format_version, kSnapshotFormatVersion);

    std::vector<float> dst(state.size());
    absl::StatusOr<SnapshotMeta> m = DecodeSnapshotInto(*bytes, fp, layout, absl::MakeSpan(dst));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_TRUE(SameBits(dst, state));
    EXPECT_EQ(*m, meta);

    // The zero-copy parts are the same bytes.
    absl::StatusOr<SnapshotParts> parts = EncodeSnapshotParts(meta, fp, layout, state);
    ASSERT_TRUE(parts.ok()) << parts.status();
    const std::string joined = parts->head +
                               std::string(reinterpret_cast<const char*>(parts->payload.data()),
                                           parts->payload.size() * sizeof(float)) +
                               parts->tail;
    EXPECT_EQ(joined, *bytes);
    EXPECT_EQ(parts->total_bytes(), bytes->size());
  }
}

TEST_F(SnapshotTest, MetadataAtItsBoundsRoundTrips) {
  meta_.version = kSnapshotMaxCount;
  meta_.token_count = kSnapshotMaxCount;
  meta_.session_id = std::string(kSnapshotMaxSessionIdBytes, 's');
  meta_.owner = std::string(kSnapshotMaxOwnerBytes, 'o');
  meta_.recent_requests.clear();
  for (size_t i = 0; i < kSnapshotMaxRequestIds; ++i) {
    meta_.recent_requests.push_back({std::string(kSnapshotMaxRequestIdBytes, 'a' + i % 26), i});
  }
  const std::string bytes = Encode();
  EXPECT_LE(bytes.size(), MaxSnapshotBytes(layout_));
  absl::StatusOr<DecodedSnapshot> d = DecodeSnapshot(bytes, fp_, layout_);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->meta, meta_);
}

TEST_F(SnapshotTest, EncodeRejectsBadArguments) {
  std::vector<float> short_state(state_.begin(), state_.end() - 1);
  EXPECT_THAT(EncodeSnapshot(meta_, fp_, layout_, short_state),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("floats")));
  EXPECT_THAT(EncodeSnapshot(meta_, Fingerprint(Layout(1, 1, 1, 1)), layout_, state_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("layout")));
  SnapshotMeta m = meta_;
  m.owner = std::string(kSnapshotMaxOwnerBytes + 1, 'o');
  EXPECT_THAT(EncodeSnapshot(m, fp_, layout_, state_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("owner")));
  m = meta_;
  m.session_id = std::string(kSnapshotMaxSessionIdBytes + 1, 's');
  EXPECT_THAT(EncodeSnapshot(m, fp_, layout_, state_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("session id")));
  m = meta_;
  m.recent_requests.assign(kSnapshotMaxRequestIds + 1, {"r", 1});
  EXPECT_THAT(EncodeSnapshot(m, fp_, layout_, state_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("request ids")));
  m = meta_;
  m.recent_requests[0].request_id = std::string(kSnapshotMaxRequestIdBytes + 1, 'r');
  EXPECT_THAT(EncodeSnapshot(m, fp_, layout_, state_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("request id")));
  std::vector<float> dst(state_.size() + 1);
  EXPECT_THAT(DecodeSnapshotInto(Encode(), fp_, layout_, absl::MakeSpan(dst)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("destination")));
  m = meta_;
  m.version = kSnapshotMaxCount + 1;
  EXPECT_THAT(EncodeSnapshot(m, fp_, layout_, state_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version")));
  m = meta_;
  m.token_count = ~uint64_t{0};
  EXPECT_THAT(EncodeSnapshot(m, fp_, layout_, state_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token count")));
}

// ---- corruption classes: DATA_LOSS, a message naming the problem, and its reason label ----

void ExpectCorrupt(const absl::Status& s, const std::string& reason, const std::string& text) {
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss, HasSubstr(text)));
  EXPECT_EQ(SnapshotErrorReason(s), reason) << s;
}

// A session version or token count of 2^64 - 1 (the next commit would wrap to 0) is refused
// even with a valid checksum.
TEST_F(SnapshotTest, CountsOverTheLimitAreBadHeaders) {
  for (size_t at : {off::kSessionVersion, off::kTokenCount}) {
    std::string b = Encode();
    PutLe(b, at, ~uint64_t{0}, 8);
    Reseal(b);
    ExpectCorrupt(Decode(b), "bad_header", at == off::kSessionVersion ? "version" : "token_count");
    PutLe(b, at, kSnapshotMaxCount + 1, 8);
    Reseal(b);
    ExpectCorrupt(Decode(b), "bad_header", "exceeds the limit");
  }
}

// NaN or inf in the state, under a valid checksum (a crafted import), is DATA_LOSS naming the
// section, on both decode paths.
TEST_F(SnapshotTest, NonFiniteStateValuesAreRefused) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> state = state_;
    state[state.size() / 2] = bad;
    absl::StatusOr<std::string> bytes = EncodeSnapshot(meta_, fp_, layout_, state);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    ExpectCorrupt(Decode(*bytes), "non_finite", "non-finite value");
    std::vector<float> dst(state.size());
    ExpectCorrupt(DecodeSnapshotInto(*bytes, fp_, layout_, absl::MakeSpan(dst)).status(),
                  "non_finite", "section");
  }
}

TEST_F(SnapshotTest, BadMagic) {
  std::string b = Encode();
  b[0] = 'Y';
  ExpectCorrupt(Decode(b), "bad_magic", "bad magic");
  ExpectCorrupt(Decode("GGUF and some other file of a different kind..."), "bad_magic",
                "not an xlstmd session snapshot");
}

TEST_F(SnapshotTest, HeaderChecksumMismatch) {
  std::string b = Encode();
  b[off::kTokenCount] ^= 0x01;  // a metadata bit: only the header checksum covers it
  ExpectCorrupt(Decode(b), "checksum", "header checksum mismatch");
}

TEST_F(SnapshotTest, SectionChecksumMismatchNamesTheSection) {
  for (size_t i : {size_t{0}, size_t{4}, size_t{8}}) {
    std::string b = Encode();
    b[SectionAt(b, i) + 3] ^= 0x40;
    const char* kinds[] = {"C", "n", "m"};
    ExpectCorrupt(Decode(b), "checksum",
                  "section " + std::to_string(i) + " (block " + std::to_string(i / 3) + " " +
                      kinds[i % 3] + ") checksum mismatch");
    std::vector<float> dst(state_.size());
    EXPECT_THAT(DecodeSnapshotInto(b, fp_, layout_, absl::MakeSpan(dst)),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum mismatch")));
  }
}

TEST_F(SnapshotTest, TruncationNamesWhereItEnds) {
  const std::string b = Encode();
  ExpectCorrupt(Decode(b.substr(0, 10)), "truncated", "shorter than the 16-byte preamble");
  ExpectCorrupt(Decode(b.substr(0, 100)), "truncated", "inside the");
  ExpectCorrupt(Decode(b.substr(0, PayloadAt(b) - 1)), "truncated", "before the payload");
  ExpectCorrupt(Decode(b.substr(0, SectionAt(b, 4) + 5)), "truncated",
                "ends inside section 4 (block 1 n)");
  ExpectCorrupt(Decode(b.substr(0, b.size() - 1)), "truncated", "ends inside the footer");
  ExpectCorrupt(Decode(""), "truncated", "truncated");
}

TEST_F(SnapshotTest, TrailingGarbage) {
  ExpectCorrupt(Decode(Encode() + "x"), "trailing_bytes", "1 trailing bytes after the footer");
  ExpectCorrupt(Decode(Encode() + Encode()), "trailing_bytes", "trailing bytes");
}

TEST_F(SnapshotTest, FooterCommitMarker) {
  const std::string good = Encode();
  std::string b = good;
  b[b.size() - off::kFooterBytes] = 'x';
  ExpectCorrupt(Decode(b), "bad_footer", "\"XLSTMEND\" is missing");
  b = good;
  PutLe(b, b.size() - 16, b.size() + 64, 8);
  ExpectCorrupt(Decode(b), "bad_footer", "footer records");
  b = good;
  b[b.size() - 1] ^= 1;
  ExpectCorrupt(Decode(b), "bad_footer", "hash over the section checksums");
}

TEST_F(SnapshotTest, NewerVersionIsFailedPreconditionOnlyWhenIntact) {
  std::string b = Encode();
  PutLe(b, off::kVersion, kSnapshotFormatVersion + 1, 2);
  // Unsealed, the changed version is just corruption.
  ExpectCorrupt(Decode(b), "checksum", "header checksum");
  Reseal(b);
  const absl::Status s = Decode(b);
  EXPECT_THAT(
      s, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("written by a newer xlstmd")));
  EXPECT_EQ(SnapshotErrorReason(s), "newer_version");
  PutLe(b, off::kVersion, 0, 2);
  Reseal(b);
  ExpectCorrupt(Decode(b), "bad_header", "format version 0");
}

TEST_F(SnapshotTest, UnknownFlags) {
  std::string b = Encode();
  PutLe(b, off::kFlags, 0x8000, 2);
  Reseal(b);
  ExpectCorrupt(Decode(b), "bad_header", "unknown flags");
}

TEST_F(SnapshotTest, ForeignModelNamesBothDigests) {
  const std::string b = Encode();
  const StateFingerprint other = Fingerprint(layout_, "ffffeeeeddddcccc");
  const absl::Status s = DecodeSnapshot(b, other, layout_).status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition,
                          AllOf(HasSubstr("another model"), HasSubstr(fp_.weights_digest),
                                HasSubstr("ffffeeeeddddcccc"))));
  EXPECT_EQ(SnapshotErrorReason(s), "foreign_model");
}

TEST_F(SnapshotTest, ForeignLayoutNamesBothLayouts) {
  const std::string b = Encode();
  const StateLayout other = Layout(3, 3, 5, 8);
  const absl::Status s = DecodeSnapshot(b, Fingerprint(other), other).status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition,
                          AllOf(HasSubstr(layout_.Describe()), HasSubstr(other.Describe()),
                                HasSubstr("dv=7"), HasSubstr("dv=8"))));
  EXPECT_EQ(SnapshotErrorReason(s), "foreign_layout");
  // A layout with a different block count needs a different section table: still the
  // identity error, never a table or length error.
  const StateLayout more = Layout(4, 3, 5, 7);
  EXPECT_THAT(DecodeSnapshot(b, Fingerprint(more), more),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("L=3")));
  // The head alone is enough to refuse it.
  EXPECT_THAT(DecodeSnapshotHead(b.substr(0, PayloadAt(b)), Fingerprint(more), more),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(SnapshotTest, LayoutNumbersAreComparedNotTrusted) {
  // A header that keeps the description string but claims other dims (resealed, so only the
  // comparison with the loaded layout can catch it).
  for (size_t field : {off::kNumBlocks, off::kHeads, off::kDqk, off::kDv, off::kFamily}) {
    std::string b = Encode();
    PutLe(b, field, GetLe(b, field, 4) + 1, 4);
    Reseal(b);
    EXPECT_THAT(Decode(b),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("another model")))
        << "field at " << field;
  }
  std::string b = Encode();
  PutLe(b, off::kFloatsPerSlot, GetLe(b, off::kFloatsPerSlot, 8) * 2, 8);
  Reseal(b);
  EXPECT_THAT(Decode(b), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(SnapshotTest, Oversized) {
  const std::string huge(MaxSnapshotBytes(layout_) + 1, 'X');
  const absl::Status s = Decode(huge);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("maximum")));
  EXPECT_EQ(SnapshotErrorReason(s), "oversized");
}

// Length fields edited and the header re-sealed: each must be caught by its own check.
TEST_F(SnapshotTest, LengthFieldsAreValidated) {
  struct Edit {
    size_t at;
    int bytes;
    uint64_t value;
    const char* message;
  };
  const std::string good = Encode();
  const size_t table = SectionTableAt(good);
  const Edit edits[] = {
      {off::kHeaderLen, 4, 0xffffffffu, "header length"},
      {off::kHeaderLen, 4, 3, "header length"},
      {off::kOwnerLen, 2, 0xffff, "owner length 65535 exceeds"},
      {off::kSessionIdLen, 2, 200, "session id length 200 exceeds"},
      {off::kDigestLen, 2, 5000, "weights digest length"},
      {off::kRequestCount, 4, 0x7fffffff, "request id count"},
      {off::kRequestCount, 4, 0xffffffff, "request id count"},
      {off::kRequestCount, 4, 1000, "request id"},  // runs into the section table
      {off::kSectionCount, 4, 0xffffffff, "section count"},
      {off::kPayloadBytes, 8, ~uint64_t{0}, "payload"},
      {off::kPayloadBytes, 8, uint64_t{1} << 63, "payload"},
      {off::kPayloadOffset, 8, 0, "payload"},
      {table + 8, 8, ~uint64_t{0} - 3, "section 0 (block 0 C) table entry"},
      {table + 16, 8, 1, "section 0 (block 0 C) table entry"},
      {table + 32 + 16, 8, uint64_t{1} << 62, "section 1 (block 0 n) table entry"},
      {table + 32, 4, 1, "section 1 (block 0 n) table entry"},  // kind C where n belongs
  };
  for (const Edit& e : edits) {
    std::string b = good;
    PutLe(b, e.at, e.value, e.bytes);
    Reseal(b);
    EXPECT_THAT(Decode(b), StatusIs(absl::StatusCode::kDataLoss, HasSubstr(e.message)))
        << "edit at " << e.at << " = " << e.value;
  }
}

TEST_F(SnapshotTest, DuplicatedSectionEntryIsRejected) {
  std::string b = Encode();
  const size_t table = SectionTableAt(b);
  b.replace(table + off::kSectionEntryBytes, off::kSectionEntryBytes,
            b.substr(table, off::kSectionEntryBytes));
  Reseal(b);
  EXPECT_THAT(Decode(b), StatusIs(absl::StatusCode::kDataLoss,
                                  HasSubstr("section 1 (block 0 n) table entry")));
}

TEST_F(SnapshotTest, PaddingMustBeZero) {
  std::string b = Encode();
  const size_t pad = 16 + xlstmd::testing::HeaderLen(b) + 8;
  ASSERT_LT(pad, PayloadAt(b)) << "this layout should leave padding before the payload";
  b[pad] = 1;
  ExpectCorrupt(Decode(b), "bad_header", "nonzero padding");
}

TEST_F(SnapshotTest, HeadDecoderAsksForMoreUntilTheHeadIsComplete) {
  const std::string b = Encode();
  const size_t head = PayloadAt(b);
  for (size_t n = 0; n < head; n += 7) {
    EXPECT_THAT(DecodeSnapshotHead(b.substr(0, n), fp_, layout_),
                StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("need at least")))
        << n;
  }
  absl::StatusOr<SnapshotHeadInfo> h = DecodeSnapshotHead(b.substr(0, head), fp_, layout_);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->meta, meta_);
  EXPECT_EQ(h->head_bytes, head);
  EXPECT_EQ(h->total_bytes, b.size());
  // Corruption in the head is still corruption, not "need more".
  std::string bad = b.substr(0, head);
  bad[off::kTokenCount] ^= 1;
  EXPECT_THAT(DecodeSnapshotHead(bad, fp_, layout_), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(SnapshotTest, FingerprintId) {
  const std::string id = fp_.Id();
  EXPECT_EQ(id.size(), 32u);
  EXPECT_EQ(id, Fingerprint(layout_).Id());
  EXPECT_NE(id, Fingerprint(layout_, "other").Id());
  EXPECT_NE(id, Fingerprint(Layout(3, 3, 5, 8)).Id());
}

TEST_F(SnapshotTest, ErrorReasonFallsBackToTheCode) {
  EXPECT_EQ(SnapshotErrorReason(absl::NotFoundError("x")), "not_found");
  EXPECT_EQ(SnapshotErrorReason(absl::OkStatus()), "ok");
}

// Not a timed assertion: logs encode/decode throughput for the xLSTM-7B state size
// (32 blocks x 8 heads x 256 x 512 floats of C = 128 MiB) next to a plain memcpy.
TEST(SnapshotThroughput, LogsRatesFor128MiBState) {
  const StateLayout layout = Layout(32, 8, 256, 512);
  const StateFingerprint fp = Fingerprint(layout);
  const std::vector<float> state = RandomState(layout, 3);
  const SnapshotMeta meta = SampleMeta();
  const double mib = static_cast<double>(layout.bytes_per_slot()) / (1 << 20);
  using Clock = std::chrono::steady_clock;
  auto rate = [&](auto&& fn) {
    double best = 1e9;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = Clock::now();
      fn();
      best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    return mib / 1024 / best;  // GiB/s, best of 3
  };
  std::vector<float> dst(state.size());
  std::memset(dst.data(), 0, dst.size() * sizeof(float));  // fault the pages in first
  const double memcpy_gbs =
      rate([&] { std::memcpy(dst.data(), state.data(), state.size() * sizeof(float)); });
  // What a fresh 128 MiB buffer costs by itself (page faults, kernel zeroing): EncodeSnapshot
  // and DecodeSnapshot pay it on every call, the Parts/Into paths never do.
  const double fresh_gbs = rate([&] {
    std::string fresh;
    fresh.resize(state.size() * sizeof(float));
    EXPECT_EQ(fresh[12345], '\0');
  });
  std::string bytes;
  const double encode_gbs = rate([&] { bytes = *EncodeSnapshot(meta, fp, layout, state); });
  const double parts_gbs = rate([&] { (void)*EncodeSnapshotParts(meta, fp, layout, state); });
  const double into_gbs =
      rate([&] { ASSERT_TRUE(DecodeSnapshotInto(bytes, fp, layout, absl::MakeSpan(dst)).ok()); });
  const double decode_gbs = rate([&] { ASSERT_TRUE(DecodeSnapshot(bytes, fp, layout).ok()); });
  EXPECT_TRUE(SameBits(dst, state));
  std::printf(
      "[snapshot throughput] state %.0f MiB: memcpy %.1f GiB/s, fresh buffer alone %.1f GiB/s | "
      "EncodeSnapshotParts (hash in place) %.1f GiB/s | DecodeSnapshotInto (copy+verify) %.1f "
      "GiB/s | EncodeSnapshot (fresh string) %.1f GiB/s | DecodeSnapshot (fresh vector) %.1f "
      "GiB/s\n",
      mib, memcpy_gbs, fresh_gbs, parts_gbs, into_gbs, encode_gbs, decode_gbs);
}

}  // namespace
}  // namespace xlstmd::core
