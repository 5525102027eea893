// ThreadPool: every index is covered exactly once, ranges respect the grain, every worker
// runs RunOnAll once, one thread runs inline, and the pool survives many back-to-back calls.
#include "kernels/cpu/thread_pool.h"

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace xlstmd::kernels::cpu {
namespace {

TEST(ThreadPoolTest, ThreadsCountsTheCaller) {
  EXPECT_EQ(ThreadPool(1).Threads(), 1);
  EXPECT_EQ(ThreadPool(3).Threads(), 3);
  EXPECT_EQ(ThreadPool(0).Threads(), 1);
}

TEST(ThreadPoolTest, ParallelForCoversEachIndexOnceInGrainMultiples) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 7, 24, 100, 1001}) {
      for (int64_t grain : {1, 4, 24, 2000}) {
        std::vector<std::atomic<int>> hits(n);
        std::mutex mu;
        std::vector<std::pair<int64_t, int64_t>> ranges;
        pool.ParallelFor(n, grain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
          std::lock_guard<std::mutex> lock(mu);
          ranges.emplace_back(b, e);
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << n << " " << grain;
        EXPECT_LE(static_cast<int>(ranges.size()), threads);
        for (const auto& [b, e] : ranges) {
          EXPECT_LT(b, e);
          EXPECT_EQ(b % grain, 0);
          if (e != n) {
            EXPECT_EQ((e - b) % grain, 0);
          }
        }
      }
    }
  }
}

TEST(ThreadPoolTest, ParallelForWithNothingToDoNeverCalls) {
  ThreadPool pool(2);
  bool called = false;
  pool.ParallelFor(0, 1, [&](int64_t, int64_t) { called = true; });
  EXPECT_FALSE(called);
}

TEST(ThreadPoolTest, RunOnAllRunsEachIndexOnceOnDistinctThreads) {
  ThreadPool pool(4);
  std::mutex mu;
  std::multiset<int> seen;
  std::set<std::thread::id> ids;
  pool.RunOnAll([&](int t) {
    std::lock_guard<std::mutex> lock(mu);
    seen.insert(t);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(seen, (std::multiset<int>{0, 1, 2, 3}));
  EXPECT_EQ(ids.size(), 4u);
}

TEST(ThreadPoolTest, SingleThreadRunsInline) {
  ThreadPool pool(1);
  std::thread::id id;
  pool.ParallelFor(10, 1, [&](int64_t, int64_t) { id = std::this_thread::get_id(); });
  EXPECT_EQ(id, std::this_thread::get_id());
}

TEST(ThreadPoolTest, ManyBackToBackCalls) {
  ThreadPool pool(3);
  std::atomic<int64_t> sum{0};
  for (int i = 0; i < 2000; ++i) {
    pool.ParallelFor(30, 1, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) sum.fetch_add(j);
    });
  }
  EXPECT_EQ(sum.load(), 2000 * (29 * 30 / 2));
}

}  // namespace
}  // namespace xlstmd::kernels::cpu
