// RedisStore against a real redis-server started per test (tests/testing/redis_server.h): round
// trips small and across chunks, the version compare-and-set (including two concurrent writers,
// exactly one of which wins), cleanup of old and losing generations, corrupt/missing chunks and
// malformed or oversized manifests. TTLs, outages, connecting and malformed replies are in
// redis_store_resilience_test.cc.
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

}  // namespace
}  // namespace xlstmd::core
