// A fixed pool of worker threads for the CPU backend's data-parallel ops.
//
// `ParallelFor(n, fn)` splits [0, n) into contiguous ranges, runs fn(begin, end) on the
// workers and the calling thread, and returns when all ranges are done. Only one thread (the
// backend's caller) may call ParallelFor at a time; workers sleep on a condition variable
// between calls, so an idle pool burns no CPU.
#ifndef XLSTMD_KERNELS_CPU_THREAD_POOL_H_
#define XLSTMD_KERNELS_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace xlstmd::kernels::cpu {

class ThreadPool {
 public:
  // `threads` counts the caller too: threads == 1 runs everything inline.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int Threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(begin, end) over [0, n) split into at most Threads() ranges whose sizes are
  // multiples of `grain` (except the last). Blocks until done.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Runs fn(t) for t in [0, Threads()) once each, in parallel.
  void RunOnAll(const std::function<void(int)>& fn);

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int)>* job_ = nullptr;  // guarded by mu_
  bool stop_ = false;                               // guarded by mu_
  // Bumped (under mu_) for each job; workers poll it while spinning.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};  // workers still running the current job
};

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_THREAD_POOL_H_
