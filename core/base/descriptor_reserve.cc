#include "core/base/descriptor_reserve.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace xlstmd::base {

DescriptorReserve::DescriptorReserve(int count) : target_(count) {
  absl::MutexLock lock(&mu_);
  RefillLocked();
}

DescriptorReserve::~DescriptorReserve() {
  absl::MutexLock lock(&mu_);
  for (int fd : fds_) ::close(fd);
}

void DescriptorReserve::RefillLocked() {
  while (static_cast<int>(fds_.size()) < target_) {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;  // none to spare now; the next Open tries again
    fds_.push_back(fd);
  }
}

int DescriptorReserve::Open(const std::function<int()>& open_fn) {
  {
    absl::MutexLock lock(&mu_);
    RefillLocked();
  }
  while (true) {
    const int fd = open_fn();
    if (fd >= 0 || (errno != EMFILE && errno != ENFILE)) return fd;
    const int err = errno;
    absl::MutexLock lock(&mu_);
    if (fds_.empty()) {
      errno = err;
      return -1;
    }
    ::close(fds_.back());
    fds_.pop_back();
  }
}

int DescriptorReserve::held() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(fds_.size());
}

}  // namespace xlstmd::base
