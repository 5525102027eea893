// RedisStore under stress and failure, against a real redis-server: idle TTLs, concurrent
// readers and writers, a killed or stalled server, reconnect backoff, connecting (URLs, auth,
// unix sockets, unreachable addresses) and a fake server sending malformed replies. The
// round-trip, version and damage tests are in redis_store_test.cc.
#include "core/state/redis_store.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/state/redis_store_fixture.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using namespace redis_store_testing;  // NOLINT: the fixture's helpers and matchers

TEST_F(RedisStoreTest, IdleTtlTouchAndExpire) {
  RedisStore::Options o = Opts();
  o.chunk_bytes = 1024;
  o.max_snapshot_bytes = 1 << 20;
  o.idle_ttl_ms = 60000;
  std::unique_ptr<RedisStore> store = Open(o);
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->Put(Req(ExpectedVersion::Absent(), 1), Pattern(2000, 4)), IsOk());
  auto ttls = [&] {
    std::vector<long> out;
    for (const std::string& k : raw_->Keys(std::string(kPrefix) + "*")) {
      out.push_back(std::stol(raw_->Run({"PTTL", k})));
    }
    return out;
  };
  std::vector<long> t = ttls();
  ASSERT_EQ(t.size(), 3u);  // manifest + 2 chunks
  for (long ms : t) EXPECT_TRUE(ms > 50000 && ms <= 60000) << ms;

  ASSERT_THAT(store->Expire(kSid, 0), IsOk());
  for (long ms : ttls()) EXPECT_EQ(ms, -1);
  ASSERT_THAT(store->Touch(kSid), IsOk());
  for (long ms : ttls()) EXPECT_GT(ms, 50000);

  ASSERT_THAT(store->Expire(kSid, 30), IsOk());
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_THAT(store->GetManifest(kSid), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(raw_->Keys(std::string(kPrefix) + "*"), ::testing::IsEmpty());
  EXPECT_THAT(store->Touch(kSid), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->Expire(kSid, -1), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(RedisStoreTest, ReadersNeverSeeDataLossFromConcurrentWrites) {
  RedisStore::Options o = Opts();
  o.chunk_bytes = 16 << 10;
  o.max_snapshot_bytes = 1 << 20;
  std::unique_ptr<RedisStore> writer = Open(o), reader = Open(o);
  ASSERT_TRUE(writer && reader);
  // Each version's bytes are a pattern seeded by the version, so a read can be checked whole.
  ASSERT_THAT(writer->Put(Req(ExpectedVersion::Absent(), 1), Pattern(256 << 10, 1)), IsOk());
  std::atomic<bool> stop{false};
  std::thread t([&] {
    for (uint64_t v = 1; !stop.load(); ++v) {
      ASSERT_THAT(writer->Put(Req(ExpectedVersion::Is(v), v + 1), Pattern(256 << 10, v + 1)),
                  IsOk());
    }
  });
  int reads = 0, gave_up = 0;
  for (const auto t0 = Clock::now(); SecondsSince(t0) < 0.5; ++reads) {
    absl::StatusOr<RedisSnapshot> got = reader->Get(kSid);
    if (!got.ok()) {
      // Only "replaced too often" is acceptable, never corruption.
      EXPECT_THAT(got, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("replaced")));
      ++gave_up;
      continue;
    }
    EXPECT_TRUE(got->bytes == Pattern(256 << 10, got->manifest.version));
  }
  stop = true;
  t.join();
  EXPECT_EQ(reader->Stats().data_loss, 0);
  std::cerr << reads << " reads (" << gave_up << " gave up), " << reader->Stats().read_retries
            << " restarts caused by writes\n";
}

TEST_F(RedisStoreTest, ManyThreadsShareASmallPool) {
  RedisStore::Options o = Opts();
  o.pool.max_connections = 2;
  std::unique_ptr<RedisStore> store = Open(o);
  ASSERT_NE(store, nullptr);
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      RedisPutRequest r = Req(ExpectedVersion::Absent(), 1);
      r.session_id = "session" + std::to_string(i);
      const std::string bytes = Pattern(100000 + i, i);
      for (int v = 1; v <= 5; ++v) {
        r.new_version = v;
        ASSERT_THAT(store->Put(r, bytes), IsOk());
        r.expected = ExpectedVersion::Is(v);
        absl::StatusOr<RedisSnapshot> got = store->Get(r.session_id);
        ASSERT_THAT(got, IsOk());
        EXPECT_TRUE(got->bytes == bytes);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_LE(store->Stats().pool.open, 2);
  EXPECT_EQ(store->Stats().puts, 30);
}

TEST_F(RedisStoreTest, KilledServerIsUnavailableThenRecoversAfterRestart) {
  std::unique_ptr<RedisStore> store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->Put(Req(ExpectedVersion::Absent(), 1), "v1"), IsOk());
  const std::string address = absl::StrCat("127.0.0.1:", server_->port());

  server_->Kill();
  auto t0 = Clock::now();
  EXPECT_THAT(store->GetManifest(kSid),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(address)));
  EXPECT_THAT(store->Put(Req(ExpectedVersion::Is(1), 2), "v2"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(address)));
  EXPECT_THAT(store->Get(kSid), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_LT(SecondsSince(t0), 1.0);  // refused connections fail at once

  ASSERT_THAT(server_->Restart(), IsOk());
  raw_ = std::make_unique<RawRedis>(server_->port());
  // Redis restarted empty (no persistence): the session is gone, the store reconnects.
  EXPECT_THAT(store->GetManifest(kSid), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(store->Put(Req(ExpectedVersion::Absent(), 1), "again"), IsOk());
  EXPECT_EQ(store->Get(kSid)->bytes, "again");
  EXPECT_GE(store->Stats().unavailable, 3);
  EXPECT_GE(store->Stats().pool.connects, 2);
}

TEST_F(RedisStoreTest, StalledServerTimesOutAndRecovers) {
  RedisStore::Options o = Opts();
  o.pool.io_timeout_ms = 300;
  std::unique_ptr<RedisStore> store = Open(o);
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->Put(Req(ExpectedVersion::Absent(), 1), "v1"), IsOk());
  server_->Pause();
  auto t0 = Clock::now();
  EXPECT_THAT(store->GetManifest(kSid),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("io_timeout_ms=300")));
  const double waited = SecondsSince(t0);
  EXPECT_GE(waited, 0.25);
  EXPECT_LT(waited, 2.0);
  server_->Resume();
  // The timed-out connection was dropped (its late reply must never answer a later call).
  absl::StatusOr<RedisManifest> m = store->GetManifest(kSid);
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(m->version, 1u);
  EXPECT_EQ(store->Get(kSid)->bytes, "v1");
}

TEST_F(RedisStoreTest, ReconnectBackoffFailsFast) {
  RedisStore::Options o = Opts();
  o.pool.reconnect_backoff_ms = 60000;
  o.connect_lazily = true;
  server_->Kill();
  absl::StatusOr<std::unique_ptr<RedisStore>> store = RedisStore::Connect(server_->url(), o);
  ASSERT_THAT(store, IsOk());
  EXPECT_THAT((*store)->Ping(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("refused")));
  ASSERT_THAT(server_->Restart(), IsOk());
  // Within the backoff the store does not even try.
  EXPECT_THAT((*store)->Ping(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("not retrying")));
  EXPECT_EQ((*store)->Stats().pool.connect_failures, 1);
}

TEST(RedisStoreConnectTest, UnreachableAddressIsUnavailableFast) {
  RedisStore::Options o;
  o.key_prefix = kPrefix;
  o.pool.connect_timeout_ms = 200;
  const int port = xlstmd::testing::PickFreeLoopbackPort();  // nothing listens there
  auto t0 = Clock::now();
  EXPECT_THAT(RedisStore::Connect(absl::StrCat("redis://127.0.0.1:", port), o),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr(absl::StrCat("127.0.0.1:", port)), HasSubstr("connect"))));
  EXPECT_LT(SecondsSince(t0), 1.0);
  // TEST-NET-1 (RFC 5737) never answers: the connect timeout bounds the wait (or the network
  // says unreachable at once).
  t0 = Clock::now();
  EXPECT_THAT(RedisStore::Connect("redis://192.0.2.1:6379", o),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("192.0.2.1:6379")));
  EXPECT_LT(SecondsSince(t0), 2.0);
  // Lazily: Connect succeeds, each call reports the failure.
  o.connect_lazily = true;
  absl::StatusOr<std::unique_ptr<RedisStore>> lazy =
      RedisStore::Connect(absl::StrCat("unix://", ::testing::TempDir(), "no-such.sock"), o);
  ASSERT_THAT(lazy, IsOk());
  EXPECT_THAT((*lazy)->Get(kSid),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("no-such.sock")));
}

TEST(RedisStoreConnectTest, RejectsBadOptions) {
  RedisStore::Options o;
  EXPECT_THAT(RedisStore::Connect("redis://127.0.0.1", o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("key_prefix")));
  o.key_prefix = kPrefix;
  o.chunk_bytes = 0;
  EXPECT_THAT(RedisStore::Connect("redis://127.0.0.1", o),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o.chunk_bytes = 1;  // a 1 GiB snapshot would need 2^30 chunks
  EXPECT_THAT(RedisStore::Connect("redis://127.0.0.1", o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("chunks")));
  EXPECT_EQ(RedisStore::KeyPrefixFor("abc"), "xlstmd:abc:");
}

TEST(RedisUrlTest, Parses) {
  absl::StatusOr<RedisAddress> a = ParseRedisUrl("redis://localhost");
  ASSERT_THAT(a, IsOk());
  EXPECT_EQ(a->host, "localhost");
  EXPECT_EQ(a->port, 6379);
  EXPECT_EQ(a->db, 0);
  a = ParseRedisUrl("redis://:p%40ss%2Fw:rd@10.0.0.5:7000/3");
  ASSERT_THAT(a, IsOk());
  EXPECT_EQ(a->password, "p@ss/w:rd");
  EXPECT_EQ(a->user, "");
  EXPECT_EQ(a->host, "10.0.0.5");
  EXPECT_EQ(a->port, 7000);
  EXPECT_EQ(a->db, 3);
  EXPECT_EQ(a->Display(), "10.0.0.5:7000");
  a = ParseRedisUrl("redis://bob:pw@[::1]:6380");
  ASSERT_THAT(a, IsOk());
  EXPECT_EQ(a->user, "bob");
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->Display(), "[::1]:6380");
  a = ParseRedisUrl("unix:///run/redis/redis.sock");
  ASSERT_THAT(a, IsOk());
  EXPECT_TRUE(a->is_unix);
  EXPECT_EQ(a->Display(), "unix:/run/redis/redis.sock");

  for (const char* bad :
       {"", "http://h", "rediss://h", "redis://", "redis://h:0", "redis://h:65536", "redis://h:x",
        "redis://h:", "redis://h/x", "redis://h?db=1", "redis://secret@h", "redis://:@h",
        "redis://:%zz@h", "redis://[::1", "unix://relative", "redis://h/-1"}) {
    absl::StatusOr<RedisAddress> r = ParseRedisUrl(bad);
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
    EXPECT_THAT(r.status().message(), Not(HasSubstr("secret"))) << bad;
  }
}

TEST(RedisStoreAuthTest, PasswordDatabaseAndUnixSocket) {
  ScopedTempDir tmp;
  absl::StatusOr<std::unique_ptr<RedisServer>> server =
      RedisServer::Start(tmp.path(), {"--requirepass", "s3cr/t"});
  ASSERT_TRUE(server.ok()) << server.status();
  RedisStore::Options o;
  o.key_prefix = kPrefix;
  const std::string host = absl::StrCat("127.0.0.1:", (*server)->port());
  absl::StatusOr<std::unique_ptr<RedisStore>> store =
      RedisStore::Connect(absl::StrCat("redis://:s3cr%2Ft@", host, "/3"), o);
  ASSERT_THAT(store, IsOk());
  ASSERT_THAT((*store)->Put(Req(ExpectedVersion::Absent(), 1), "in db 3"), IsOk());
  EXPECT_EQ((*store)->Get(kSid)->bytes, "in db 3");
  RawRedis raw((*server)->port());
  raw.Run({"AUTH", "s3cr/t"});
  raw.Run({"SELECT", "3"});
  EXPECT_EQ(raw.Keys(std::string(kPrefix) + "m:*").size(), 1u);

  absl::StatusOr<std::unique_ptr<RedisStore>> wrong =
      RedisStore::Connect(absl::StrCat("redis://:hunter2@", host), o);
  EXPECT_THAT(wrong, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("AUTH")));
  EXPECT_THAT(wrong.status().message(), Not(HasSubstr("hunter2")));
  absl::StatusOr<std::unique_ptr<RedisStore>> none =
      RedisStore::Connect(absl::StrCat("redis://", host), o);
  EXPECT_THAT(none, StatusIs(absl::StatusCode::kInternal, HasSubstr("NOAUTH")));

  // The unix socket of a server without a password.
  ScopedTempDir tmp2;
  absl::StatusOr<std::unique_ptr<RedisServer>> plain = RedisServer::Start(tmp2.path());
  ASSERT_TRUE(plain.ok()) << plain.status();
  absl::StatusOr<std::unique_ptr<RedisStore>> local =
      RedisStore::Connect("unix://" + (*plain)->unix_socket().string(), o);
  ASSERT_THAT(local, IsOk());
  ASSERT_THAT((*local)->Put(Req(ExpectedVersion::Absent(), 1), "over unix"), IsOk());
  EXPECT_EQ((*local)->Get(kSid)->bytes, "over unix");
}

TEST(RedisStoreFakeServerTest, WrongShapedRepliesAreErrorsNotCrashes) {
  const std::string hmget_garbage = [] {
    std::string s = "*9\r\n";
    for (int i = 0; i < 9; ++i) s += "$3\r\nabc\r\n";
    return s;
  }();
  const std::string replies[] = {":7\r\n",
                                 "$-1\r\n",
                                 "+OK\r\n",
                                 "*0\r\n",
                                 "*2\r\n:1\r\n*1\r\n:2\r\n",
                                 "*2\r\n:9\r\n$1\r\nx\r\n",
                                 "*2\r\n$1\r\nx\r\n:1\r\n",
                                 hmget_garbage,
                                 "$5\r\nhello\r\n",
                                 "-ERR boom\r\n",
                                 "-LOADING Redis is loading the dataset in memory\r\n",
                                 "garbage\r\n"};
  for (const std::string& reply : replies) {
    SCOPED_TRACE(::testing::PrintToString(reply));
    FakeRedis fake(reply);
    RedisStore::Options o;
    o.key_prefix = kPrefix;
    o.idle_ttl_ms = 1000;
    o.pool.io_timeout_ms = 500;
    o.pool.reconnect_backoff_ms = 0;
    absl::StatusOr<std::unique_ptr<RedisStore>> store =
        RedisStore::Connect(absl::StrCat("redis://127.0.0.1:", fake.port()), o);
    ASSERT_THAT(store, IsOk());
    RedisStore& s = **store;
    EXPECT_FALSE(s.Get(kSid).ok());
    EXPECT_FALSE(s.Put(Req(ExpectedVersion::Absent(), 1), "x").ok());
    EXPECT_FALSE(s.Put(Req(ExpectedVersion::Is(1), 2), "x").ok());
    EXPECT_FALSE(s.Put(Req(ExpectedVersion::Any(), 2), std::string(3000, 'y')).ok());
    EXPECT_FALSE(s.Delete(kSid).ok());
    EXPECT_FALSE(s.Touch(kSid).ok());
    EXPECT_FALSE(s.Expire(kSid, 5).ok());
    const absl::Status manifest = s.GetManifest(kSid).status();
    EXPECT_FALSE(manifest.ok());
    if (reply == "-ERR boom\r\n") {
      EXPECT_THAT(manifest, StatusIs(absl::StatusCode::kInternal, HasSubstr("boom")));
    } else if (reply.rfind("-LOADING", 0) == 0) {
      EXPECT_THAT(manifest, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("LOADING")));
    } else if (reply == "garbage\r\n") {
      EXPECT_THAT(manifest, StatusIs(absl::StatusCode::kUnavailable));
    }
  }
}

// The server answers the version check, then hangs up: the upload that follows writes to a
// closed socket, which raises SIGPIPE. Without the store's guard this kills the test binary.
TEST(RedisStoreFakeServerTest, PeerHangingUpMidWriteIsUnavailableNotSigpipe) {
  FakeRedis fake("$-1\r\n", /*hang_up_after_reply=*/true);
  RedisStore::Options o;
  o.key_prefix = kPrefix;
  o.pool.reconnect_backoff_ms = 0;
  absl::StatusOr<std::unique_ptr<RedisStore>> store =
      RedisStore::Connect(absl::StrCat("redis://127.0.0.1:", fake.port()), o);
  ASSERT_THAT(store, IsOk());
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT((*store)->Put(Req(ExpectedVersion::Absent(), 1), std::string(8 << 20, 'z')),
                StatusIs(absl::StatusCode::kUnavailable, HasSubstr("SET")));
  }
}

}  // namespace
}  // namespace xlstmd::core
