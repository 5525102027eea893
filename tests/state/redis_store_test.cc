// RedisStore against a real redis-server started per test (tests/testing/redis_server.h): round
// trips small and across chunks, the version compare-and-set (including two concurrent writers,
// exactly one of which wins), cleanup of old and losing generations, corrupt/missing chunks and
// malformed or oversized manifests, TTLs, a killed, restarted or stalled server, unreachable
// addresses, URL parsing, AUTH/db/unix sockets, and replies of every wrong shape from a fake
// server (never a crash).
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
#include "tests/core/model_files_testutil.h"
#include "tests/state/redis_testutil.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

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

constexpr char kSid[] = "AbCdEfGhIjKlMnOpQr_-0w";
constexpr char kPrefix[] = "xlstmd:0123abcd:";

std::string Pattern(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

RedisPutRequest Req(ExpectedVersion expected, uint64_t new_version) {
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

TEST_F(RedisStoreTest, SmallRoundTrip) {
  std::unique_ptr<RedisStore> store = Open();
  ASSERT_NE(store, nullptr);
  const std::string bytes = "a small snapshot";
  absl::StatusOr<RedisManifest> put = store->Put(Req(ExpectedVersion::Absent(), 1), bytes);
  ASSERT_THAT(put, IsOk());

  absl::StatusOr<RedisManifest> m = store->GetManifest(kSid);
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(m->version, 1u);
  EXPECT_EQ(m->total_bytes, bytes.size());
  EXPECT_EQ(m->chunk_count(), 1u);
  EXPECT_EQ(m->owner, "tenant-7");
  EXPECT_EQ(m->updated_unix_ms, 1700000000123);
  EXPECT_EQ(m->generation, put->generation);
  EXPECT_EQ(m->chunk_xxh3, put->chunk_xxh3);

  absl::StatusOr<RedisSnapshot> got = store->Get(kSid);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->bytes, bytes);

  std::string buffer(64, 'x');
  absl::StatusOr<RedisManifest> into = store->GetInto(kSid, absl::MakeSpan(buffer));
  ASSERT_THAT(into, IsOk());
  EXPECT_EQ(buffer.substr(0, into->total_bytes), bytes);

  // An empty snapshot is zero chunks, and still round-trips.
  ASSERT_THAT(store->Put(Req(ExpectedVersion::Is(1), 2), std::string_view()), IsOk());
  got = store->Get(kSid);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->manifest.version, 2u);
  EXPECT_EQ(got->bytes, "");
  EXPECT_THAT(ChunkKeys(), ::testing::IsEmpty());

  EXPECT_THAT(store->GetManifest("nosuchsession"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->Get("nosuchsession"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->GetManifest("bad:id"), StatusIs(absl::StatusCode::kInvalidArgument));
  const RedisStoreStats stats = store->Stats();
  EXPECT_EQ(stats.puts, 2);
  EXPECT_EQ(stats.gets, 3);
}

TEST_F(RedisStoreTest, TwentyMiBAcrossChunksFromPieces) {
  std::unique_ptr<RedisStore> store = Open();  // 4 MiB chunks
  ASSERT_NE(store, nullptr);
  // Pieces whose boundaries fall inside chunks, like SnapshotParts' head, payload and tail.
  const std::string head = Pattern(1000, 1), payload = Pattern((20u << 20) - 1500, 2),
                    tail = Pattern(500, 3);
  const std::string_view pieces[] = {head, payload, std::string_view(), tail};
  const auto t0 = Clock::now();
  absl::StatusOr<RedisManifest> put = store->Put(Req(ExpectedVersion::Absent(), 1), pieces);
  ASSERT_THAT(put, IsOk());
  EXPECT_EQ(put->chunk_count(), 5u);
  absl::StatusOr<RedisSnapshot> got = store->Get(kSid);
  ASSERT_THAT(got, IsOk());
  EXPECT_TRUE(got->bytes == head + payload + tail);
  std::cerr << "20 MiB put + get: " << SecondsSince(t0) << " s\n";

  // Five chunk keys of this generation, no TTL left from the upload (idle_ttl_ms is 0).
  const std::vector<std::string> chunks = ChunkKeys();
  ASSERT_EQ(chunks.size(), 5u);
  for (uint64_t i = 0; i < 5; ++i) {
    EXPECT_EQ(chunks[i], store->ChunkKey(kSid, put->generation, i));
    EXPECT_EQ(raw_->Run({"PTTL", chunks[i]}), "-1");
    EXPECT_EQ(raw_->Run({"STRLEN", chunks[i]}), "4194304");  // 20 MiB is exactly 5 chunks
  }
  EXPECT_EQ(raw_->Run({"PTTL", store->ManifestKey(kSid)}), "-1");
}

TEST_F(RedisStoreTest, VersionCheckIsExplicit) {
  std::unique_ptr<RedisStore> store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->Put(Req(ExpectedVersion::Absent(), 1), "v1"), IsOk());
  EXPECT_THAT(store->Put(Req(ExpectedVersion::Absent(), 1), "again"),
              StatusIs(absl::StatusCode::kAborted,
                       AllOf(HasSubstr("expected absent"), HasSubstr("found version 1"))));
  EXPECT_THAT(store->Put(Req(ExpectedVersion::Is(5), 6), "stale"),
              StatusIs(absl::StatusCode::kAborted,
                       AllOf(HasSubstr("expected version 5"), HasSubstr("found version 1"))));
  EXPECT_THAT(store->Put(Req(ExpectedVersion::Is(1), 1), "same"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(store->Put(Req(ExpectedVersion::Is(1), 2), "v2"), IsOk());
  ASSERT_THAT(store->Put(Req(ExpectedVersion::Any(), 9), "forced"), IsOk());
  EXPECT_EQ(store->Get(kSid)->bytes, "forced");

  RedisPutRequest other = Req(ExpectedVersion::Is(3), 4);
  other.session_id = "other";
  EXPECT_THAT(store->Put(other, "x"), StatusIs(absl::StatusCode::kAborted, HasSubstr("absent")));
  EXPECT_EQ(store->Stats().put_conflicts, 3);
  // Refused writes leave nothing behind: one chunk, of the committed generation.
  EXPECT_EQ(ChunkKeys().size(), 1u);
}

TEST_F(RedisStoreTest, ConcurrentWritersExactlyOneWins) {
  RedisStore::Options o = Opts();
  o.max_snapshot_bytes = 64 << 20;
  o.chunk_bytes = 1 << 20;  // several chunks each, so both uploads overlap the other's commit
  std::unique_ptr<RedisStore> a = Open(o), b = Open(o);  // like two daemons
  ASSERT_TRUE(a && b);
  ASSERT_THAT(a->Put(Req(ExpectedVersion::Absent(), 1), "v1"), IsOk());
  for (uint64_t round = 1; round <= 4; ++round) {
    const std::string blob_a = Pattern(6 << 20, 100 + round),
                      blob_b = Pattern(6 << 20, 200 + round);
    std::atomic<int> ready{0};
    absl::StatusOr<RedisManifest> ra, rb;
    auto writer = [&](RedisStore* s, const std::string* blob, absl::StatusOr<RedisManifest>* out) {
      ++ready;
      while (ready.load() < 2) {
      }
      *out = s->Put(Req(ExpectedVersion::Is(round), round + 1), *blob);
    };
    std::thread ta(writer, a.get(), &blob_a, &ra), tb(writer, b.get(), &blob_b, &rb);
    ta.join();
    tb.join();
    ASSERT_NE(ra.ok(), rb.ok()) << "round " << round << ": " << ra.status() << " / " << rb.status();
    const absl::StatusOr<RedisManifest>& loser = ra.ok() ? rb : ra;
    EXPECT_THAT(loser, StatusIs(absl::StatusCode::kAborted,
                                AllOf(HasSubstr(absl::StrCat("expected version ", round)),
                                      HasSubstr(absl::StrCat("found version ", round + 1)))));
    absl::StatusOr<RedisSnapshot> got = a->Get(kSid);
    ASSERT_THAT(got, IsOk());
    EXPECT_EQ(got->manifest.version, round + 1);
    EXPECT_TRUE(got->bytes == (ra.ok() ? blob_a : blob_b));
    // Only the winner's chunks survive: the loser's were deleted, the old generation too.
    EXPECT_EQ(ChunkKeys().size(), 6u) << "round " << round;
  }
  EXPECT_EQ(a->Stats().put_conflicts + b->Stats().put_conflicts, 4);
}

TEST_F(RedisStoreTest, OldGenerationIsDeleted) {
  RedisStore::Options o = Opts();
  o.chunk_bytes = 1024;
  o.max_snapshot_bytes = 1 << 20;
  std::unique_ptr<RedisStore> store = Open(o);
  ASSERT_NE(store, nullptr);
  absl::StatusOr<RedisManifest> v1 =
      store->Put(Req(ExpectedVersion::Absent(), 1), Pattern(2500, 1));
  ASSERT_THAT(v1, IsOk());
  EXPECT_EQ(ChunkKeys().size(), 3u);
  absl::StatusOr<RedisManifest> v2 = store->Put(Req(ExpectedVersion::Is(1), 2), Pattern(1500, 2));
  ASSERT_THAT(v2, IsOk());
  EXPECT_NE(v1->generation, v2->generation);
  EXPECT_THAT(ChunkKeys(), ::testing::ElementsAre(store->ChunkKey(kSid, v2->generation, 0),
                                                  store->ChunkKey(kSid, v2->generation, 1)));

  EXPECT_THAT(store->Delete(kSid, ExpectedVersion::Is(1)),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("found version 2")));
  EXPECT_THAT(store->Delete(kSid, ExpectedVersion::Absent()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store->Delete(kSid, ExpectedVersion::Is(2)), IsOk());
  EXPECT_THAT(raw_->Keys(std::string(kPrefix) + "*"), ::testing::IsEmpty());
  EXPECT_THAT(store->Delete(kSid), StatusIs(absl::StatusCode::kNotFound));
}

class DamagedTest : public RedisStoreTest {
 protected:
  void SetUp() override {
    RedisStoreTest::SetUp();
    RedisStore::Options o = Opts();
    o.chunk_bytes = 1024;
    o.max_snapshot_bytes = 1 << 20;
    store_ = Open(o);
    ASSERT_NE(store_, nullptr);
    absl::StatusOr<RedisManifest> m =
        store_->Put(Req(ExpectedVersion::Absent(), 1), Pattern(3000, 9));
    ASSERT_THAT(m, IsOk());
    manifest_ = *m;
  }
  std::string Chunk(int i) { return store_->ChunkKey(kSid, manifest_.generation, i); }
  std::string ManifestKey() { return store_->ManifestKey(kSid); }
  std::unique_ptr<RedisStore> store_;
  RedisManifest manifest_;
};

TEST_F(DamagedTest, CorruptChunkIsDataLoss) {
  std::string byte = raw_->Run({"GETRANGE", Chunk(1), "10", "10"});
  byte[0] ^= 0x40;
  ASSERT_EQ(raw_->Run({"SETRANGE", Chunk(1), "10", byte}), "1024");
  EXPECT_THAT(store_->Get(kSid), StatusIs(absl::StatusCode::kDataLoss,
                                          AllOf(HasSubstr("chunk 1 of 3"), HasSubstr("checksum"))));
  std::string buffer(4096, '\0');
  EXPECT_THAT(store_->GetInto(kSid, absl::MakeSpan(buffer)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("chunk 1 of 3")));
  EXPECT_EQ(store_->Stats().data_loss, 2);
}

TEST_F(DamagedTest, WrongLengthChunkIsDataLoss) {
  raw_->Run({"APPEND", Chunk(0), "x"});
  EXPECT_THAT(store_->Get(kSid), StatusIs(absl::StatusCode::kDataLoss,
                                          AllOf(HasSubstr("chunk 0 of 3"), HasSubstr("longer"))));
  raw_->Run({"SET", Chunk(0), "short"});
  EXPECT_THAT(store_->Get(kSid), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("has 5 bytes")));
  raw_->Run({"DEL", Chunk(0)});
  raw_->Run({"HSET", Chunk(0), "f", "v"});
  EXPECT_THAT(store_->Get(kSid),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("is not a string")));
}

TEST_F(DamagedTest, MissingChunkIsDataLoss) {
  ASSERT_EQ(raw_->Run({"DEL", Chunk(2)}), "1");
  EXPECT_THAT(store_->Get(kSid), StatusIs(absl::StatusCode::kDataLoss,
                                          AllOf(HasSubstr("chunk 2 of 3"), HasSubstr("missing"))));
}

TEST_F(DamagedTest, OversizedManifestIsRefusedBeforeAllocating) {
  // 2^62 bytes: were it allocated, the test would die of bad_alloc.
  raw_->Run({"HSET", ManifestKey(), "bytes", "4611686018427387904"});
  EXPECT_THAT(store_->GetManifest(kSid),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("4611686018427387904")));
  EXPECT_THAT(store_->Get(kSid), StatusIs(absl::StatusCode::kResourceExhausted));
  // Within max_snapshot_bytes, but a chunk count that would size a huge checksum list.
  raw_->Run({"HSET", ManifestKey(), "bytes", "1000000", "chunk_bytes", "1", "chunks", "1000000"});
  EXPECT_THAT(store_->Get(kSid),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("over the chunk limit")));
  // A correct manifest that does not fit the caller's buffer.
  raw_->Run({"HSET", ManifestKey(), "bytes", "3000", "chunk_bytes", "1024", "chunks", "3"});
  ASSERT_THAT(store_->Get(kSid), IsOk());
  std::string small(2999, '\0');
  EXPECT_THAT(store_->GetInto(kSid, absl::MakeSpan(small)),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("does not fit")));
}

TEST_F(DamagedTest, MalformedManifestIsDataLossAndCanBeOverwritten) {
  struct Case {
    std::vector<std::string> edit;
    absl::StatusCode code;
    std::string message;
  };
  const std::string key = ManifestKey();
  const Case cases[] = {
      {{"HSET", key, "version", "abc"}, absl::StatusCode::kDataLoss, "'version'"},
      {{"HSET", key, "version", "01"}, absl::StatusCode::kDataLoss, "'version'"},
      {{"HDEL", key, "xxh3"}, absl::StatusCode::kDataLoss, "'xxh3' is missing"},
      {{"HSET", key, "xxh3", "0123"}, absl::StatusCode::kDataLoss, "'xxh3'"},
      {{"HSET", key, "gen", "../../etc"}, absl::StatusCode::kDataLoss, "'gen'"},
      {{"HSET", key, "chunks", "2"}, absl::StatusCode::kDataLoss, "'chunks'"},
      {{"HSET", key, "chunk_bytes", "0"}, absl::StatusCode::kDataLoss, "'chunk_bytes'"},
      {{"HSET", key, "format", "2"}, absl::StatusCode::kFailedPrecondition, "newer xlstmd"},
      {{"SET", key, "not a hash"}, absl::StatusCode::kDataLoss, "not a hash"},
  };
  const std::string good = raw_->Run({"DUMP", key});
  for (const Case& c : cases) {
    if (c.edit[0] == "SET") raw_->Run({"DEL", key});
    raw_->Run(c.edit);
    EXPECT_THAT(store_->Get(kSid), StatusIs(c.code, HasSubstr(c.message))) << c.edit[2];
    raw_->Run({"DEL", key});
    ASSERT_EQ(raw_->Run({"RESTORE", key, "0", good}), "OK");
    ASSERT_THAT(store_->Get(kSid), IsOk());
  }
  // A writer expecting a version meets a key it cannot read: ABORTED naming it; with Any it
  // replaces the junk.
  raw_->Run({"DEL", key});
  raw_->Run({"SET", key, "junk"});
  EXPECT_THAT(
      store_->Put(Req(ExpectedVersion::Is(1), 2), "v2"),
      StatusIs(absl::StatusCode::kAborted, HasSubstr("unreadable manifest (key type string)")));
  ASSERT_THAT(store_->Put(Req(ExpectedVersion::Any(), 2), "v2"), IsOk());
  EXPECT_EQ(store_->Get(kSid)->bytes, "v2");
}

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
