// StateTiers without a model or a scheduler: fake slots, a hand-run post queue, real files.
#include "core/engine/state_tiers.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/engine/parts_testutil.h"

namespace xlstmd::core {
namespace {

using engine_testing::FakeSlots;
using engine_testing::PostQueue;
using engine_testing::TinyCodec;
using engine_testing::TinyFloats;

CommitDelta OneToken() {
  CommitDelta d;
  d.tokens = 1;
  return d;
}

struct Rig {
  explicit Rig(TierOptions options, int32_t slots = 2)
      : fake(slots, TinyFloats()), pool(slots), index(&clock, SessionIndex::Limits{}) {
    auto t = StateTiers::Create(options, TinyCodec(), &fake, &pool, &index, &clock, posts.Fn());
    EXPECT_TRUE(t.ok()) << t.status();
    tiers = std::move(*t);
  }
  // A committed session whose state is `value` everywhere, resident in a slot.
  std::string Committed(float value) {
    const std::string id = index.Create("")->session_id;
    const int32_t slot = tiers->TakeSlot();
    EXPECT_GE(slot, 0);
    std::fill(fake.at(slot).begin(), fake.at(slot).end(), value);
    EXPECT_TRUE(index.ClaimForTurn("", id, {}).ok());
    index.Commit(id, OneToken());
    tiers->InstallCommitted(id, slot, 1);
    return id;
  }
  // Loads `id` into a fresh slot and returns the first float there.
  float Load(const std::string& id) {
    const int32_t slot = tiers->TakeSlot();
    EXPECT_GE(slot, 0);
    bool loaded = false;
    tiers->LoadInto(id, index.Peek(id)->info.version, slot, [] { return true; },
                    [&](absl::Status s) {
                      EXPECT_TRUE(s.ok()) << s;
                      loaded = true;
                    });
    EXPECT_TRUE(posts.RunUntil([&] { return loaded; }));
    const float v = fake.at(slot)[0];
    tiers->FreeSlot(slot);
    return v;
  }

  FakeClock clock;
  FakeSlots fake;
  SlotPool pool;
  SessionIndex index;
  PostQueue posts;
  std::unique_ptr<StateTiers> tiers;
};

std::filesystem::path FreshDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             absl::StrCat("xlstmd_tiers_", name, "_", ::getpid(), "_", std::random_device{}());
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(StateTiersTest, EvictionToHostAndBackIsExact) {
  Rig r(TierOptions{}, /*slots=*/2);
  const std::string a = r.Committed(1.5f), b = r.Committed(2.5f);
  EXPECT_EQ(r.pool.free_count(), 0);
  // A third slot evicts the least recently used resident (a) to host RAM.
  const int32_t slot = r.tiers->TakeSlot();
  ASSERT_GE(slot, 0);
  EXPECT_EQ(r.pool.ResidentSlot(a), -1);
  EXPECT_EQ(r.tiers->Stats().host_sessions, 1);
  r.tiers->FreeSlot(slot);
  EXPECT_EQ(r.Load(a), 1.5f);
  EXPECT_EQ(r.Load(b), 2.5f);
}

// Under slot pressure the session used least recently goes, not the one a turn just read:
// a and b are committed in that order, a is loaded again (a turn continuing it), so the
// next slot wanted evicts b.
TEST(StateTiersTest, EvictionPicksTheLeastRecentlyUsedSession) {
  Rig r(TierOptions{}, /*slots=*/3);
  const std::string a = r.Committed(1.5f), b = r.Committed(2.5f);
  EXPECT_EQ(r.Load(a), 1.5f);  // through the free slot: a becomes the most recently used
  const int32_t s1 = r.tiers->TakeSlot();  // the free slot: no eviction
  ASSERT_GE(s1, 0);
  EXPECT_GE(r.pool.ResidentSlot(a), 0);
  EXPECT_GE(r.pool.ResidentSlot(b), 0);
  const int32_t s2 = r.tiers->TakeSlot();  // must evict one resident: b
  ASSERT_GE(s2, 0);
  EXPECT_GE(r.pool.ResidentSlot(a), 0);
  EXPECT_EQ(r.pool.ResidentSlot(b), -1);
  r.tiers->FreeSlot(s1);
  r.tiers->FreeSlot(s2);
  EXPECT_EQ(r.Load(b), 2.5f);  // from host RAM, exact
}

TEST(StateTiersTest, HostBudgetSpillsToDiskAndRestoresFromIt) {
  const auto dir = FreshDir("spill");
  TierOptions o;
  o.state_dir = dir.string();
  o.host_state_bytes = 0;  // nothing may stay in RAM
  {
    Rig r(o, /*slots=*/1);
    const std::string a = r.Committed(3.0f);
    // Taking the only slot needs a's state on disk first: the write is started, -1 for now.
    EXPECT_EQ(r.tiers->TakeSlot(), -1);
    ASSERT_TRUE(r.posts.RunUntil([&] { return r.tiers->Stats().snapshot_writes == 1; }));
    const int32_t slot = r.tiers->TakeSlot();
    ASSERT_GE(slot, 0);
    EXPECT_EQ(r.pool.ResidentSlot(a), -1);
    r.tiers->FreeSlot(slot);
    EXPECT_EQ(r.Load(a), 3.0f);
    EXPECT_EQ(r.tiers->Stats().restores_from_disk, 1);
  }
  {
    // A new instance indexes the file: the session and its state survive a restart.
    Rig r(o, 1);
    ASSERT_EQ(r.index.size(), 1);
    const std::string id = r.index.IdleIds().front();
    EXPECT_EQ(r.Load(id), 3.0f);
  }
  std::filesystem::remove_all(dir);
}

TEST(StateTiersTest, SyncPersistMarksTheCommittedStateDurable) {
  const auto dir = FreshDir("sync");
  TierOptions o;
  o.state_dir = dir.string();
  o.durability = Durability::kSync;
  Rig r(o, 2);
  EXPECT_TRUE(r.tiers->sync_commits());
  const std::string id = r.index.Create("")->session_id;
  const int32_t slot = r.tiers->TakeSlot();
  std::fill(r.fake.at(slot).begin(), r.fake.at(slot).end(), 7.0f);
  ASSERT_TRUE(r.index.ClaimForTurn("", id, {}).ok());
  auto preview = r.index.PreviewCommit(id, OneToken());
  bool committed = false;
  uint64_t digest = 0;
  r.tiers->PersistBeforeCommit(id, preview->first, r.tiers->CaptureSlot(slot),
                               [&](absl::StatusOr<uint64_t> d) {
                                 ASSERT_TRUE(d.ok()) << d.status();
                                 digest = *d;
                                 r.index.Commit(id, OneToken());
                                 r.tiers->InstallCommitted(id, slot, 1);
                                 committed = true;
                               });
  ASSERT_TRUE(r.posts.RunUntil([&] { return committed; }));
  EXPECT_TRUE(std::filesystem::exists(dir / (id + ".xss")));
  // The digest handed back is the file's last 8 bytes (its footer checksum).
  std::ifstream file(dir / (id + ".xss"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(file)),
                          std::istreambuf_iterator<char>());
  ASSERT_GE(bytes.size(), 8u);
  uint64_t tail = 0;
  std::memcpy(&tail, bytes.data() + bytes.size() - 8, 8);
  EXPECT_EQ(digest, tail);
  EXPECT_NE(digest, 0u);
  // Acknowledging under sync needs no further write: the file holds this generation.
  bool acked = false;
  r.tiers->AckWhenStored(id, *r.index.Get("", id), false, ExpectedVersion::Any(),
                         [&](absl::StatusOr<SessionInfo> info) {
                           EXPECT_TRUE(info.ok());
                           acked = true;
                         });
  r.posts.RunAll();
  EXPECT_TRUE(acked);
  EXPECT_EQ(r.tiers->Stats().snapshot_writes, 1);
  std::filesystem::remove_all(dir);
}

TEST(StateTiersTest, RewindPointsAreKeptBoundedAndRestoreTheirState) {
  TierOptions o;
  o.rewind_points = 2;
  Rig r(o, 2);
  const std::string id = r.Committed(1.0f);
  for (uint64_t v = 0; v < 3; ++v) {
    RewindPoint p;
    p.version = v;
    p.state = MakePageableState(std::vector<float>(TinyFloats(), static_cast<float>(10 + v)));
    r.tiers->AddRewindPoint(id, std::move(p));
  }
  EXPECT_EQ(r.tiers->Rewind(id, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  auto point = r.tiers->Rewind(id, 1);
  ASSERT_TRUE(point.ok());
  EXPECT_EQ(r.pool.ResidentSlot(id), -1);  // the state is the rewind point's host copy now
  EXPECT_EQ(r.Load(id), 11.0f);
  EXPECT_EQ(r.tiers->Stats().host_sessions, 1);
}

TEST(StateTiersTest, DropForgetsEveryTier) {
  Rig r(TierOptions{}, 2);
  const std::string id = r.Committed(4.0f);
  r.tiers->Drop(id);
  EXPECT_EQ(r.pool.resident_count(), 0);
  EXPECT_EQ(r.pool.free_count(), 2);
  EXPECT_EQ(r.Load(id), 0.0f);  // unknown: the zero state
}

}  // namespace
}  // namespace xlstmd::core
