// Engine semantics on the golden xLSTM-Large model: turn events, versions, rollback,
// idempotency, limits, eviction, determinism under batching, drain.
#include "core/engine/engine.h"

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "core/base/retry.h"
#include "gtest/gtest.h"
#include "tests/engine/engine_harness.h"

namespace xlstmd::core {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using namespace engine_testing;  // NOLINT: the fixtures are the test vocabulary

TEST(EngineTest, TurnStreamsAndCommitsVersions) {
  Harness h = MakeEngine();
  SessionInfo s = NewSession(*h.engine);
  EXPECT_EQ(s.version, 0u);
  EXPECT_EQ(s.session_id.size(), 22u);
  TurnResult a = RunTurn(*h.engine, Tokens(s.session_id, {5, 17, 3}));
  ASSERT_TRUE(a.status.ok()) << a.status;
  EXPECT_THAT(a.input_ids, ElementsAreArray({5, 17, 3}));
  EXPECT_EQ(a.tokens.size(), 6u);
  EXPECT_EQ(a.version, 1u);
  EXPECT_EQ(a.finish, FinishReason::kMaxTokens);
  TurnResult b = RunTurn(*h.engine, Tokens(s.session_id, {9}));
  ASSERT_TRUE(b.status.ok()) << b.status;
  EXPECT_EQ(b.version, 2u);
  auto info = h.engine->GetSession("", s.session_id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version, 2u);
  EXPECT_EQ(info->token_count, 3u + 6u + 1u + 6u);
  EXPECT_FALSE(info->turn_running);
}

// The committed state after a turn equals the replay of everything reported: a session fed
// the same ids as raw tokens in one turn continues identically.
TEST(EngineTest, ResumeMatchesReplayOfReportedTokens) {
  Harness h = MakeEngine();
  SessionInfo s = NewSession(*h.engine);
  TurnResult a = RunTurn(*h.engine, Tokens(s.session_id, {1, 2, 3}, 5));
  TurnResult b = RunTurn(*h.engine, Tokens(s.session_id, {4}, 5));
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  std::vector<int32_t> history = {1, 2, 3};
  history.insert(history.end(), a.tokens.begin(), a.tokens.end());
  history.push_back(4);
  SessionInfo r = NewSession(*h.engine);
  TurnResult replay = RunTurn(*h.engine, Tokens(r.session_id, history, 5));
  ASSERT_TRUE(replay.status.ok());
  EXPECT_EQ(replay.tokens, b.tokens);
}

TEST(EngineTest, ConcurrentSessionsProduceWhatTheyProduceAlone) {
  EngineOptions opts;
  opts.prefill_piece = 4;
  opts.prefill_token_budget = 8;
  Harness h = MakeEngine(opts);
  constexpr int kN = 12;
  auto request = [](const std::string& id, int i) {
    TurnRequest r = Tokens(id, {i + 1, 2 * i + 3, 7, i % 5, 11 + i, 3, 1}, 10);
    if (i % 2 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_k = 40;
      r.sampling.seed = 1000 + static_cast<uint64_t>(i);
    }
    return r;
  };
  std::vector<std::vector<int32_t>> alone(kN);
  for (int i = 0; i < kN; ++i) {
    SessionInfo s = NewSession(*h.engine);
    TurnResult r = RunTurn(*h.engine, request(s.session_id, i));
    ASSERT_TRUE(r.status.ok()) << r.status;
    alone[i] = r.tokens;
  }
  std::vector<std::thread> threads;
  std::vector<std::vector<int32_t>> together(kN);
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back([&, i] {
      SessionInfo s = NewSession(*h.engine);
      TurnResult r = RunTurn(*h.engine, request(s.session_id, i));
      EXPECT_TRUE(r.status.ok()) << r.status;
      together[i] = r.tokens;
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kN; ++i) EXPECT_EQ(together[i], alone[i]) << "session " << i;
}

TEST(EngineTest, CancelRollsBackToThePreviousVersion) {
  Harness h = MakeEngine();
  SessionInfo s = NewSession(*h.engine);
  ASSERT_TRUE(RunTurn(*h.engine, Tokens(s.session_id, {3, 4})).status.ok());
  SessionInfo twin = NewSession(*h.engine);
  ASSERT_TRUE(RunTurn(*h.engine, Tokens(twin.session_id, {3, 4})).status.ok());

  TurnResult cancelled = RunTurn(*h.engine, Tokens(s.session_id, {8, 8, 8}, 1000), true);
  EXPECT_EQ(cancelled.status.code(), absl::StatusCode::kCancelled);
  auto info = h.engine->GetSession("", s.session_id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version, 1u);
  EXPECT_FALSE(info->turn_running);

  TurnResult after = RunTurn(*h.engine, Tokens(s.session_id, {5}));
  TurnResult expect = RunTurn(*h.engine, Tokens(twin.session_id, {5}));
  ASSERT_TRUE(after.status.ok() && expect.status.ok());
  EXPECT_EQ(after.version, 2u);
  EXPECT_EQ(after.tokens, expect.tokens);
}

TEST(EngineTest, ForkCopiesCommittedState) {
  Harness h = MakeEngine();
  SessionInfo s = NewSession(*h.engine);
  ASSERT_TRUE(RunTurn(*h.engine, Tokens(s.session_id, {3, 4, 5})).status.ok());
  absl::Notification done;
  absl::StatusOr<SessionInfo> fork;
  h.engine->ForkSession("", s.session_id, [&](absl::StatusOr<SessionInfo> r) {
    fork = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_NE(fork->session_id, s.session_id);
  EXPECT_EQ(fork->version, 1u);
  TurnResult a = RunTurn(*h.engine, Tokens(s.session_id, {6}));
  TurnResult b = RunTurn(*h.engine, Tokens(fork->session_id, {6}));
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.tokens, b.tokens);
}

TEST(EngineTest, EvictionToHostKeepsResults) {
  EngineOptions small;
  small.resident_slots = 2;
  small.max_batch = 2;
  Harness h = MakeEngine(small);
  Harness ref = MakeEngine();
  std::vector<std::string> ids, ref_ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(NewSession(*h.engine).session_id);
    ref_ids.push_back(NewSession(*ref.engine).session_id);
  }
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 5; ++i) {
      TurnResult a = RunTurn(*h.engine, Tokens(ids[i], {i + 1, round + 2}));
      TurnResult b = RunTurn(*ref.engine, Tokens(ref_ids[i], {i + 1, round + 2}));
      ASSERT_TRUE(a.status.ok() && b.status.ok()) << a.status << b.status;
      EXPECT_EQ(a.tokens, b.tokens);
    }
  }
  EXPECT_LE(h.engine->stats().resident_sessions, 2);
}

TEST(EngineTest, ErrorsHaveTheRightCodes) {
  EngineOptions opts;
  opts.max_prompt_tokens = 16;
  opts.sampling.max_tokens = 100;
  opts.max_sessions = 3;
  Harness h = MakeEngine(opts);
  SessionInfo s = NewSession(*h.engine);
  auto code = [&](TurnRequest r) { return RunTurn(*h.engine, std::move(r)).status.code(); };
  EXPECT_EQ(code(Tokens("nope", {1})), absl::StatusCode::kNotFound);
  TurnRequest foreign = Tokens(s.session_id, {1});
  foreign.owner = "other";
  EXPECT_EQ(code(foreign), absl::StatusCode::kNotFound);
  EXPECT_EQ(code(Tokens(s.session_id, {})), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Tokens(s.session_id, {300})), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Tokens(s.session_id, {-1})), absl::StatusCode::kInvalidArgument);
  // Over a limit is INVALID_ARGUMENT (the same request never fits), naming the field.
  const absl::Status long_prompt =
      RunTurn(*h.engine, Tokens(s.session_id, std::vector<int32_t>(17, 1))).status;
  EXPECT_EQ(long_prompt.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(base::ErrorField(long_prompt), "tokens.ids");
  EXPECT_FALSE(base::IsCapacityError(long_prompt));
  const absl::Status many = RunTurn(*h.engine, Tokens(s.session_id, {1}, 101)).status;
  EXPECT_EQ(many.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(base::ErrorField(many), "sampling.max_tokens");
  TurnRequest blank;
  blank.session_id = s.session_id;
  blank.message = " \t\n ";
  const absl::Status whitespace = RunTurn(*h.engine, std::move(blank)).status;
  EXPECT_EQ(whitespace.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(base::ErrorField(whitespace), "message");
  TurnRequest bad_temp = Tokens(s.session_id, {1});
  bad_temp.sampling.temperature = -1;
  EXPECT_EQ(code(bad_temp), absl::StatusCode::kInvalidArgument);
  TurnRequest bad_utf8;
  bad_utf8.session_id = s.session_id;
  bad_utf8.message = std::string("a\xff", 2);
  EXPECT_EQ(code(bad_utf8), absl::StatusCode::kInvalidArgument);
  TurnRequest wrong_version = Tokens(s.session_id, {1});
  wrong_version.expected_version = 4;
  EXPECT_EQ(code(wrong_version), absl::StatusCode::kAborted);

  TurnRequest keyed = Tokens(s.session_id, {1});
  keyed.request_id = "0b9d8a6e-3c1f-4f5a-9e2d-7c4b1a2f3e01";
  keyed.expected_version = 0;
  EXPECT_EQ(code(keyed), absl::StatusCode::kOk);
  TurnResult again = RunTurn(*h.engine, keyed);
  EXPECT_EQ(again.status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(again.status.message()), HasSubstr("version 1"));
  TurnRequest changed = keyed;
  changed.sampling.max_tokens = 2;
  const absl::Status reused = RunTurn(*h.engine, changed).status;
  EXPECT_EQ(reused.code(), absl::StatusCode::kInvalidArgument) << reused;
  EXPECT_EQ(base::ErrorField(reused), "request_id");
  TurnRequest not_uuid = Tokens(s.session_id, {1});
  not_uuid.request_id = "req-1";
  EXPECT_EQ(code(not_uuid), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.engine->GetSession("", s.session_id)->version, 1u);

  // A second turn while one runs.
  Collector c;
  auto running = h.engine->StartTurn(Tokens(s.session_id, {2}, 100), c.Wakeup());
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(code(Tokens(s.session_id, {3})), absl::StatusCode::kAborted);
  absl::Notification deleted;
  absl::Status delete_status;
  h.engine->DeleteSession("", s.session_id, [&](absl::Status st) {
    delete_status = st;
    deleted.Notify();
  });
  deleted.WaitForNotification();
  EXPECT_EQ(delete_status.code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(c.Drain(**running).status.ok());

  // Session limit (one exists; max 3).
  NewSession(*h.engine);
  NewSession(*h.engine);
  absl::Notification created;
  absl::StatusOr<SessionInfo> fourth;
  h.engine->CreateSession("", "", [&](absl::StatusOr<SessionInfo> r) {
    fourth = std::move(r);
    created.Notify();
  });
  created.WaitForNotification();
  EXPECT_EQ(fourth.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(EngineTest, QueueDepthIsEnforced) {
  EngineOptions opts;
  opts.max_batch = 1;
  opts.queue_depth = 1;
  Harness h = MakeEngine(opts);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(NewSession(*h.engine).session_id);
  Collector c0, c1;
  auto first = h.engine->StartTurn(Tokens(ids[0], {1}, 2000), c0.Wakeup());
  ASSERT_TRUE(first.ok());
  // Let the engine admit the first so the second waits in the queue.
  while (h.engine->stats().running_turns == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto second = h.engine->StartTurn(Tokens(ids[1], {1}, 2), c1.Wakeup());
  ASSERT_TRUE(second.ok());
  Collector c2;
  auto third = h.engine->StartTurn(Tokens(ids[2], {1}, 2), c2.Wakeup());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  (*first)->Cancel(absl::CancelledError("done"));
  EXPECT_EQ(c0.Drain(**first).status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(c1.Drain(**second).status.ok());
  // The queue slot and the session were released.
  EXPECT_TRUE(RunTurn(*h.engine, Tokens(ids[2], {1}, 2)).status.ok());
}

TEST(EngineTest, CancelWhileQueuedReleasesTheSessionAtOnce) {
  EngineOptions opts;
  opts.max_batch = 1;
  Harness h = MakeEngine(opts);
  SessionInfo a = NewSession(*h.engine), b = NewSession(*h.engine);
  Collector ca, cb;
  auto running = h.engine->StartTurn(Tokens(a.session_id, {1}, 5000), ca.Wakeup());
  ASSERT_TRUE(running.ok());
  while (h.engine->stats().running_turns == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto queued = h.engine->StartTurn(Tokens(b.session_id, {1}, 2), cb.Wakeup());
  ASSERT_TRUE(queued.ok());
  (*queued)->Cancel(absl::CancelledError("client left"));
  EXPECT_EQ(cb.Drain(**queued).status.code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(h.engine->GetSession("", b.session_id)->turn_running);
  (*running)->Cancel(absl::CancelledError("done"));
  ca.Drain(**running);
}

// A reader that never pops pauses only its own turn.
TEST(EngineTest, SlowReaderPausesOnlyItsOwnTurn) {
  EngineOptions opts;
  opts.stream_buffer_events = 2;
  Harness h = MakeEngine(opts);
  SessionInfo slow = NewSession(*h.engine), fast = NewSession(*h.engine);
  Collector c;
  auto stalled = h.engine->StartTurn(Tokens(slow.session_id, {1}, 50), c.Wakeup());
  ASSERT_TRUE(stalled.ok());
  TurnResult r = RunTurn(*h.engine, Tokens(fast.session_id, {2}, 30));
  EXPECT_TRUE(r.status.ok());
  EXPECT_EQ(r.tokens.size(), 30u);
  EXPECT_FALSE((*stalled)->Done());
  TurnResult s = c.Drain(**stalled);
  EXPECT_TRUE(s.status.ok());
  EXPECT_EQ(s.tokens.size(), 50u);
}

TEST(EngineTest, MessageTurnsUseTheTemplateAndSystemPrompt) {
  Harness h = MakeEngine();
  SessionInfo plain = NewSession(*h.engine);
  TurnRequest m;
  m.session_id = plain.session_id;
  m.message = "hi";
  m.sampling.max_tokens = 3;
  TurnResult first = RunTurn(*h.engine, m);
  ASSERT_TRUE(first.status.ok()) << first.status;
  const auto& tmpl = h.engine->chat_template();
  ASSERT_FALSE(tmpl.bos_token_ids.empty());
  EXPECT_EQ(first.input_ids.front(), tmpl.bos_token_ids.front());  // BOS once per session
  TurnResult second = RunTurn(*h.engine, m);
  ASSERT_TRUE(second.status.ok());
  EXPECT_NE(second.input_ids.front(), tmpl.bos_token_ids.front());

  SessionInfo sys = NewSession(*h.engine, "", "be brief");
  EXPECT_EQ(sys.version, 0u);
  EXPECT_GT(sys.token_count, 8u);
  TurnResult t = RunTurn(*h.engine, [&] {
    TurnRequest r = m;
    r.session_id = sys.session_id;
    return r;
  }());
  ASSERT_TRUE(t.status.ok());
  EXPECT_NE(t.input_ids.front(), tmpl.bos_token_ids.front());  // BOS went into version 0
}

TEST(EngineTest, DrainRefusesNewWorkAndFinishesRunningTurns) {
  Harness h = MakeEngine();
  SessionInfo s = NewSession(*h.engine);
  Collector c;
  auto running = h.engine->StartTurn(Tokens(s.session_id, {1}, 20), c.Wakeup());
  ASSERT_TRUE(running.ok());
  h.engine->BeginDrain();
  EXPECT_EQ(RunTurn(*h.engine, Tokens(s.session_id, {1})).status.code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(h.engine->WaitIdle(30000));
  EXPECT_TRUE(c.Drain(**running).status.ok());
  EXPECT_EQ(RunTurn(*h.engine, Tokens(s.session_id, {1})).status.code(),
            absl::StatusCode::kUnavailable);
}

TEST(EngineTest, CancelAllRollsBackWithTheReason) {
  Harness h = MakeEngine();
  SessionInfo s = NewSession(*h.engine);
  Collector c;
  auto running = h.engine->StartTurn(Tokens(s.session_id, {1}, 5000), c.Wakeup());
  ASSERT_TRUE(running.ok());
  h.engine->BeginDrain();
  h.engine->CancelAll(absl::UnavailableError("shutting down"));
  EXPECT_EQ(c.Drain(**running).status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(h.engine->GetSession("", s.session_id)->version, 0u);
  EXPECT_TRUE(h.engine->WaitIdle(1000));
}

TEST(EngineTest, TurnsPastTheServerLimitAreRolledBack) {
  FakeClock clock;
  EngineOptions opts;
  opts.max_turn_ms = 100;
  opts.stream_buffer_events = 2;
  opts.clock = &clock;
  Harness h = MakeEngine(opts);
  SessionInfo s = NewSession(*h.engine);
  Collector c;
  // Nobody reads: the turn pauses on its full stream until the limit rolls it back. Moving
  // the clock wakes the engine, which then sees the turn is over its limit.
  auto stalled = h.engine->StartTurn(Tokens(s.session_id, {1}, 50), c.Wakeup());
  ASSERT_TRUE(stalled.ok());
  clock.Advance(std::chrono::milliseconds(300));
  EXPECT_EQ(c.Drain(**stalled).status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(h.engine->GetSession("", s.session_id)->version, 0u);
}

TEST(EngineTest, IdleSessionsExpire) {
  FakeClock clock;
  EngineOptions opts;
  opts.idle_ttl_ms = 200;
  opts.clock = &clock;
  Harness h = MakeEngine(opts);
  SessionInfo s = NewSession(*h.engine);
  ASSERT_TRUE(RunTurn(*h.engine, Tokens(s.session_id, {1})).status.ok());
  clock.Advance(std::chrono::milliseconds(100));
  ASSERT_TRUE(h.engine->WaitIdle(1000));
  EXPECT_TRUE(h.engine->GetSession("", s.session_id).ok());  // not idle long enough yet
  clock.Advance(std::chrono::milliseconds(1500));
  // The sweep runs on the engine thread after the jump: poll for it (the clock, not this
  // wait, is what makes the session expire).
  for (int i = 0; i < 5000 && h.engine->GetSession("", s.session_id).ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(h.engine->GetSession("", s.session_id).status().code(), absl::StatusCode::kNotFound);
}

// ---- state tiers ----


}  // namespace
}  // namespace xlstmd::core
