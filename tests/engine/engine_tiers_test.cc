// State tiers of the engine on the golden xLSTM-Large model: restarts per durability mode,
// spilling to disk and to Redis, export/import, quarantine, rewind, two engines on one Redis.
#include "core/engine/engine.h"

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/engine_harness.h"
#include "tests/testing/redis_server.h"

namespace xlstmd::core {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using namespace engine_testing;  // NOLINT: the fixtures are the test vocabulary

TEST(EngineTiersTest, SyncCommitsSurviveARestart) {
  const auto dir = FreshDir("sync");
  EngineOptions opts;
  opts.state_dir = dir.string();
  opts.durability = EngineOptions::Durability::kSync;
  Harness ref = MakeEngine();
  SessionInfo r = NewSession(*ref.engine);
  std::string id;
  {
    Harness h = MakeEngine(opts);
    SessionInfo s = NewSession(*h.engine);
    id = s.session_id;
    TurnRequest t = Tokens(id, {4, 5, 6});
    t.request_id = "0b9d8a6e-3c1f-4f5a-9e2d-7c4b1a2f3e01";
    ASSERT_TRUE(RunTurn(*h.engine, t).status.ok());
    ASSERT_TRUE(RunTurn(*ref.engine, Tokens(r.session_id, {4, 5, 6})).status.ok());
    EXPECT_GE(h.engine->stats().snapshot_writes, 1);
  }  // the engine goes away without any flush: sync commits are already on disk
  Harness h = MakeEngine(opts);
  auto info = h.engine->GetSession("", id);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version, 1u);
  EXPECT_EQ(info->token_count, 9u);
  TurnRequest again = Tokens(id, {4, 5, 6});
  again.request_id = "0b9d8a6e-3c1f-4f5a-9e2d-7c4b1a2f3e01";
  EXPECT_EQ(RunTurn(*h.engine, again).status.code(), absl::StatusCode::kAlreadyExists);
  // The body's fingerprint came back from the snapshot: another body is refused.
  TurnRequest other = Tokens(id, {4, 5});
  other.request_id = "0b9d8a6e-3c1f-4f5a-9e2d-7c4b1a2f3e01";
  EXPECT_EQ(RunTurn(*h.engine, other).status.code(), absl::StatusCode::kInvalidArgument);
  TurnResult a = RunTurn(*h.engine, Tokens(id, {7}));
  TurnResult b = RunTurn(*ref.engine, Tokens(r.session_id, {7}));
  ASSERT_TRUE(a.status.ok() && b.status.ok()) << a.status;
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(h.engine->stats().restores_from_disk, 1);
  std::filesystem::remove_all(dir);
}

TEST(EngineTiersTest, FlushPersistsEveryStateForARestart) {
  const auto dir = FreshDir("flush");
  EngineOptions opts;
  opts.state_dir = dir.string();
  std::vector<std::string> ids;
  std::vector<std::vector<int32_t>> next;
  {
    Harness h = MakeEngine(opts);
    for (int i = 0; i < 4; ++i) {
      SessionInfo s = NewSession(*h.engine);
      ids.push_back(s.session_id);
      if (i > 0) {
        ASSERT_TRUE(RunTurn(*h.engine, Tokens(s.session_id, {i, 2 * i})).status.ok());
      }
    }
    EXPECT_EQ(h.engine->stats().snapshot_writes, 0);  // durability none: nothing yet
    ASSERT_TRUE(h.engine->FlushToDisk(10000));
    EXPECT_EQ(h.engine->stats().disk_sessions, 4);
    // What each session produces next, to compare after the restart (from forks, so the
    // originals stay as flushed).
    for (const auto& id : ids) {
      auto f = Fork(*h.engine, id);
      ASSERT_TRUE(f.ok());
      next.push_back(RunTurn(*h.engine, Tokens(f->session_id, {9})).tokens);
    }
  }
  Harness h = MakeEngine(opts);
  for (size_t i = 0; i < ids.size(); ++i) {
    TurnResult t = RunTurn(*h.engine, Tokens(ids[i], {9}));
    ASSERT_TRUE(t.status.ok()) << t.status;
    EXPECT_EQ(t.tokens, next[i]) << "session " << i;
  }
  std::filesystem::remove_all(dir);
}

TEST(EngineTiersTest, HostBudgetSpillsToDiskAndRestores) {
  const auto dir = FreshDir("spill");
  Harness probe = MakeEngine();
  const int64_t state_bytes = static_cast<int64_t>(probe.engine->model().state_bytes_per_session());
  EngineOptions opts;
  opts.state_dir = dir.string();
  opts.resident_slots = 2;
  opts.max_batch = 1;
  opts.host_state_bytes = state_bytes;  // one idle state in RAM
  Harness h = MakeEngine(opts);
  std::vector<std::string> ids, ref_ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(NewSession(*h.engine).session_id);
    ref_ids.push_back(NewSession(*probe.engine).session_id);
  }
  RunRoundsLikeReference(*h.engine, ids, *probe.engine, ref_ids, 3, [&] {
    EXPECT_LE(h.engine->stats().host_state_bytes, state_bytes);
  });
  EXPECT_GT(h.engine->stats().restores_from_disk, 0);
  // A fork of a session whose state is only on disk.
  auto f = Fork(*h.engine, ids[0]);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(RunTurn(*h.engine, Tokens(f->session_id, {1}, 4)).tokens,
            RunTurn(*h.engine, Tokens(ids[0], {1}, 4)).tokens);
  std::filesystem::remove_all(dir);
}

TEST(EngineTiersTest, WithoutADiskTierSessionsAreCappedToFitInMemory) {
  Harness probe = MakeEngine();
  EngineOptions opts;
  opts.resident_slots = 2;
  opts.max_batch = 1;
  opts.host_state_bytes =
      static_cast<int64_t>(probe.engine->model().state_bytes_per_session());  // one state
  Harness h = MakeEngine(opts);
  NewSession(*h.engine);
  NewSession(*h.engine);
  absl::Notification done;
  absl::StatusOr<SessionInfo> third;
  h.engine->CreateSession("", "", [&](absl::StatusOr<SessionInfo> r) {
    third = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(EngineTiersTest, ExportImportRoundTrip) {
  Harness h = MakeEngine();
  SessionInfo s = NewSession(*h.engine);
  TurnRequest m;
  m.session_id = s.session_id;
  m.message = "hello";
  m.sampling.max_tokens = 3;
  ASSERT_TRUE(RunTurn(*h.engine, m).status.ok());
  auto bytes = Export(*h.engine, s.session_id);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_LE(bytes->size(), h.engine->max_snapshot_bytes());
  auto imported = Import(*h.engine, *bytes);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_NE(imported->session_id, s.session_id);
  EXPECT_EQ(imported->version, 1u);
  EXPECT_EQ(imported->token_count, h.engine->GetSession("", s.session_id)->token_count);
  // Message turns continue the template the same way (reply closed, no second BOS).
  TurnResult a = RunTurn(*h.engine, m);
  m.session_id = imported->session_id;
  TurnResult b = RunTurn(*h.engine, m);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.input_ids, b.input_ids);
  EXPECT_EQ(a.tokens, b.tokens);

  std::string corrupt = *bytes;
  corrupt[corrupt.size() / 2] ^= 0x40;
  EXPECT_EQ(Import(*h.engine, corrupt).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Import(*h.engine, bytes->substr(0, bytes->size() - 9)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Import(*h.engine, std::string(h.engine->max_snapshot_bytes() + 1, 'x'))
                .status()
                .code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Export(*h.engine, "unknown").status().code(), absl::StatusCode::kNotFound);
}

TEST(EngineTiersTest, CorruptSnapshotsAreQuarantinedAtStartup) {
  const auto dir = FreshDir("quarantine");
  EngineOptions opts;
  opts.state_dir = dir.string();
  opts.durability = EngineOptions::Durability::kSync;
  std::string good, bad;
  {
    Harness h = MakeEngine(opts);
    good = NewSession(*h.engine).session_id;
    bad = NewSession(*h.engine).session_id;
    ASSERT_TRUE(RunTurn(*h.engine, Tokens(good, {1})).status.ok());
    ASSERT_TRUE(RunTurn(*h.engine, Tokens(bad, {2})).status.ok());
  }
  {
    std::fstream f(dir / (bad + ".xss"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  Harness h = MakeEngine(opts);
  EXPECT_TRUE(h.engine->GetSession("", good).ok());
  EXPECT_EQ(h.engine->GetSession("", bad).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.engine->stats().quarantined_snapshots, 1);
  EXPECT_FALSE(std::filesystem::exists(dir / (bad + ".xss")));
  std::filesystem::remove_all(dir);
}

TEST(EngineTiersTest, RewindRestoresAKeptVersion) {
  const auto dir = FreshDir("rewind");
  EngineOptions opts;
  opts.keep_turn_checkpoints = 2;
  opts.state_dir = dir.string();
  opts.durability = EngineOptions::Durability::kAsync;
  Harness h = MakeEngine(opts);
  SessionInfo s = NewSession(*h.engine);
  TurnRequest first = Tokens(s.session_id, {3, 1, 4});
  ASSERT_TRUE(RunTurn(*h.engine, first).status.ok());
  const uint64_t tokens_v1 = h.engine->GetSession("", s.session_id)->token_count;
  TurnRequest second = Tokens(s.session_id, {1, 5});
  second.request_id = "0b9d8a6e-3c1f-4f5a-9e2d-7c4b1a2f3e02";
  TurnResult v2 = RunTurn(*h.engine, second);
  ASSERT_TRUE(v2.status.ok());
  ASSERT_TRUE(RunTurn(*h.engine, Tokens(s.session_id, {9, 2})).status.ok());  // v3

  // Back to version 1, then the same second turn gives the same reply again.
  auto back = Rewind(*h.engine, s.session_id, 1);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->version, 1u);
  EXPECT_EQ(back->token_count, tokens_v1);
  TurnResult again = RunTurn(*h.engine, second);  // request "two" was undone: it runs again
  ASSERT_TRUE(again.status.ok()) << again.status;
  EXPECT_EQ(again.tokens, v2.tokens);
  EXPECT_EQ(again.version, 2u);

  // Only the last two earlier versions are kept: version 0 is gone after three turns.
  ASSERT_TRUE(RunTurn(*h.engine, Tokens(s.session_id, {7})).status.ok());
  EXPECT_EQ(Rewind(*h.engine, s.session_id, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Rewind(*h.engine, s.session_id, 99).status().code(),
            absl::StatusCode::kFailedPrecondition);

  // A rewound state is what the disk tier ends up holding.
  ASSERT_TRUE(Rewind(*h.engine, s.session_id, 2).ok());
  ASSERT_TRUE(h.engine->FlushToDisk(10000));
  auto exported = Export(*h.engine, s.session_id);
  ASSERT_TRUE(exported.ok());
  h.engine.reset();  // before its backend
  h.backend.reset();
  Harness reopened = MakeEngine(opts);
  EXPECT_EQ(reopened.engine->GetSession("", s.session_id)->version, 2u);
  std::filesystem::remove_all(dir);
}

TEST(EngineTiersTest, ForkAtAKeptVersionLeavesTheOriginalAlone) {
  EngineOptions opts;
  opts.keep_turn_checkpoints = 2;
  Harness h = MakeEngine(opts);
  SessionInfo s = NewSession(*h.engine);
  ASSERT_TRUE(RunTurn(*h.engine, Tokens(s.session_id, {3, 1, 4})).status.ok());
  const uint64_t tokens_v1 = h.engine->GetSession("", s.session_id)->token_count;
  TurnRequest second = Tokens(s.session_id, {1, 5});
  TurnResult v2 = RunTurn(*h.engine, second);
  ASSERT_TRUE(v2.status.ok());
  ASSERT_TRUE(RunTurn(*h.engine, Tokens(s.session_id, {9, 2})).status.ok());  // v3

  auto fork = ForkAt(*h.engine, s.session_id, 1);
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_NE(fork->session_id, s.session_id);
  EXPECT_EQ(fork->version, 1u);
  EXPECT_EQ(fork->token_count, tokens_v1);
  // The fork continues from version 1: the same second turn gives the same reply.
  TurnRequest on_fork = second;
  on_fork.session_id = fork->session_id;
  TurnResult again = RunTurn(*h.engine, on_fork);
  ASSERT_TRUE(again.status.ok()) << again.status;
  EXPECT_EQ(again.tokens, v2.tokens);
  EXPECT_EQ(again.version, 2u);
  // The original is untouched and still at version 3.
  EXPECT_EQ(h.engine->GetSession("", s.session_id)->version, 3u);
  // The current version is a plain fork; a version not kept is FAILED_PRECONDITION.
  auto current = ForkAt(*h.engine, s.session_id, 3);
  ASSERT_TRUE(current.ok());
  EXPECT_EQ(current->version, 3u);
  EXPECT_EQ(ForkAt(*h.engine, s.session_id, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ForkAt(*h.engine, "nope", 1).status().code(), absl::StatusCode::kNotFound);
}

TEST(EngineTiersTest, DeleteRemovesTheSnapshotFile) {
  const auto dir = FreshDir("delete");
  EngineOptions opts;
  opts.state_dir = dir.string();
  opts.durability = EngineOptions::Durability::kSync;
  Harness h = MakeEngine(opts);
  SessionInfo s = NewSession(*h.engine);
  ASSERT_TRUE(RunTurn(*h.engine, Tokens(s.session_id, {1})).status.ok());
  EXPECT_TRUE(std::filesystem::exists(dir / (s.session_id + ".xss")));
  absl::Notification done;
  h.engine->DeleteSession("", s.session_id, [&](absl::Status st) {
    EXPECT_TRUE(st.ok());
    done.Notify();
  });
  done.WaitForNotification();
  for (int i = 0; i < 100 && std::filesystem::exists(dir / (s.session_id + ".xss")); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(std::filesystem::exists(dir / (s.session_id + ".xss")));
  std::filesystem::remove_all(dir);
}



// Without a disk tier, Redis is where idle states spill: with room for one idle state in RAM,
// five sessions (one with a system prompt, whose version 0 is not the zero state) keep
// producing exactly what a roomy engine produces, restoring from Redis.
TEST(EngineRedisTest, IdleStatesSpillToRedisAndRestoreExactly) {
  const auto dir = FreshDir("redis-spill");
  std::filesystem::create_directories(dir);
  auto redis = testing::RedisServer::Start(dir);
  ASSERT_TRUE(redis.ok()) << redis.status();
  Harness probe = MakeEngine();
  const int64_t state_bytes = static_cast<int64_t>(probe.engine->model().state_bytes_per_session());
  EngineOptions opts;
  opts.redis_url = (*redis)->url();
  opts.resident_slots = 2;
  opts.max_batch = 1;
  opts.host_state_bytes = state_bytes;
  Harness h = MakeEngine(opts);
  std::vector<std::string> ids, ref_ids;
  for (int i = 0; i < 5; ++i) {
    const std::string system = i == 0 ? "Be brief." : "";
    ids.push_back(NewSession(*h.engine, "", system).session_id);
    ref_ids.push_back(NewSession(*probe.engine, "", system).session_id);
  }
  EXPECT_EQ(h.engine->stats().redis_writes, 5) << "every create is stored before its ack";
  RunRoundsLikeReference(*h.engine, ids, *probe.engine, ref_ids, 3, [&] {
    EXPECT_LE(h.engine->stats().host_state_bytes, state_bytes);
  });
  const EngineStats st = h.engine->stats();
  EXPECT_GT(st.restores_from_redis, 0);
  EXPECT_EQ(st.redis_writes, 5 + 15);
  EXPECT_EQ(st.redis_write_conflicts, 0);
  // Export of a state that lives only in Redis, imported into the roomy engine, continues
  // like the original.
  auto bytes = Export(*h.engine, ids[1]);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto imported = Import(*probe.engine, *bytes);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(RunTurn(*probe.engine, Tokens(imported->session_id, {9}, 4)).tokens,
            RunTurn(*h.engine, Tokens(ids[1], {9}, 4)).tokens);
  std::filesystem::remove_all(dir);
}

// Two engines on one Redis: a turn on the second continues the first's session, and the
// first, whose copy is now stale, catches up before its next turn.
TEST(EngineRedisTest, TwoEnginesShareSessions) {
  const auto dir = FreshDir("redis-share");
  std::filesystem::create_directories(dir);
  auto redis = testing::RedisServer::Start(dir);
  ASSERT_TRUE(redis.ok()) << redis.status();
  EngineOptions opts;
  opts.redis_url = (*redis)->url();
  Harness a = MakeEngine(opts);
  Harness b = MakeEngine(opts);
  Harness ref = MakeEngine();
  const std::string s = NewSession(*a.engine, "tenant").session_id;
  const std::string r = NewSession(*ref.engine, "tenant").session_id;
  Engine* order[] = {a.engine.get(), b.engine.get(), b.engine.get(), a.engine.get()};
  for (int k = 0; k < 4; ++k) {
    TurnRequest req = Tokens(s, {k + 5, 6}, 4);
    req.owner = "tenant";
    TurnRequest want = Tokens(r, {k + 5, 6}, 4);
    want.owner = "tenant";
    TurnResult got = RunTurn(*order[k], req);
    ASSERT_TRUE(got.status.ok()) << got.status;
    EXPECT_EQ(got.tokens, RunTurn(*ref.engine, want).tokens) << "turn " << k;
    EXPECT_EQ(got.version, static_cast<uint64_t>(k + 1));
  }
  // Another tenant cannot adopt it.
  EXPECT_TRUE(absl::IsNotFound(b.engine->GetSession("intruder", s).status()));
  std::filesystem::remove_all(dir);
}


}  // namespace
}  // namespace xlstmd::core
