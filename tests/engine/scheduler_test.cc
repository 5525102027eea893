// The scheduler over fakes: a model that counts tokens, slots in vectors, tiers that keep every
// state resident (FakeTiers), and a fake clock. Admission, streaming, commit (plain and
// written-first), continuation, rollback and the turn time limit, without sleeping.
#include "core/engine/scheduler.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "tests/engine/parts_testutil.h"

namespace xlstmd::core {
namespace {

using engine_testing::FakeModel;
using engine_testing::FakeSlots;
using engine_testing::FakeTiers;
using engine_testing::TinyFloats;

constexpr int32_t kVocab = 257;

struct Rig {
  explicit Rig(Scheduler::Options o = {}, int32_t slots = 4)
      : fake(slots, TinyFloats()),
        model(&fake, kVocab),
        tiers(&fake, slots),
        index(&clock, SessionIndex::Limits{}),
        tokenizer(*ByteTokenizer::Create({"<|endoftext|>"})) {
    EXPECT_NE(tokenizer, nullptr);
    o.slots = slots;
    o.max_batch = std::min(o.max_batch, slots);
    scheduler = std::make_unique<Scheduler>(o, &model, &index, tokenizer.get(), &chat, &clock);
    scheduler->Start(&tiers);
  }
  ~Rig() { scheduler->Stop(); }

  // A turn of raw tokens on `id`, claimed and queued as the facade would.
  std::shared_ptr<TurnStream> Start(const std::string& id, std::vector<int32_t> input,
                                    int32_t max_tokens, int32_t buffer = 64,
                                    const std::string& owner = "") {
    auto meta = index.ClaimForTurn(owner, id, {});
    EXPECT_TRUE(meta.ok()) << meta.status();
    auto turn = std::make_unique<Turn>();
    turn->session_id = id;
    turn->owner = owner;
    turn->input = std::move(input);
    turn->base_version = meta->info.version;
    turn->sampling.temperature = 0;
    turn->max_tokens = max_tokens;
    turn->seed = 1;
    turn->enqueued = clock.Now();
    auto stream = std::make_shared<TurnStream>(buffer, [this] {
      absl::MutexLock lock(&mu);
      ++wakes;
    });
    std::shared_ptr<Signal> signal = scheduler->signal();
    stream->set_room_callback([signal] { signal->Notify(); });
    stream->set_cancel_callback([signal] { signal->Notify(); });
    turn->stream = stream;
    EXPECT_TRUE(scheduler->Enqueue(turn).ok());
    return stream;
  }

  // Pops until the stream is done; returns the generated ids (and the final status).
  std::vector<int32_t> Drain(TurnStream& stream, absl::Status* status) {
    std::vector<int32_t> ids;
    while (true) {
      TurnEvent ev;
      if (stream.TryPop(&ev)) {
        ids.insert(ids.end(), ev.token_ids.begin(), ev.token_ids.end());
        continue;
      }
      if (stream.Done()) break;
      absl::MutexLock lock(&mu);
      seen = wakes;
      mu.AwaitWithTimeout(absl::Condition(this, &Rig::Woken), absl::Milliseconds(50));
    }
    *status = stream.final_status();
    return ids;
  }

  FakeClock clock;
  FakeSlots fake;
  FakeModel model;
  FakeTiers tiers;
  SessionIndex index;
  std::unique_ptr<ByteTokenizer> tokenizer;
  ChatTemplate chat;
  std::unique_ptr<Scheduler> scheduler;
  bool Woken() const ABSL_SHARED_LOCKS_REQUIRED(mu) { return wakes != seen; }

  absl::Mutex mu;
  int64_t wakes ABSL_GUARDED_BY(mu) = 0;
  int64_t seen ABSL_GUARDED_BY(mu) = 0;
};

TEST(SchedulerTest, StreamsCommitsAndContinuesFromTheCommittedState) {
  Rig r;
  const std::string id = r.index.Create("")->session_id;
  absl::Status status;
  auto first = r.Start(id, {10, 11, 12}, 4);
  EXPECT_EQ(r.Drain(*first, &status), (std::vector<int32_t>{13, 14, 15, 16}));
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(r.index.Get("", id)->version, 1u);
  EXPECT_EQ(r.index.Get("", id)->token_count, 7u);
  // The committed slot saw 3 prompt tokens + 4 generated ones (the last is fed before commit).
  EXPECT_EQ(r.fake.at(r.tiers.committed.at(id))[0], 7.0f);
  auto second = r.Start(id, {100}, 2);
  EXPECT_EQ(r.Drain(*second, &status), (std::vector<int32_t>{101, 102}));
  EXPECT_EQ(r.fake.at(r.tiers.committed.at(id))[0], 10.0f);
  EXPECT_EQ(r.scheduler->generated_tokens(), 6);
}

TEST(SchedulerTest, TurnsPastTheLimitRollBackWhenTheClockMoves) {
  Scheduler::Options o;
  o.max_turn_ms = 1000;
  Rig r(o);
  const std::string id = r.index.Create("")->session_id;
  // Nobody reads and the buffer holds one event: the turn pauses on its full stream.
  auto stalled = r.Start(id, {1}, 50, /*buffer=*/1);
  r.clock.Advance(std::chrono::milliseconds(1500));  // wakes the scheduler; no sleep needed
  absl::Status status;
  r.Drain(*stalled, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_EQ(r.index.Get("", id)->version, 0u);
  EXPECT_FALSE(r.index.Get("", id)->turn_running);
}

TEST(SchedulerTest, QueueDepthAndDrainAreEnforced) {
  Scheduler::Options o;
  o.queue_depth = 1;
  Rig r(o);
  r.scheduler->BeginDrain();
  EXPECT_EQ(r.scheduler->CheckAdmits().code(), absl::StatusCode::kUnavailable);
  auto turn = std::make_unique<Turn>();
  EXPECT_EQ(r.scheduler->Enqueue(turn).code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(turn, nullptr);  // a refused turn is handed back
  EXPECT_TRUE(r.scheduler->WaitIdle(absl::Seconds(5)));
}

TEST(SchedulerTest, CancelAllRollsBackRunningTurns) {
  Rig r;
  const std::string id = r.index.Create("")->session_id;
  auto stalled = r.Start(id, {1}, 50, /*buffer=*/1);
  r.scheduler->CancelAll(absl::UnavailableError("stop"));
  absl::Status status;
  r.Drain(*stalled, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(r.index.Get("", id)->turn_running);
}

// Sync durability: the final state is written first, with the metadata the commit will have;
// a failed write rolls the turn back and the session stays at its version.
TEST(SchedulerTest, WrittenFirstCommitsAndRollsBackOnAFailedWrite) {
  Rig r;
  r.tiers.sync = true;
  const std::string id = r.index.Create("")->session_id;
  absl::Status status;
  auto ok = r.Start(id, {5}, 2);
  r.Drain(*ok, &status);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(r.tiers.persisted.size(), 1u);
  EXPECT_EQ(r.tiers.persisted[0].version, 1u);
  EXPECT_EQ(r.tiers.persisted[0].token_count, 3u);
  EXPECT_EQ(r.index.Get("", id)->version, 1u);
  r.tiers.persist_status = absl::InternalError("disk full");
  auto failed = r.Start(id, {5}, 2);
  r.Drain(*failed, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_EQ(r.index.Get("", id)->version, 1u);
  EXPECT_FALSE(r.index.Get("", id)->turn_running);
}

// A cancelled turn frees its slot and leaves the committed state as it was.
TEST(SchedulerTest, CancelRollsBackAndKeepsTheCommittedState) {
  Rig r;
  const std::string id = r.index.Create("")->session_id;
  absl::Status status;
  auto first = r.Start(id, {1}, 1);
  r.Drain(*first, &status);
  ASSERT_TRUE(status.ok());
  const float committed = r.fake.at(r.tiers.committed.at(id))[0];
  auto cancelled = r.Start(id, {1}, 50, /*buffer=*/1);
  cancelled->Cancel(absl::CancelledError("client left"));
  r.Drain(*cancelled, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(r.index.Get("", id)->version, 1u);
  EXPECT_EQ(r.fake.at(r.tiers.committed.at(id))[0], committed);
}

// A long prompt is prefilled in pieces of at most prefill_piece tokens, and a turn that is
// decoding keeps getting a step between them: a long prompt delays others' decoding by at
// most one piece per step.
TEST(SchedulerTest, ALongPromptDelaysOthersDecodingByAtMostOnePiece) {
  Scheduler::Options o;
  o.prefill_piece = 16;
  o.prefill_token_budget = 16;
  Rig r(o);
  const std::string a = r.index.Create("")->session_id;
  const std::string b = r.index.Create("")->session_id;
  // A decodes for as long as the test needs, into a buffer it cannot fill meanwhile (a full
  // stream would pause it, legitimately, and then there is nothing to interleave).
  auto decoding = r.Start(a, {1}, 1 << 30, /*buffer=*/1 << 22);
  while (r.model.steps < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto prompt = r.Start(b, std::vector<int32_t>(200, 7), 2, /*buffer=*/64);
  absl::Status sa, sb;
  r.Drain(*prompt, &sb);
  decoding->Cancel(absl::CancelledError("the test is done"));
  r.Drain(*decoding, &sa);
  ASSERT_TRUE(sb.ok()) << sb;
  EXPECT_EQ(sa.code(), absl::StatusCode::kCancelled) << sa;
  // From B's first piece to its last, count the prefill tokens between two decode steps.
  const std::vector<FakeModel::Call> calls = r.model.calls();
  int pieces = 0, since_step = 0, worst = 0;
  for (const FakeModel::Call& c : calls) {
    if (pieces == 200 / 16 + 1) break;  // B's prompt is in
    if (!c.prefill) {
      since_step = 0;
      continue;
    }
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      if (c.first_ids[i] != 7) continue;
      ++pieces;
      EXPECT_LE(c.tokens[i], 16) << "a piece larger than prefill_piece";
      since_step += c.tokens[i];
    }
    worst = std::max(worst, since_step);
  }
  EXPECT_EQ(pieces, 200 / 16 + 1);
  EXPECT_LE(worst, 16) << "prefill tokens between two decode steps";
}

// With room for one running turn, queued turns are admitted in the order they were enqueued.
TEST(SchedulerTest, QueuedTurnsAreAdmittedFirstInFirstOut) {
  Scheduler::Options o;
  o.max_batch = 1;
  Rig r(o, /*slots=*/4);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(r.index.Create("")->session_id);
  std::vector<std::shared_ptr<TurnStream>> streams;
  for (int i = 0; i < 4; ++i) streams.push_back(r.Start(ids[i], {100 + i}, 3));
  for (auto& s : streams) {
    absl::Status st;
    r.Drain(*s, &st);
    ASSERT_TRUE(st.ok()) << st;
  }
  std::vector<int32_t> order;
  for (const FakeModel::Call& c : r.model.calls()) {
    if (c.prefill) order.insert(order.end(), c.first_ids.begin(), c.first_ids.end());
  }
  EXPECT_EQ(order, (std::vector<int32_t>{100, 101, 102, 103}));
}

// Tenant A queues four turns, then tenant B one: B's turn is admitted right after the turn
// running, not behind A's backlog, and A's turns keep their order. A's first turn stalls (its
// one-event buffer is not read) until the test drains it, so the queue is complete by then.
TEST(SchedulerTest, AdmissionIsRoundRobinAcrossTenants) {
  Scheduler::Options o;
  o.max_batch = 1;
  Rig r(o, /*slots=*/6);  // FakeTiers keep every state resident: a slot per session
  std::vector<std::string> a;
  for (int i = 0; i < 4; ++i) a.push_back(r.index.Create("a")->session_id);
  const std::string b = r.index.Create("b")->session_id;
  std::vector<std::shared_ptr<TurnStream>> streams;
  streams.push_back(r.Start(a[0], {100}, 3, /*buffer=*/1, "a"));
  for (int i = 1; i < 4; ++i) streams.push_back(r.Start(a[i], {100 + i}, 3, 64, "a"));
  streams.push_back(r.Start(b, {200}, 3, 64, "b"));
  for (auto& s : streams) {
    absl::Status st;
    r.Drain(*s, &st);
    EXPECT_TRUE(st.ok()) << st;
  }
  std::vector<int32_t> order;
  for (const FakeModel::Call& c : r.model.calls()) {
    if (c.prefill) order.insert(order.end(), c.first_ids.begin(), c.first_ids.end());
  }
  EXPECT_EQ(order, (std::vector<int32_t>{100, 200, 101, 102, 103}));
}

// Per-tenant quotas: with one turn of A running (stalled) and two queued, a third queued turn
// of A is refused at once naming the quota while B's is taken; a running quota of 1 keeps
// A's queued turns waiting while B's runs beside A's.
TEST(SchedulerTest, TenantQuotasRefuseOrHoldTheExcess) {
  Scheduler::Options o;
  o.max_batch = 2;
  o.tenant_max_queued = 2;
  o.tenant_max_running = 1;
  Rig r(o, /*slots=*/6);
  std::vector<std::string> a;
  for (int i = 0; i < 4; ++i) a.push_back(r.index.Create("a")->session_id);
  const std::string b = r.index.Create("b")->session_id;
  auto a0 = r.Start(a[0], {100}, 3, /*buffer=*/1, "a");
  // Wait until a0 runs (prefilled), so the queue holds exactly what follows.
  for (int i = 0; i < 500 && r.model.calls().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_FALSE(r.model.calls().empty());
  auto a1 = r.Start(a[1], {101}, 3, 64, "a");
  auto a2 = r.Start(a[2], {102}, 3, 64, "a");
  ASSERT_TRUE(r.index.ClaimForTurn("a", a[3], {}).ok());
  auto extra = std::make_unique<Turn>();
  extra->session_id = a[3];
  extra->owner = "a";
  extra->stream = std::make_shared<TurnStream>(8, [] {});
  const absl::Status refused = r.scheduler->Enqueue(extra);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_NE(refused.message().find("tenant queued-turn quota"), std::string::npos) << refused;
  EXPECT_NE(extra, nullptr);  // handed back, never run
  // B runs beside A's stalled turn (a free batch place, B under its quota) and finishes
  // while A's queued turns still wait for A's running one.
  auto bt = r.Start(b, {200}, 3, 64, "b");
  absl::Status st;
  r.Drain(*bt, &st);
  EXPECT_TRUE(st.ok()) << st;
  for (const FakeModel::Call& c : r.model.calls()) {
    if (!c.prefill) continue;
    for (int32_t id : c.first_ids) EXPECT_NE(id, 101) << "A ran two turns at once";
  }
  for (auto* s : {&a0, &a1, &a2}) {
    r.Drain(**s, &st);
    EXPECT_TRUE(st.ok()) << st;
  }
}

// A turn whose client stopped reading (its stream full) is rolled back once the stall lasts
// stalled_stream_ms, and the turn waiting behind it runs: unread streams cannot hold slots.
TEST(SchedulerTest, AStalledStreamReleasesItsSlotAfterTheLimit) {
  Scheduler::Options o;
  o.max_batch = 1;
  o.stalled_stream_ms = 1000;
  Rig r(o, /*slots=*/2);
  const std::string a = r.index.Create("")->session_id;
  const std::string b = r.index.Create("")->session_id;
  auto stalled = r.Start(a, {1}, 50, /*buffer=*/1);  // nobody reads it
  auto waiting = r.Start(b, {5}, 3);
  // The stall is noticed on the scheduler thread; move the clock until it has rolled back.
  for (int i = 0; i < 200 && !stalled->Done(); ++i) {
    r.clock.Advance(std::chrono::milliseconds(600));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  absl::Status sa, sb;
  r.Drain(*stalled, &sa);
  EXPECT_EQ(sa.code(), absl::StatusCode::kResourceExhausted) << sa;
  EXPECT_EQ(r.index.Get("", a)->version, 0u);
  EXPECT_FALSE(r.index.Get("", a)->turn_running);
  EXPECT_EQ(r.Drain(*waiting, &sb), (std::vector<int32_t>{6, 7, 8}));
  EXPECT_TRUE(sb.ok()) << sb;
  EXPECT_EQ(r.index.Get("", b)->version, 1u);
}

// The engine thread's heartbeat (what /readyz reads): it stays fresh while the loop turns and
// grows while a task blocks the thread.
TEST(SchedulerTest, SinceLastLoopGrowsWhileTheEngineThreadIsBlocked) {
  Rig r;
  absl::Notification entered, release;
  r.scheduler->Post([&] {
    entered.Notify();
    release.WaitForNotification();
  });
  entered.WaitForNotification();
  r.clock.Advance(std::chrono::seconds(90));
  EXPECT_GE(r.scheduler->SinceLastLoop(), std::chrono::seconds(89));
  release.Notify();
  // Once free, the loop comes round again (within its one-second idle wait).
  for (int i = 0; i < 300 && r.scheduler->SinceLastLoop() >= std::chrono::seconds(89); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_LT(r.scheduler->SinceLastLoop(), std::chrono::seconds(89));
}

// INTERNAL from a forward call is the backend itself failing (a sticky device error): the turn
// rolls back, nothing is admitted again and the failure is visible for /readyz. Any other
// error fails only the turns of that call.
TEST(SchedulerTest, ADeviceFailureStopsServingOtherErrorsFailOnlyTheirTurns) {
  Rig r;
  const std::string id = r.index.Create("")->session_id;
  absl::Status status;
  r.model.fail_with = absl::InvalidArgumentError("bad slot");
  auto bad = r.Start(id, {1, 2}, 3);
  r.Drain(*bad, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_FALSE(r.scheduler->DeviceFailed());
  EXPECT_EQ(r.index.Get("", id)->version, 0u);
  EXPECT_FALSE(r.index.Get("", id)->turn_running);

  r.model.fail_with = absl::InternalError("cudaErrorIllegalAddress");
  auto failed = r.Start(id, {1, 2}, 3);
  r.Drain(*failed, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_NE(status.message().find("cudaErrorIllegalAddress"), std::string::npos) << status;
  EXPECT_TRUE(r.scheduler->DeviceFailed());
  EXPECT_EQ(r.index.Get("", id)->version, 0u);
  EXPECT_FALSE(r.index.Get("", id)->turn_running);
  EXPECT_EQ(r.scheduler->CheckAdmits().code(), absl::StatusCode::kUnavailable);
  auto turn = std::make_unique<Turn>();
  EXPECT_EQ(r.scheduler->Enqueue(turn).code(), absl::StatusCode::kUnavailable);
}

// NaN logits (a broken checkpoint or kernel) fail only the turns whose rows hold them, with
// INTERNAL, wherever they appear: after the prompt, mid-reply, or on the final feed whose
// state would otherwise commit. The session keeps its last version and serves again.
TEST(SchedulerTest, NaNLogitsRollBackOnlyTheirTurn) {
  Rig r;
  r.model.nan_after = 200;
  const std::string a = r.index.Create("")->session_id;
  const std::string b = r.index.Create("")->session_id;
  absl::Status status;
  auto healthy = r.Start(b, {5}, 3);
  auto prompt = r.Start(a, {10, 200}, 3);
  EXPECT_TRUE(r.Drain(*prompt, &status).empty());
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_NE(status.message().find("NaN"), std::string::npos) << status;
  EXPECT_EQ(r.Drain(*healthy, &status), (std::vector<int32_t>{6, 7, 8}));
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(r.index.Get("", b)->version, 1u);

  // Mid-reply: 198, 199, 200 stream, then the step that feeds 200 gives NaN.
  auto mid = r.Start(a, {197}, 10);
  EXPECT_EQ(r.Drain(*mid, &status), (std::vector<int32_t>{198, 199, 200}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  // The final feed (200 is the last of 3 tokens): nothing more streams, and nothing commits.
  auto final_feed = r.Start(a, {197}, 3);
  EXPECT_EQ(r.Drain(*final_feed, &status), (std::vector<int32_t>{198, 199, 200}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_EQ(r.index.Get("", a)->version, 0u);
  EXPECT_FALSE(r.index.Get("", a)->turn_running);
  EXPECT_FALSE(r.scheduler->DeviceFailed());

  auto after = r.Start(a, {1}, 2);
  EXPECT_EQ(r.Drain(*after, &status), (std::vector<int32_t>{2, 3}));
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(r.index.Get("", a)->version, 1u);

  // A session whose system prompt gives NaN logits is never created.
  const int32_t sessions = r.index.size();
  ASSERT_TRUE(r.index.ReserveCreate("").ok());
  auto create = std::make_unique<Turn>();
  create->input = {7, 200};
  create->create_only = true;
  absl::Notification created;
  absl::Status create_status;
  create->create_done = [&](absl::StatusOr<SessionInfo> info) {
    create_status = info.status();
    created.Notify();
  };
  create->enqueued = r.clock.Now();
  ASSERT_TRUE(r.scheduler->Enqueue(create).ok());
  ASSERT_TRUE(created.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(create_status.code(), absl::StatusCode::kInternal) << create_status;
  EXPECT_EQ(r.index.size(), sessions);
  EXPECT_TRUE(r.index.CanAdd("").ok());  // the reservation was given back
}

}  // namespace
}  // namespace xlstmd::core
