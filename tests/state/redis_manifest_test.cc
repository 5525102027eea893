// The Redis manifest codec without a server: a round trip, and thousands of mutated field values
// that must each decode or fail with a manifest error code, never crash or allocate by a
// corrupt count.
#include "core/state/redis_manifest.h"

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using ::testing::HasSubstr;
using ::xlstmd::testing::IsOk;
using ::xlstmd::testing::StatusIs;

RedisManifest Sample() {
  RedisManifest m;
  m.version = 42;
  m.generation = "0123456789abcdef";
  m.total_bytes = 10000;
  m.chunk_bytes = 4096;
  m.chunk_xxh3 = {1, 0xffffffffffffffffULL, 0x1234};
  m.owner = "tenant-7";
  m.updated_unix_ms = -5;
  return m;
}

std::vector<std::optional<std::string_view>> Views(const std::vector<std::string>& values) {
  return std::vector<std::optional<std::string_view>>(values.begin(), values.end());
}

TEST(RedisManifestTest, RoundTrips) {
  const RedisManifest m = Sample();
  const auto encoded = EncodeRedisManifest(m);
  EXPECT_EQ(encoded[6], "0000000000000001,ffffffffffffffff,0000000000001234");
  const std::vector<std::string> values(encoded.begin(), encoded.end());
  absl::StatusOr<RedisManifest> d = DecodeRedisManifest(Views(values), "here", 1 << 20);
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->version, m.version);
  EXPECT_EQ(d->generation, m.generation);
  EXPECT_EQ(d->total_bytes, m.total_bytes);
  EXPECT_EQ(d->chunk_bytes, m.chunk_bytes);
  EXPECT_EQ(d->chunk_xxh3, m.chunk_xxh3);
  EXPECT_EQ(d->owner, m.owner);
  EXPECT_EQ(d->updated_unix_ms, m.updated_unix_ms);

  EXPECT_THAT(DecodeRedisManifest(Views(values), "here", 9999),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("here")));
  std::vector<std::optional<std::string_view>> missing = Views(values);
  missing[3] = std::nullopt;
  EXPECT_THAT(DecodeRedisManifest(missing, "here", 1 << 20),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("'bytes' is missing")));
}

TEST(RedisManifestTest, MutatedFieldsNeverCrash) {
  const auto encoded = EncodeRedisManifest(Sample());
  std::mt19937_64 rng(7);
  const std::string alphabet = "0123456789abcdefx,-+ \xff";
  int decoded = 0;
  for (int iter = 0; iter < 5000; ++iter) {
    std::vector<std::string> values(encoded.begin(), encoded.end());
    std::string& v = values[rng() % values.size()];
    switch (rng() % 4) {
      case 0:  // flip a character
        if (!v.empty()) v[rng() % v.size()] = alphabet[rng() % alphabet.size()];
        break;
      case 1:  // truncate
        v.resize(v.empty() ? 0 : rng() % v.size());
        break;
      case 2:  // huge numbers
        v = std::to_string(rng());
        break;
      default:  // append
        v.push_back(alphabet[rng() % alphabet.size()]);
    }
    absl::StatusOr<RedisManifest> d = DecodeRedisManifest(Views(values), "m", 1 << 20);
    if (d.ok()) {
      ++decoded;
      EXPECT_LE(d->total_bytes, 1u << 20);
      EXPECT_EQ(d->chunk_count(),
                d->total_bytes == 0 ? 0 : (d->total_bytes - 1) / d->chunk_bytes + 1);
      continue;
    }
    const absl::StatusCode c = d.status().code();
    EXPECT_TRUE(c == absl::StatusCode::kDataLoss || c == absl::StatusCode::kResourceExhausted ||
                c == absl::StatusCode::kFailedPrecondition)
        << d.status();
  }
  // Some mutations are harmless (owner, version, a checksum digit): the decoder is not
  // rejecting everything.
  EXPECT_GT(decoded, 100);
}

}  // namespace
}  // namespace xlstmd::core
