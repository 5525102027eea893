// A few descriptors held in reserve (open on /dev/null) for the files that must never fail
// for want of one: durable snapshot writes and reads. When the process runs out (EMFILE: idle
// connections took everything under the open-file limit), Open gives one back to the kernel
// and retries, so a commit still reaches disk; the next Open takes it back when it can.
// Best effort under a race: another thread may take the freed number first, then the next
// reserved one is tried. Thread-safe.
#ifndef XLSTMD_CORE_BASE_DESCRIPTOR_RESERVE_H_
#define XLSTMD_CORE_BASE_DESCRIPTOR_RESERVE_H_

#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace xlstmd::base {

class DescriptorReserve {
 public:
  explicit DescriptorReserve(int count);
  ~DescriptorReserve();
  DescriptorReserve(const DescriptorReserve&) = delete;
  DescriptorReserve& operator=(const DescriptorReserve&) = delete;

  // Calls `open_fn` (an open(2)-like call returning a descriptor or -1 with errno) and
  // returns its result; on EMFILE/ENFILE, releases reserved descriptors one at a time and
  // calls it again. errno is `open_fn`'s on failure.
  int Open(const std::function<int()>& open_fn);
  // Descriptors held now (for tests and metrics).
  int held() const;

 private:
  void RefillLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int target_;
  mutable absl::Mutex mu_;
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xlstmd::base

#endif  // XLSTMD_CORE_BASE_DESCRIPTOR_RESERVE_H_
