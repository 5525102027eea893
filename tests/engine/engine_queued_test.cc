// The engine on a device-like backend (QueuedBackend: ops and copies run only when the host
// waits, host buffers from AllocHost count as pinned), so the tiers' asynchronous moves are
// exercised in CI as they run on a GPU: spills and commit captures whose copies are still
// queued when the scheduler goes on, restores from RAM and disk that are not waited for,
// exports, rewind checkpoints and forks. Every turn must produce exactly the tokens the plain
// CPU engine does, and no queued copy may see its host memory changed or freed.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/engine/engine_harness.h"
#include "tests/testing/queued_backend.h"

namespace xlstmd::core {
namespace {

using namespace engine_testing;  // NOLINT: the fixtures are the test vocabulary
using testing::QueuedBackend;

// Run without and with decode recordings (QueuedBackend's CUDA-graph semantics).
class EngineQueuedTest : public ::testing::TestWithParam<bool> {};

TEST_P(EngineQueuedTest, TierMovesOnADeviceLikeBackendMatchTheCpuEngine) {
  const auto dir = FreshDir("queued");
  Harness probe = MakeEngine();
  const int64_t state_bytes = static_cast<int64_t>(probe.engine->model().state_bytes_per_session());
  EngineOptions opts;
  opts.state_dir = dir.string();
  opts.resident_slots = 2;
  opts.max_batch = 2;
  opts.host_state_bytes = 2 * state_bytes;  // some idle states in RAM, the rest on disk
  std::unique_ptr<QueuedBackend> queued = QueuedBackend::OverCpu(2, /*capture=*/GetParam());
  ASSERT_NE(queued, nullptr);
  QueuedBackend* device = queued.get();
  Harness h = MakeEngine(opts, std::move(queued));

  std::vector<std::string> ids, ref_ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(NewSession(*h.engine).session_id);
    ref_ids.push_back(NewSession(*probe.engine).session_id);
  }
  RunRoundsLikeReference(*h.engine, ids, *probe.engine, ref_ids, 3);
  const EngineStats stats = h.engine->stats();
  EXPECT_GT(stats.restores_from_disk, 0);
  EXPECT_GT(stats.pinned_state_bytes, 0);  // the host copies are page-locked buffers
  EXPECT_EQ(stats.pinned_state_fallbacks, 0);
  // A fork of a session whose state is only on disk.
  auto forked = Fork(*h.engine, ids[0]);
  ASSERT_TRUE(forked.ok()) << forked.status();
  TurnResult ref0 = RunTurn(*probe.engine, Tokens(ref_ids[0], {6}, 4));
  EXPECT_EQ(RunTurn(*h.engine, Tokens(forked->session_id, {6}, 4)).tokens, ref0.tokens);
  EXPECT_EQ(RunTurn(*h.engine, Tokens(ids[0], {6}, 4)).tokens, ref0.tokens);

  if (GetParam()) {
    EXPECT_GT(device->replays(), 0);
  }
  h.engine.reset();
  EXPECT_EQ(device->violations(), 0);
  std::filesystem::remove_all(dir);
}

// One slot and RAM only: every turn spills the other session's state into a pinned buffer
// with its copy still queued; commit captures for rewind checkpoints, exports and forks of
// resident and spilled states, all against the CPU engine.
TEST_P(EngineQueuedTest, CapturesExportsRewindsAndForksMatchTheCpuEngine) {
  EngineOptions opts;
  opts.resident_slots = 1;
  opts.max_batch = 1;
  opts.keep_turn_checkpoints = 1;
  Harness probe = MakeEngine(opts);
  std::unique_ptr<QueuedBackend> queued = QueuedBackend::OverCpu(2, /*capture=*/GetParam());
  ASSERT_NE(queued, nullptr);
  QueuedBackend* device = queued.get();
  Harness h = MakeEngine(opts, std::move(queued));

  std::vector<std::string> ids, ref_ids;
  for (int i = 0; i < 2; ++i) {
    ids.push_back(NewSession(*h.engine).session_id);
    ref_ids.push_back(NewSession(*probe.engine).session_id);
  }
  auto both = [&](int i, std::vector<int32_t> tokens) {
    TurnResult a = RunTurn(*h.engine, Tokens(ids[i], tokens, 4));
    TurnResult b = RunTurn(*probe.engine, Tokens(ref_ids[i], tokens, 4));
    EXPECT_TRUE(a.status.ok() && b.status.ok()) << a.status << " " << b.status;
    EXPECT_EQ(a.tokens, b.tokens) << "session " << i;
    return a.tokens;
  };
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 2; ++i) both(i, {i + 3, round + 1});
  }
  // Session 1 is resident, session 0 in RAM: export both and import them.
  for (int i = 0; i < 2; ++i) {
    auto bytes = Export(*h.engine, ids[i]);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto imported = Import(*h.engine, *bytes);
    ASSERT_TRUE(imported.ok()) << imported.status();
    ids.push_back(imported->session_id);
  }
  // Forks of both, then a rewind of each to its previous version (the checkpoint captured
  // at its last commit).
  for (int i = 0; i < 2; ++i) {
    auto forked = Fork(*h.engine, ids[i]);
    ASSERT_TRUE(forked.ok()) << forked.status();
    ids.push_back(forked->session_id);
  }
  for (int i = 0; i < 2; ++i) {
    const uint64_t version = h.engine->GetSession("", ids[i])->version;
    auto rewound = Rewind(*h.engine, ids[i], version - 1);
    ASSERT_TRUE(rewound.ok()) << rewound.status();
    ASSERT_TRUE(Rewind(*probe.engine, ref_ids[i], version - 1).ok());
  }
  // The copies continue as the originals did before the rewind; the rewound ones as the
  // reference engine's rewound sessions.
  std::vector<int32_t> next[2];
  for (int i = 0; i < 2; ++i) {
    next[i] = RunTurn(*h.engine, Tokens(ids[2 + i], {7}, 4)).tokens;
    EXPECT_EQ(RunTurn(*h.engine, Tokens(ids[4 + i], {7}, 4)).tokens, next[i]) << i;
    both(i, {7});
  }
  if (GetParam()) {
    EXPECT_GT(device->replays(), 0);
  }
  h.engine.reset();
  EXPECT_EQ(device->violations(), 0);
}

// The device fails while serving (a sticky error, as cudaErrorIllegalAddress): the turn then
// running fails UNAVAILABLE naming the error and rolls back, the engine admits nothing more
// and says so, and the turns committed before are on disk (sync durability), so a replica
// started on the same state directory continues exactly where the failed one stopped.
TEST_P(EngineQueuedTest, ADeviceFailureLosesNoCommittedTurn) {
  const auto dir = FreshDir("queued_fail");
  EngineOptions opts;
  opts.state_dir = dir.string();
  opts.durability = EngineOptions::Durability::kSync;
  Harness ref = MakeEngine();
  const std::string ref_id = NewSession(*ref.engine).session_id;
  std::string id;
  {
    std::unique_ptr<QueuedBackend> queued = QueuedBackend::OverCpu(2, /*capture=*/GetParam());
    ASSERT_NE(queued, nullptr);
    QueuedBackend* device = queued.get();
    Harness h = MakeEngine(opts, std::move(queued));
    id = NewSession(*h.engine).session_id;
    TurnResult first = RunTurn(*h.engine, Tokens(id, {4, 5, 6}, 4));
    ASSERT_TRUE(first.status.ok()) << first.status;
    EXPECT_EQ(first.tokens, RunTurn(*ref.engine, Tokens(ref_id, {4, 5, 6}, 4)).tokens);

    device->FailDevice("cudaErrorIllegalAddress (injected)");
    TurnResult failed = RunTurn(*h.engine, Tokens(id, {7, 8}, 4));
    EXPECT_EQ(failed.status.code(), absl::StatusCode::kUnavailable) << failed.status;
    EXPECT_NE(failed.status.message().find("injected"), std::string::npos) << failed.status;
    EXPECT_TRUE(h.engine->stats().device_failed);
    EXPECT_EQ(h.engine->GetSession("", id)->version, 1u);  // rolled back
    EXPECT_EQ(RunTurn(*h.engine, Tokens(id, {7, 8}, 4)).status.code(),
              absl::StatusCode::kUnavailable);
  }
  Harness h = MakeEngine(opts);  // another replica, on the CPU
  auto info = h.engine->GetSession("", id);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version, 1u);
  TurnResult a = RunTurn(*h.engine, Tokens(id, {7, 8}, 4));
  TurnResult b = RunTurn(*ref.engine, Tokens(ref_id, {7, 8}, 4));
  ASSERT_TRUE(a.status.ok() && b.status.ok()) << a.status << " " << b.status;
  EXPECT_EQ(a.tokens, b.tokens);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Recording, EngineQueuedTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Recorded" : "Eager"; });

}  // namespace
}  // namespace xlstmd::core
