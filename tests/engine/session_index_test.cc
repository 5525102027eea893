// SessionIndex on its own: a fake clock, no model, no scheduler.
#include "core/engine/session_index.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace xlstmd::core {
namespace {

SessionIndex::Limits Roomy() {
  SessionIndex::Limits l;
  l.max_sessions = 100;
  return l;
}

TEST(SessionIndexTest, CreateGetListAndOwnerIsolation) {
  FakeClock clock;
  SessionIndex index(&clock, Roomy());
  auto a = index.Create("alice");
  auto b = index.Create("bob");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->session_id.size(), 22u);
  EXPECT_EQ(a->created_unix_ms, clock.UnixMs());
  EXPECT_TRUE(index.Get("alice", a->session_id).ok());
  EXPECT_EQ(index.Get("bob", a->session_id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(index.List("alice", "", 10).size(), 1u);
  EXPECT_EQ(index.size(), 2);
}

TEST(SessionIndexTest, LimitsCountPendingCreates) {
  FakeClock clock;
  SessionIndex::Limits l = Roomy();
  l.max_sessions = 2;
  SessionIndex index(&clock, l);
  ASSERT_TRUE(index.Create("").ok());
  ASSERT_TRUE(index.ReserveCreate("").ok());
  EXPECT_EQ(index.Create("").status().code(), absl::StatusCode::kResourceExhausted);
  index.CancelCreate("");
  EXPECT_TRUE(index.Create("").ok());
}

// A tenant's session quota counts its sessions and its creates in flight, not others'; a
// deleted session frees its place.
TEST(SessionIndexTest, TenantSessionQuota) {
  FakeClock clock;
  SessionIndex::Limits l = Roomy();
  l.tenant_max_sessions = 2;
  SessionIndex index(&clock, l);
  const std::string a1 = index.Create("a")->session_id;
  ASSERT_TRUE(index.ReserveCreate("a").ok());
  const absl::Status over = index.Create("a").status();
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(over.message().find("tenant session quota"), std::string::npos) << over;
  EXPECT_TRUE(index.Create("b").ok());  // another tenant is unaffected
  EXPECT_TRUE(index.Create("b").ok());
  index.CancelCreate("a");
  ASSERT_TRUE(index.Create("a").ok());
  EXPECT_EQ(index.Create("a").status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(index.Erase(a1));
  EXPECT_TRUE(index.Create("a").ok());
}

TEST(SessionIndexTest, PerTenantQuotaOverride) {
  FakeClock clock;
  SessionIndex::Limits l = Roomy();
  l.tenant_max_sessions = 1;
  l.tenant_quotas["big"].max_sessions = 3;
  l.tenant_quotas["free"].max_sessions = 0;  // no quota
  SessionIndex index(&clock, l);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(index.Create("big").ok()) << i;
  EXPECT_EQ(index.Create("big").status().code(), absl::StatusCode::kResourceExhausted);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(index.Create("free").ok()) << i;
  EXPECT_TRUE(index.Create("other").ok());
  EXPECT_EQ(index.Create("other").status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(SessionIndexTest, ClaimCommitAndIdempotency) {
  FakeClock clock;
  SessionIndex index(&clock, Roomy());
  const std::string id = index.Create("")->session_id;
  auto claim = index.ClaimForTurn("", id, {"r1", 0u});
  ASSERT_TRUE(claim.ok());
  EXPECT_EQ(index.ClaimForTurn("", id, {}).status().code(), absl::StatusCode::kAborted);
  clock.Advance(std::chrono::milliseconds(5));
  auto done = index.Commit(id, {.tokens = 7, .adds_session_start = true, .is_message = true,
                                .request_id = "r1"});
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->version, 1u);
  EXPECT_EQ(done->history_tokens, 0u);
  const SessionInfo info = *index.Get("", id);
  EXPECT_FALSE(info.turn_running);
  EXPECT_EQ(info.token_count, 7u);
  EXPECT_EQ(info.updated_unix_ms, clock.UnixMs());
  EXPECT_EQ(index.ClaimForTurn("", id, {"r1", std::nullopt}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(index.ClaimForTurn("", id, {"r2", 0u}).status().code(), absl::StatusCode::kAborted);
  // The preview of a commit is exactly what the commit then writes.
  ASSERT_TRUE(index.ClaimForTurn("", id, {"r2", 1u}).ok());
  const CommitDelta next{.tokens = 3, .request_id = "r2"};
  auto preview = index.PreviewCommit(id, next);
  ASSERT_TRUE(index.Commit(id, next).has_value());
  EXPECT_EQ(preview->first, *index.Snapshot(id));
}

// A committed id remembers its body's fingerprint: the same body is a replay (ALREADY_EXISTS),
// another body INVALID_ARGUMENT; the fingerprint survives the snapshot (after a NUL in the
// entry), and an entry without one (an older snapshot) can only answer ALREADY_EXISTS.
TEST(SessionIndexTest, RequestFingerprintsTellReplaysFromReusedIds) {
  FakeClock clock;
  SessionIndex index(&clock, Roomy());
  const std::string id = index.Create("")->session_id;
  ASSERT_TRUE(index.ClaimForTurn("", id, {"r1", std::nullopt, 0xabc}).ok());
  ASSERT_TRUE(index.Commit(id, {.tokens = 2, .request_id = "r1", .request_fingerprint = 0xabc}));
  EXPECT_EQ(index.ClaimForTurn("", id, {"r1", std::nullopt, 0xabc}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(index.ClaimForTurn("", id, {"r1", std::nullopt, 0xdef}).status().code(),
            absl::StatusCode::kInvalidArgument);
  const SnapshotMeta snap = *index.Snapshot(id);
  ASSERT_EQ(snap.recent_requests.size(), 1u);
  EXPECT_EQ(snap.recent_requests[0].request_id, std::string("r1\0", 3) + "0000000000000abc");
  const SessionMeta back = SessionMeta::FromSnapshot(snap);
  EXPECT_EQ(back.FingerprintOf("r1"), 0xabcu);
  EXPECT_EQ(back.CommittedVersionOf("r1"), 1u);
  EXPECT_EQ(back.ToSnapshot(), snap);
  SnapshotMeta old = snap;
  old.recent_requests[0].request_id = "r1";
  const SessionMeta legacy = SessionMeta::FromSnapshot(old);
  EXPECT_EQ(legacy.CommittedVersionOf("r1"), 1u);
  EXPECT_FALSE(legacy.FingerprintOf("r1").has_value());
}

TEST(SessionIndexTest, SnapshotRoundTripAndRewindForgetsLaterRequests) {
  FakeClock clock;
  SessionIndex index(&clock, Roomy());
  const std::string id = index.Create("t")->session_id;
  const RewindPoint v0 = index.Peek(id)->ToRewindPoint();
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(index.ClaimForTurn("t", id, {}).ok());
    index.Commit(id, {.tokens = 2, .request_id = absl::StrCat("r", i)});
  }
  const SnapshotMeta snap = *index.Snapshot(id);
  EXPECT_EQ(SessionMeta::FromSnapshot(snap).ToSnapshot(), snap);
  EXPECT_EQ(snap.recent_requests.size(), 3u);
  auto info = index.Rewind(id, v0);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->version, 0u);
  EXPECT_TRUE(index.Snapshot(id)->recent_requests.empty());
  EXPECT_TRUE(index.ClaimForTurn("t", id, {"r2", std::nullopt}).ok());  // may run again
}

TEST(SessionIndexTest, IdleExpiryFollowsTheClockAndSkipsBusySessions) {
  FakeClock clock;
  SessionIndex index(&clock, Roomy());
  const std::string idle = index.Create("")->session_id;
  const std::string busy = index.Create("")->session_id;
  ASSERT_TRUE(index.ClaimForTurn("", busy, {}).ok());
  EXPECT_TRUE(index.ExpireIdle(std::chrono::seconds(10)).empty());
  clock.Advance(std::chrono::seconds(11));
  EXPECT_EQ(index.ExpireIdle(std::chrono::seconds(10)), std::vector<std::string>{idle});
  EXPECT_TRUE(index.Contains(busy));
}

TEST(SessionIndexTest, RedisGenerationsAreCountedAndAdoptionIsIdempotent) {
  FakeClock clock;
  SessionIndex index(&clock, Roomy());
  SnapshotMeta meta;
  meta.session_id = "AAAAAAAAAAAAAAAAAAAAAA";
  meta.owner = "t";
  meta.version = 4;
  meta.token_count = 40;
  bool changed = false;
  ASSERT_TRUE(index.Adopt("t", meta.session_id, meta, "g1", &changed).ok());
  EXPECT_TRUE(changed);
  EXPECT_EQ(index.redis_sessions(), 1);
  ASSERT_TRUE(index.Adopt("t", meta.session_id, meta, "g1", &changed).ok());
  EXPECT_FALSE(changed);
  EXPECT_EQ(index.Get("t", meta.session_id)->version, 4u);
  EXPECT_FALSE(index.ForgetRedisCopy(meta.session_id, "other", false));
  EXPECT_TRUE(index.ForgetRedisCopy(meta.session_id, "g1", false));
  EXPECT_EQ(index.redis_sessions(), 0);
  EXPECT_FALSE(index.Contains(meta.session_id));
}

}  // namespace
}  // namespace xlstmd::core
