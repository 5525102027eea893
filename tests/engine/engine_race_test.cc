// Session operations racing on the same sessions from several threads: turns, deletes,
// rewinds, forks and exports. Delete and Rewind used to check that a session was idle and act
// on it later, so a turn claiming it in between ran on an erased or rewound session. Now
// they claim it in the same critical section as the check. The test asserts that nothing
// aborts, every refusal is one of the documented codes, and every session left afterwards
// still runs a turn that commits the next version. (The old window was microseconds wide: on
// a 2-core machine this 3 s run did not hit it reliably before the fix. It is a smoke test
// of the operations together; the fix is by construction.)
#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/engine/engine_harness.h"

namespace xlstmd::core::engine_testing {
namespace {

absl::Status Delete(Engine& e, const std::string& id) {
  absl::Notification done;
  absl::Status out;
  e.DeleteSession("", id, [&](absl::Status s) {
    out = s;
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

bool Expected(const absl::Status& s) {
  // NOT_FOUND: deleted meanwhile; ABORTED: busy; FAILED_PRECONDITION: version not kept.
  return s.ok() || absl::IsNotFound(s) || absl::IsAborted(s) || absl::IsFailedPrecondition(s);
}

TEST(EngineRaceTest, TurnsDeletesRewindsForksAndExportsOnTheSameSessions) {
  EngineOptions o;
  o.keep_turn_checkpoints = 3;
  Harness h = MakeEngine(o);
  Engine& e = *h.engine;
  std::mutex mu;
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(NewSession(e).session_id);
  auto pick = [&](std::mt19937& rng) {
    std::lock_guard<std::mutex> lock(mu);
    return ids[rng() % ids.size()];
  };
  std::atomic<bool> stop{false};
  std::atomic<int> unexpected{0}, turns_ok{0}, deletes_ok{0}, rewinds_ok{0};
  auto check = [&](const absl::Status& s, const char* what) {
    if (!Expected(s)) {
      ++unexpected;
      ADD_FAILURE() << what << ": " << s;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      while (!stop.load()) {
        const TurnResult r = RunTurn(e, Tokens(pick(rng), {5, 6, 7}, 2));
        check(r.status, "turn");
        if (r.status.ok()) ++turns_ok;
      }
    });
  }
  threads.emplace_back([&] {
    std::mt19937 rng(7);
    while (!stop.load()) {
      const std::string id = pick(rng);
      const absl::Status s = Delete(e, id);
      check(s, "delete");
      if (s.ok()) {
        ++deletes_ok;
        const std::string fresh = NewSession(e).session_id;
        std::lock_guard<std::mutex> lock(mu);
        for (std::string& x : ids) {
          if (x == id) x = fresh;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  threads.emplace_back([&] {
    std::mt19937 rng(9);
    while (!stop.load()) {
      const std::string id = pick(rng);
      absl::StatusOr<SessionInfo> info = e.GetSession("", id);
      if (info.ok() && info->version > 0) {
        const absl::StatusOr<SessionInfo> r = Rewind(e, id, info->version - 1);
        check(r.status(), "rewind");
        if (r.ok()) ++rewinds_ok;
      }
      check(Fork(e, pick(rng)).status(), "fork");
      check(Export(e, pick(rng)).status(), "export");
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(3));
  stop = true;
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_GT(turns_ok.load(), 0);
  EXPECT_GT(deletes_ok.load(), 0);
  EXPECT_GT(rewinds_ok.load(), 0);
  // Every session left is consistent: its next turn commits exactly the next version.
  for (const std::string& id : ids) {
    const absl::StatusOr<SessionInfo> before = e.GetSession("", id);
    ASSERT_TRUE(before.ok()) << before.status();
    const TurnResult r = RunTurn(e, Tokens(id, {1, 2}, 2));
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.version, before->version + 1);
  }
}

}  // namespace
}  // namespace xlstmd::core::engine_testing
