// The fixture of the RedisStore tests (redis_store_test.cc: round trips, versions, damage;
// redis_store_resilience_test.cc: TTLs, concurrency, outages, connecting): a real redis-server
// on a free loopback port, a RawRedis beside it, and store options with short timeouts.
#ifndef XLSTMD_TESTS_STATE_REDIS_STORE_FIXTURE_H_
#define XLSTMD_TESTS_STATE_REDIS_STORE_FIXTURE_H_

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/state/redis_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/model_files_testutil.h"
#include "tests/state/redis_testutil.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core::redis_store_testing {


using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::xlstmd::testing::FakeRedis;
using ::xlstmd::testing::IsOk;
using ::xlstmd::testing::RawRedis;
using ::xlstmd::testing::RedisServer;
using ::xlstmd::testing::ScopedTempDir;
using ::xlstmd::testing::StatusIs;
using Clock = std::chrono::steady_clock;

inline constexpr char kSid[] = "AbCdEfGhIjKlMnOpQr_-0w";
inline constexpr char kPrefix[] = "xlstmd:0123abcd:";

inline std::string Pattern(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

inline double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

inline RedisPutRequest Req(ExpectedVersion expected, uint64_t new_version) {
  RedisPutRequest r;
  r.session_id = kSid;
  r.expected = expected;
  r.new_version = new_version;
  r.owner = "tenant-7";
  r.updated_unix_ms = 1700000000123;
  return r;
}

class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<RedisServer>> server = RedisServer::Start(tmp_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    raw_ = std::make_unique<RawRedis>(server_->port());
  }

  static RedisStore::Options Opts() {
    RedisStore::Options o;
    o.key_prefix = kPrefix;
    o.pool.connect_timeout_ms = 500;
    o.pool.io_timeout_ms = 1000;
    o.pool.reconnect_backoff_ms = 0;
    return o;
  }
  std::unique_ptr<RedisStore> Open(RedisStore::Options o = Opts()) {
    absl::StatusOr<std::unique_ptr<RedisStore>> s = RedisStore::Connect(server_->url(), o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  std::vector<std::string> ChunkKeys() { return raw_->Keys(std::string(kPrefix) + "s:*"); }

  ScopedTempDir tmp_;
  std::unique_ptr<RedisServer> server_;
  std::unique_ptr<RawRedis> raw_;
};

}  // namespace xlstmd::core::redis_store_testing

#endif  // XLSTMD_TESTS_STATE_REDIS_STORE_FIXTURE_H_
