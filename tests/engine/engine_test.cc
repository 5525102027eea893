// Engine semantics on the golden xLSTM-Large model: turn events, versions, rollback,
// idempotency, limits, eviction, determinism under batching, drain.
#include "core/engine/engine.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <condition_variable>
#include <mutex>
#include <chrono>
#include <thread>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "tests/testing/golden.h"
#include "tests/testing/redis_server.h"

namespace xlstmd::core {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

struct Harness {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<Engine> engine;
};

Harness MakeEngine(EngineOptions options = {}) {
  Harness h;
  const auto dir = testing::GoldenDir("xlstm-large-a1");
  kernels::BackendOptions bopts;
  bopts.threads = 2;
  auto backend = kernels::CreateBackend("cpu", bopts);
  EXPECT_TRUE(backend.ok()) << backend.status();
  h.backend = std::move(*backend);
  auto model = XlstmModel::Load(dir, h.backend.get());
  EXPECT_TRUE(model.ok()) << model.status();
  auto tok = LoadModelTokenizer(dir);
  EXPECT_TRUE(tok.ok()) << tok.status();
  auto tmpl = ChatTemplate::ForModel(dir, **tok);
  EXPECT_TRUE(tmpl.ok()) << tmpl.status();
  auto engine = Engine::Create(std::move(*model), std::move(*tok), std::move(*tmpl), options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  h.engine = std::move(*engine);
  return h;
}

SessionInfo NewSession(Engine& e, const std::string& owner = "", const std::string& system = "") {
  absl::Notification done;
  absl::StatusOr<SessionInfo> result;
  e.CreateSession(owner, system, [&](absl::StatusOr<SessionInfo> r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_TRUE(result.ok()) << result.status();
  return result.value_or(SessionInfo{});
}

// Runs a stream to its end, collecting events; optionally cancels after the first delta.
struct TurnResult {
  absl::Status status;
  std::vector<int32_t> input_ids;
  std::vector<int32_t> tokens;
  std::string text;
  uint64_t version = 0;
  FinishReason finish = FinishReason::kNone;
};

class Collector {
 public:
  std::function<void()> Wakeup() {
    return [this] {
      std::lock_guard<std::mutex> lock(mu_);
      ++pokes_;
      cv_.notify_all();
    };
  }
  TurnResult Drain(TurnStream& stream, bool cancel_after_first_delta = false) {
    TurnResult r;
    while (true) {
      TurnEvent ev;
      if (stream.TryPop(&ev)) {
        switch (ev.kind) {
          case TurnEvent::Kind::kStarted:
            r.input_ids = ev.input_ids;
            break;
          case TurnEvent::Kind::kDelta:
            r.tokens.insert(r.tokens.end(), ev.token_ids.begin(), ev.token_ids.end());
            r.text += ev.text;
            if (cancel_after_first_delta) stream.Cancel(absl::CancelledError("test cancel"));
            break;
          case TurnEvent::Kind::kFinished:
            r.version = ev.session_version;
            r.finish = ev.finish_reason;
            break;
        }
        continue;
      }
      if (stream.Done()) break;
      std::unique_lock<std::mutex> lock(mu_);
      const int64_t seen = pokes_;
      cv_.wait_for(lock, std::chrono::milliseconds(50), [&] { return pokes_ != seen; });
    }
    r.status = stream.final_status();
    return r;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t pokes_ = 0;
};

TurnRequest Tokens(const std::string& id, std::vector<int32_t> ids, int32_t max_tokens = 6) {
  TurnRequest r;
  r.session_id = id;
  r.tokens = std::move(ids);
  r.sampling.max_tokens = max_tokens;
  return r;
}

TurnResult RunTurn(Engine& e, TurnRequest req, bool cancel = false) {
  Collector c;
  auto stream = e.StartTurn(std::move(req), c.Wakeup());
  if (!stream.ok()) {
    TurnResult r;
    r.status = stream.status();
    return r;
  }
  return c.Drain(**stream, cancel);
}

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
  EXPECT_EQ(code(Tokens(s.session_id, std::vector<int32_t>(17, 1))),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code(Tokens(s.session_id, {1}, 101)), absl::StatusCode::kResourceExhausted);
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
  keyed.request_id = "req-1";
  keyed.expected_version = 0;
  EXPECT_EQ(code(keyed), absl::StatusCode::kOk);
  TurnResult again = RunTurn(*h.engine, keyed);
  EXPECT_EQ(again.status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(again.status.message()), HasSubstr("version 1"));
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
  EngineOptions opts;
  opts.max_turn_ms = 100;
  opts.stream_buffer_events = 2;
  Harness h = MakeEngine(opts);
  SessionInfo s = NewSession(*h.engine);
  Collector c;
  // Nobody reads: the turn pauses on its full stream until the limit rolls it back.
  auto stalled = h.engine->StartTurn(Tokens(s.session_id, {1}, 50), c.Wakeup());
  ASSERT_TRUE(stalled.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // The stalled turn wakes the engine only via the room callback, so nudge it with work.
  SessionInfo other = NewSession(*h.engine);
  EXPECT_TRUE(RunTurn(*h.engine, Tokens(other.session_id, {2}, 2)).status.ok());
  EXPECT_EQ(c.Drain(**stalled).status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(h.engine->GetSession("", s.session_id)->version, 0u);
}

TEST(EngineTest, IdleSessionsExpire) {
  EngineOptions opts;
  opts.idle_ttl_ms = 200;
  Harness h = MakeEngine(opts);
  SessionInfo s = NewSession(*h.engine);
  ASSERT_TRUE(RunTurn(*h.engine, Tokens(s.session_id, {1})).status.ok());
  for (int i = 0; i < 100 && h.engine->GetSession("", s.session_id).ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(h.engine->GetSession("", s.session_id).status().code(), absl::StatusCode::kNotFound);
}

// ---- state tiers ----

std::filesystem::path FreshDir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   absl::StrCat("xlstmd_engine_", name, "_", ::getpid(), "_", std::random_device{}());
  std::filesystem::remove_all(dir);
  return dir;
}

absl::StatusOr<SessionInfo> Fork(Engine& e, const std::string& id) {
  absl::Notification done;
  absl::StatusOr<SessionInfo> out;
  e.ForkSession("", id, [&](absl::StatusOr<SessionInfo> r) {
    out = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

absl::StatusOr<std::string> Export(Engine& e, const std::string& id) {
  absl::Notification done;
  absl::StatusOr<std::string> out;
  e.ExportSession("", id, [&](absl::StatusOr<std::string> r) {
    out = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

absl::StatusOr<SessionInfo> Import(Engine& e, std::string bytes) {
  absl::Notification done;
  absl::StatusOr<SessionInfo> out;
  e.ImportSession("", std::move(bytes), [&](absl::StatusOr<SessionInfo> r) {
    out = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

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
    t.request_id = "first";
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
  again.request_id = "first";
  EXPECT_EQ(RunTurn(*h.engine, again).status.code(), absl::StatusCode::kAlreadyExists);
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
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 5; ++i) {
      TurnResult a = RunTurn(*h.engine, Tokens(ids[i], {i + 3, round + 1}, 4));
      TurnResult b = RunTurn(*probe.engine, Tokens(ref_ids[i], {i + 3, round + 1}, 4));
      ASSERT_TRUE(a.status.ok()) << a.status;
      ASSERT_TRUE(b.status.ok()) << b.status;
      EXPECT_EQ(a.tokens, b.tokens) << "round " << round << " session " << i;
      EXPECT_LE(h.engine->stats().host_state_bytes, state_bytes);
    }
  }
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

absl::StatusOr<SessionInfo> Rewind(Engine& e, const std::string& id, uint64_t version) {
  absl::Notification done;
  absl::StatusOr<SessionInfo> out;
  e.RewindSession("", id, version, [&](absl::StatusOr<SessionInfo> r) {
    out = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
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
  second.request_id = "two";
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

}  // namespace

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
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 5; ++i) {
      TurnResult a = RunTurn(*h.engine, Tokens(ids[i], {i + 3, round + 1}, 4));
      TurnResult b = RunTurn(*probe.engine, Tokens(ref_ids[i], {i + 3, round + 1}, 4));
      ASSERT_TRUE(a.status.ok()) << a.status;
      ASSERT_TRUE(b.status.ok()) << b.status;
      EXPECT_EQ(a.tokens, b.tokens) << "round " << round << " session " << i;
      EXPECT_LE(h.engine->stats().host_state_bytes, state_bytes);
    }
  }
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

}  // namespace xlstmd::core
