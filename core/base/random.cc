#include "core/base/random.h"

#include <sys/random.h>

#include <cerrno>

#include "core/base/check.h"

namespace xlstmd::base {

void RandomBytes(void* dst, size_t n) {
  auto* p = static_cast<uint8_t*>(dst);
  while (n > 0) {
    const ssize_t got = getrandom(p, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      XLSTMD_CHECK(false && "getrandom failed");
    }
    p += got;
    n -= static_cast<size_t>(got);
  }
}

uint64_t RandomNonZeroU64() {
  uint64_t v = 0;
  while (v == 0) RandomBytes(&v, sizeof(v));
  return v;
}

}  // namespace xlstmd::base
