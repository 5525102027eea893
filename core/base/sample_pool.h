// SamplePool: threads that sample the rows of one forward pass in parallel. Sampling a row
// at temperature > 0 walks the whole vocabulary (softmax, nucleus) and costs about a
// millisecond at 50k tokens (xlstm bench prints it per batch size), so 256 rows sampled one
// after another on the scheduler thread would take longer than a GPU's decode step. Each
// turn's sampler is its own (own RNG), so who samples a row never changes the result.
#ifndef XLSTMD_CORE_BASE_SAMPLE_POOL_H_
#define XLSTMD_CORE_BASE_SAMPLE_POOL_H_

#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace xlstmd::core {

class SamplePool {
 public:
  // `threads` helpers beside the caller; 0 = the caller does everything.
  explicit SamplePool(int threads);
  ~SamplePool();
  SamplePool(const SamplePool&) = delete;
  SamplePool& operator=(const SamplePool&) = delete;

  // Runs fn(i) for every i in [0, n), the caller included, and returns when all are done.
  // One caller at a time (the scheduler thread).
  void ForEach(int64_t n, const std::function<void(int64_t)>& fn);
  int threads() const { return static_cast<int>(workers_.size()); }

 private:
  void Work();
  void Drain();  // claims indices of the current job until none are left

  absl::Mutex mu_;
  absl::CondVar cv_;
  const std::function<void(int64_t)>* fn_ ABSL_GUARDED_BY(mu_) = nullptr;
  int64_t n_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t done_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_BASE_SAMPLE_POOL_H_
