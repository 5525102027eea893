// The scheduler with a fake model and fake slots (no weights, no kernels) and a fake clock:
// admission, streaming, commit, continuation and the turn time limit, without sleeping.
#include "core/engine/scheduler.h"

#include <chrono>

#include "gtest/gtest.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "tests/engine/parts_testutil.h"

namespace xlstmd::core {
namespace {

using engine_testing::FakeModel;
using engine_testing::FakeSlots;
using engine_testing::TinyCodec;
using engine_testing::TinyFloats;

constexpr int32_t kVocab = 257;

struct Rig {
  explicit Rig(Scheduler::Options o = {}, int32_t slots = 4)
      : fake(slots, TinyFloats()),
        model(&fake, kVocab),
        pool(slots),
        index(&clock, SessionIndex::Limits{}),
        tokenizer(*ByteTokenizer::Create({"<|endoftext|>"})) {
    EXPECT_NE(tokenizer, nullptr);
    o.slots = slots;
    o.max_batch = std::min(o.max_batch, slots);
    scheduler = std::make_unique<Scheduler>(o, &model, &index, tokenizer.get(), &chat, &clock);
    Scheduler* s = scheduler.get();
    auto t = StateTiers::Create(TierOptions{}, TinyCodec(), &fake, &pool, &index, &clock,
                                [s](std::function<void()> fn) { s->Post(std::move(fn)); });
    EXPECT_TRUE(t.ok()) << t.status();
    tiers = std::move(*t);
    scheduler->Start(tiers.get());
  }
  ~Rig() { scheduler->Stop(); }

  // A turn of raw tokens on `id`, claimed and queued as the facade would.
  std::shared_ptr<TurnStream> Start(const std::string& id, std::vector<int32_t> input,
                                    int32_t max_tokens, int32_t buffer = 64) {
    auto meta = index.ClaimForTurn("", id, {});
    EXPECT_TRUE(meta.ok()) << meta.status();
    auto turn = std::make_unique<Turn>();
    turn->session_id = id;
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
  SlotPool pool;
  SessionIndex index;
  std::unique_ptr<ByteTokenizer> tokenizer;
  ChatTemplate chat;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<StateTiers> tiers;
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
  EXPECT_EQ(r.fake.at(r.pool.ResidentSlot(id))[0], 7.0f);
  auto second = r.Start(id, {100}, 2);
  EXPECT_EQ(r.Drain(*second, &status), (std::vector<int32_t>{101, 102}));
  EXPECT_EQ(r.fake.at(r.pool.ResidentSlot(id))[0], 10.0f);
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

}  // namespace
}  // namespace xlstmd::core
