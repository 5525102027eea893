// The engine's metrics hooks (EngineObserver) and Usage.history_tokens, on the golden
// xLSTM-Large model: every decode step, restore, spill and eviction is reported once, with
// the tier or reason it had.
#include "core/engine/engine_observer.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/engine/engine.h"
#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "tests/engine/engine_harness.h"
#include "tests/testing/golden.h"

namespace xlstmd::core {
namespace {

class RecordingObserver final : public EngineObserver {
 public:
  void OnDecodeStep(int32_t batch_size, double seconds) override {
    steps.fetch_add(1);
    batch_sum.fetch_add(batch_size);
    if (seconds < 0) negative_times.fetch_add(1);
  }
  void OnRestore(StateTier from, double seconds) override {
    restores[static_cast<size_t>(from)].fetch_add(1);
    if (seconds < 0) negative_times.fetch_add(1);
  }
  void OnSpill(StateTier to) override { spills[static_cast<size_t>(to)].fetch_add(1); }
  void OnEviction(EvictionReason reason) override {
    evictions[static_cast<size_t>(reason)].fetch_add(1);
  }

  int64_t restored(StateTier t) const { return restores[static_cast<size_t>(t)].load(); }
  int64_t spilled(StateTier t) const { return spills[static_cast<size_t>(t)].load(); }
  int64_t evicted(EvictionReason r) const { return evictions[static_cast<size_t>(r)].load(); }

  std::atomic<int64_t> steps{0}, batch_sum{0}, negative_times{0};
  std::array<std::atomic<int64_t>, 4> restores{}, spills{};
  std::array<std::atomic<int64_t>, 3> evictions{};
};

using engine_testing::Harness;
using engine_testing::MakeEngine;

std::string NewSession(Engine& e) {
  absl::Notification done;
  std::string id;
  e.CreateSession("", "", [&](absl::StatusOr<SessionInfo> r) {
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) id = r->session_id;
    done.Notify();
  });
  done.WaitForNotification();
  return id;
}

struct Outcome {
  absl::Status status;
  size_t tokens = 0;
  TurnUsage usage;
};

// A raw-token turn of `max_tokens`, drained by polling (the wakeup is not needed here).
Outcome RunTurn(Engine& e, const std::string& id, std::vector<int32_t> ids, int32_t max_tokens) {
  TurnRequest r;
  r.session_id = id;
  r.tokens = std::move(ids);
  r.sampling.max_tokens = max_tokens;
  Outcome out;
  auto stream = e.StartTurn(std::move(r), [] {});
  if (!stream.ok()) {
    out.status = stream.status();
    return out;
  }
  while (true) {
    TurnEvent ev;
    if ((*stream)->TryPop(&ev)) {
      if (ev.kind == TurnEvent::Kind::kDelta) out.tokens += ev.token_ids.size();
      if (ev.kind == TurnEvent::Kind::kFinished) out.usage = ev.usage;
      continue;
    }
    if ((*stream)->Done()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  out.status = (*stream)->final_status();
  return out;
}

TEST(EngineObserverTest, StepsRestoresAndSlotEvictionsAreReported) {
  RecordingObserver obs;
  EngineOptions opts;
  opts.resident_slots = 2;
  opts.max_batch = 2;
  opts.observer = &obs;
  Harness h = MakeEngine(opts);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(NewSession(*h.engine));
  int64_t tokens = 0;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 4; ++i) {
      Outcome o = RunTurn(*h.engine, ids[i], {i + 1, round + 2}, 4);
      ASSERT_TRUE(o.status.ok()) << o.status;
      EXPECT_EQ(o.tokens, 4u);
      // The session's token count before the turn: a stateless server's re-prefill.
      EXPECT_EQ(o.usage.history_tokens, round == 0 ? 0u : 6u) << "round " << round;
      tokens += static_cast<int64_t>(o.tokens);
    }
  }
  // Every generated id is fed to the model in exactly one decode step.
  EXPECT_EQ(obs.batch_sum.load(), tokens);
  EXPECT_GE(obs.steps.load(), tokens / 2);
  EXPECT_EQ(obs.negative_times.load(), 0);
  // Round 2 found every state somewhere: two slots cannot hold four sessions' states plus a
  // turn's working copy, so most came back from host RAM.
  EXPECT_EQ(obs.restored(StateTier::kResident) + obs.restored(StateTier::kHost), 4);
  EXPECT_GT(obs.restored(StateTier::kHost), 0);
  EXPECT_EQ(obs.restored(StateTier::kDisk), 0);
  // Without a disk tier every slot eviction lands in host RAM.
  EXPECT_GT(obs.evicted(EvictionReason::kSlotPressure), 0);
  EXPECT_EQ(obs.spilled(StateTier::kHost), obs.evicted(EvictionReason::kSlotPressure));
  EXPECT_EQ(obs.spilled(StateTier::kDisk), 0);
  EXPECT_EQ(obs.evicted(EvictionReason::kHostBudget), 0);
}

TEST(EngineObserverTest, HostBudgetSpillsToDiskAndRestoresFromIt) {
  const auto dir = std::filesystem::temp_directory_path() /
                   absl::StrCat("xlstmd_observer_", ::getpid(), "_", std::random_device{}());
  std::filesystem::remove_all(dir);
  RecordingObserver obs;
  EngineOptions opts;
  opts.observer = &obs;
  opts.state_dir = dir.string();
  opts.durability = EngineOptions::Durability::kAsync;
  opts.resident_slots = 2;
  opts.max_batch = 1;
  {
    Harness probe = MakeEngine(EngineOptions{});
    opts.host_state_bytes = static_cast<int64_t>(probe.engine->model().state_bytes_per_session());
  }
  Harness h = MakeEngine(opts);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(NewSession(*h.engine));
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 4; ++i) {
      Outcome o = RunTurn(*h.engine, ids[i], {i + 3, round + 1}, 3);
      ASSERT_TRUE(o.status.ok()) << o.status;
    }
  }
  EXPECT_GT(obs.restored(StateTier::kDisk), 0);
  EXPECT_EQ(obs.restored(StateTier::kDisk), h.engine->stats().restores_from_disk);
  EXPECT_GT(obs.spilled(StateTier::kDisk), 0);
  EXPECT_GT(obs.evicted(EvictionReason::kSlotPressure), 0);
  EXPECT_GT(obs.evicted(EvictionReason::kHostBudget) + obs.spilled(StateTier::kDisk), 0);
  h.engine.reset();
  std::filesystem::remove_all(dir);
}

TEST(EngineObserverTest, IdleExpiryIsAnEviction) {
  FakeClock clock;
  RecordingObserver obs;
  EngineOptions opts;
  opts.observer = &obs;
  opts.idle_ttl_ms = 100;
  opts.clock = &clock;
  Harness h = MakeEngine(opts);
  const std::string id = NewSession(*h.engine);
  ASSERT_TRUE(RunTurn(*h.engine, id, {1}, 2).status.ok());
  clock.Advance(std::chrono::milliseconds(1500));
  for (int i = 0; i < 5000 && obs.evicted(EvictionReason::kIdleTtl) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(obs.evicted(EvictionReason::kIdleTtl), 1);
  EXPECT_EQ(h.engine->GetSession("", id).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace xlstmd::core
