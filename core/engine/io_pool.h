// IoPool: a few threads for blocking state I/O (snapshot files, Redis), so the scheduler
// thread never waits on a disk or a network. Jobs run in submission order per thread pick-up
// (no ordering guarantee between jobs: callers that need one serialise per key themselves).
// The destructor runs every job already submitted, then joins.
#ifndef XLSTMD_CORE_ENGINE_IO_POOL_H_
#define XLSTMD_CORE_ENGINE_IO_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace xlstmd::core {

class IoPool {
 public:
  explicit IoPool(int threads);
  ~IoPool();
  IoPool(const IoPool&) = delete;
  IoPool& operator=(const IoPool&) = delete;

  void Submit(std::function<void()> job);
  // Jobs queued or running.
  int pending() const;

 private:
  void Run();

  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_IO_POOL_H_
