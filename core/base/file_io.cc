#include "core/base/file_io.h"

#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace xlstmd::base {
namespace {

// Linux moves at most ~2 GiB per call; 1 GiB chunks keep partial-write handling simple.
constexpr size_t kMaxChunk = size_t{1} << 30;

// offset < 0: write(2) at the file position; otherwise pwrite(2) from `offset` on.
absl::Status WriteLoop(int fd, const void* data, size_t n, int64_t offset,
                       const std::filesystem::path& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const size_t chunk = std::min(n, kMaxChunk);
    const ssize_t w =
        offset < 0 ? ::write(fd, p, chunk) : ::pwrite(fd, p, chunk, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return IoError(path, "write", errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
    if (offset >= 0) offset += w;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status IoError(const std::filesystem::path& path, absl::string_view op, int err) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrCat(path.string(), ": ", op, ": ", std::strerror(err)));
}

absl::Status WriteAll(int fd, const void* data, size_t n, const std::filesystem::path& path) {
  return WriteLoop(fd, data, n, -1, path);
}

absl::Status PwriteAll(int fd, const void* data, size_t n, uint64_t offset,
                       const std::filesystem::path& path) {
  return WriteLoop(fd, data, n, static_cast<int64_t>(offset), path);
}

absl::Status WriteTextFile(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out.good()) return absl::InternalError(absl::StrCat(tmp.string(), ": write failed"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path.string(), ": rename: ", ec.message()));
  return absl::OkStatus();
}

}  // namespace xlstmd::base
