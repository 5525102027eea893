// SamplePool runs every index exactly once, on the caller and its helpers, job after job.
#include "core/base/sample_pool.h"

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace xlstmd::core {
namespace {

TEST(SamplePoolTest, EveryIndexOnceJobAfterJob) {
  for (int helpers : {0, 1, 3}) {
    SamplePool pool(helpers);
    EXPECT_EQ(pool.threads(), helpers);
    for (int64_t n : {0, 1, 2, 7, 256}) {
      for (int rep = 0; rep < 20; ++rep) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.ForEach(n, [&](int64_t i) { hits[i].fetch_add(1); });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << helpers << " " << n;
      }
    }
  }
}

TEST(SamplePoolTest, HelpersShareTheWork) {
  SamplePool pool(3);
  absl::Mutex mu;
  std::set<std::thread::id> seen;
  pool.ForEach(64, [&](int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    absl::MutexLock lock(&mu);
    seen.insert(std::this_thread::get_id());
  });
  EXPECT_GE(seen.size(), 2u);  // not everything on the caller
}

}  // namespace
}  // namespace xlstmd::core
