// The snapshot decoder (docs/snapshot-format.md), on the paths an import and the disk and
// Redis tiers use. Checksums would stop almost every mutation at the header, so the first
// input byte picks a mode: bit 0 re-seals the header checksum after the fuzzer's edits (the
// field validation behind it is then reachable); the rest of the byte sets how long a prefix
// DecodeSnapshotHead sees, as a streaming reader would.
#include <cmath>
#include <random>
#include <string>

#include "core/state/snapshot.h"
#include "tests/fuzz/fuzz_target.h"
#include "xxhash.h"

namespace {

using xlstmd::core::StateFingerprint;
using xlstmd::core::StateLayout;

const StateLayout& Layout() {
  static const StateLayout layout = StateLayout::ForMlstmStack(2, 2, 4, 4);
  return layout;
}
const StateFingerprint& Fingerprint() {
  static const StateFingerprint fp = StateFingerprint::For("fuzz-weights-digest", Layout());
  return fp;
}

uint64_t GetLe(const std::string& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}

// The header checksum sits right after the header, whose length is the u32 at offset 12.
void Reseal(std::string& b) {
  if (b.size() < 16) return;
  const uint64_t at = 16 + GetLe(b, 12, 4);
  if (at + 8 > b.size()) return;
  const uint64_t sum = XXH3_64bits(b.data(), at);
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<char>((sum >> (8 * i)) & 0xff);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if (mode & 1) Reseal(bytes);

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
  std::mt19937_64 rng(7);
  for (int requests : {0, 3}) {
    core::SnapshotMeta meta;
    meta.session_id = "AbCdEfGhIjKlMnOpQr_-0w";
    meta.owner = requests ? "tenant-7" : "";
    meta.version = 42;
    meta.token_count = 123456;
    meta.created_unix_ms = 1700000000000;
    meta.updated_unix_ms = 1700000123456;
    meta.flags = 0x3;
    for (int i = 0; i < requests; ++i) {
      meta.recent_requests.push_back({"req-" + std::to_string(i), 40u + static_cast<uint64_t>(i)});
    }
    std::vector<float> state(static_cast<size_t>(Layout().floats_per_slot()));
    for (float& f : state) f = std::uniform_real_distribution<float>(-3, 3)(rng);
    auto bytes = core::EncodeSnapshot(meta, Fingerprint(), Layout(), state);
    if (!bytes.ok()) continue;
    for (uint8_t mode : {uint8_t{0}, uint8_t{1}, uint8_t{0x41}}) {
      seeds.push_back(std::string(1, static_cast<char>(mode)) + *bytes);
    }
  }
  return seeds;
}

}  // namespace xlstmd::fuzz
