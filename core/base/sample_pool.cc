#include "core/base/sample_pool.h"

namespace xlstmd::core {

SamplePool::SamplePool(int threads) {
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
}

SamplePool::~SamplePool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  for (std::thread& t : workers_) t.join();
}

void SamplePool::ForEach(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    fn_ = &fn;
    n_ = n;
    next_ = 0;
    done_ = 0;
  }
  cv_.SignalAll();
  Drain();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](SamplePool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return p->done_ == p->n_; },
      this));
  fn_ = nullptr;
}

void SamplePool::Drain() {
  for (;;) {
    const std::function<void(int64_t)>* fn;
    int64_t i;
    {
      absl::MutexLock lock(&mu_);
      if (fn_ == nullptr || next_ >= n_) return;
      fn = fn_;
      i = next_++;
    }
    (*fn)(i);
    absl::MutexLock lock(&mu_);
    ++done_;
  }
}

void SamplePool::Work() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      while (!stopping_ && (fn_ == nullptr || next_ >= n_)) cv_.Wait(&mu_);
      if (stopping_) return;
    }
    Drain();
  }
}

}  // namespace xlstmd::core
