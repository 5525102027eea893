// The snapshot decoder (docs/snapshot-format.md), on the paths an import and the disk and
// Redis tiers use. Checksums would stop almost every mutation at the header, so the first
// input byte picks a mode: bit 0 re-seals the header checksum after the fuzzer's edits (the
// field validation behind it is then reachable); the rest of the byte sets how long a prefix
// DecodeSnapshotHead sees, as a streaming reader would. Seeds and re-sealing come from the
// snapshot tests' helpers (tests/state/snapshot_testutil.h).
#include <cmath>
#include <string>

#include "core/state/snapshot.h"
#include "tests/fuzz/fuzz_target.h"
#include "tests/state/snapshot_testutil.h"

namespace {

using xlstmd::core::StateFingerprint;
using xlstmd::core::StateLayout;

const StateLayout& Layout() {
  static const StateLayout layout = xlstmd::testing::Layout(2, 2, 4, 4);
  return layout;
}
const StateFingerprint& Fingerprint() {
  static const StateFingerprint fp = xlstmd::testing::Fingerprint(Layout());
  return fp;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  // Reseal needs the header-length field (offset 12) inside the input.
  if ((mode & 1) && bytes.size() >= 16) xlstmd::testing::Reseal(bytes);

  auto decoded = xlstmd::core::DecodeSnapshot(bytes, Fingerprint(), Layout());
  if (decoded.ok()) {
    if (decoded->state.size() != static_cast<size_t>(Layout().floats_per_slot())) __builtin_trap();
    for (float f : decoded->state) {
      if (!std::isfinite(f)) __builtin_trap();  // decoding promises finite states
    }
    if (decoded->meta.version >= xlstmd::core::kSnapshotMaxCount) __builtin_trap();
    // What decodes must encode back to the same bytes.
    auto again = xlstmd::core::EncodeSnapshot(decoded->meta, Fingerprint(), Layout(),
                                              decoded->state);
    if (!again.ok() || *again != bytes) __builtin_trap();
  }
  std::vector<float> dst(static_cast<size_t>(Layout().floats_per_slot()));
  auto into = xlstmd::core::DecodeSnapshotInto(bytes, Fingerprint(), Layout(), absl::MakeSpan(dst));
  if (into.ok() != decoded.ok()) __builtin_trap();  // the two decoders must agree

  const size_t prefix = std::min(bytes.size(), static_cast<size_t>(mode >> 1) * 8);
  auto head = xlstmd::core::DecodeSnapshotHead(std::string_view(bytes).substr(0, prefix),
                                               Fingerprint(), Layout());
  if (head.ok() && head->total_bytes > xlstmd::core::MaxSnapshotBytes(Layout())) __builtin_trap();
  return 0;
}

namespace xlstmd::fuzz {

std::vector<std::string> FuzzSeeds() {
  std::vector<std::string> seeds;
  for (int requests : {0, 3}) {
    const std::vector<float> state = testing::RandomState(Layout(), 7 + requests);
    auto bytes = core::EncodeSnapshot(testing::SampleMeta(requests), Fingerprint(), Layout(), state);
    if (!bytes.ok()) continue;
    for (uint8_t mode : {uint8_t{0}, uint8_t{1}, uint8_t{0x41}}) {
      seeds.push_back(std::string(1, static_cast<char>(mode)) + *bytes);
    }
  }
  return seeds;
}

}  // namespace xlstmd::fuzz
