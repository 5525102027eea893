// An owned POSIX file descriptor, closed on destruction. Close() reports the result, which
// for a file just written can be the only sign of a lost write.
#ifndef XLSTMD_CORE_BASE_SCOPED_FD_H_
#define XLSTMD_CORE_BASE_SCOPED_FD_H_

#include <unistd.h>

#include <utility>

namespace xlstmd::base {

class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  int Close() { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

}  // namespace xlstmd::base

#endif  // XLSTMD_CORE_BASE_SCOPED_FD_H_
