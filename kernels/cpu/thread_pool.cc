#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#define XLSTMD_PAUSE() _mm_pause()
#else
#define XLSTMD_PAUSE() \
  do {                 \
  } while (false)
#endif

namespace xlstmd::kernels::cpu {
namespace {
// A forward pass issues a few hundred parallel ops, each tens of microseconds long. Waking a
// sleeping worker through a condition variable costs ~50 us on this VM, more than many ops,
// so workers and the caller spin for a short while before blocking. The spin is bounded in
// time, so an idle pool still goes to sleep and burns no CPU.
constexpr auto kSpin = std::chrono::microseconds(200);
}  // namespace

ThreadPool::ThreadPool(int threads) {
  const int extra = std::max(0, threads - 1);
  workers_.reserve(extra);
  for (int i = 0; i < extra; ++i) workers_.emplace_back([this, i] { WorkerLoop(i + 1); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin first: the next op usually follows within microseconds.
    const auto deadline = std::chrono::steady_clock::now() + kSpin;
    int polls = 0;
    while (generation_.load(std::memory_order_acquire) == seen) {
      XLSTMD_PAUSE();
      if (++polls % 256 == 0 && std::chrono::steady_clock::now() > deadline) break;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    const std::function<void(int)>* job;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      job = job_;
    }
    (*job)(index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::RunOnAll(const std::function<void(int)>& fn) {
  if (workers_.empty()) {
    fn(0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  start_cv_.notify_all();
  fn(0);
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  int polls = 0;
  while (pending_.load(std::memory_order_acquire) != 0) {
    XLSTMD_PAUSE();
    if (++polls % 256 == 0 && std::chrono::steady_clock::now() > deadline) break;
  }
  if (pending_.load(std::memory_order_acquire) != 0) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t units = (n + grain - 1) / grain;
  const int64_t parts = std::min<int64_t>(units, Threads());
  if (parts <= 1) {
    fn(0, n);
    return;
  }
  RunOnAll([&](int t) {
    if (t >= parts) return;
    const int64_t ub = units * t / parts, ue = units * (t + 1) / parts;
    const int64_t b = ub * grain, e = std::min(n, ue * grain);
    if (b < e) fn(b, e);
  });
}

}  // namespace xlstmd::kernels::cpu
