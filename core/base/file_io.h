// POSIX file-writing helpers shared by the model writer (safetensors, random models) and the
// snapshot store: complete writes that survive short writes and EINTR, and errno-derived
// statuses whose message names the file and the operation. Stateless; any thread.
#ifndef XLSTMD_CORE_BASE_FILE_IO_H_
#define XLSTMD_CORE_BASE_FILE_IO_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace xlstmd::base {

// "<path>: <op>: <strerror(err)>" with the status code that errno `err` maps to.
absl::Status IoError(const std::filesystem::path& path, absl::string_view op, int err);

// Writes all `n` bytes of `data` to `fd` at its file position (write(2)) or, for PwriteAll, at
// `offset` (pwrite(2)), retrying short writes and EINTR. Errors are IoError(path, "write").
// Replaces `path` with `text` atomically (a temporary file beside it, then rename).
absl::Status WriteTextFile(const std::filesystem::path& path, const std::string& text);

absl::Status WriteAll(int fd, const void* data, size_t n, const std::filesystem::path& path);
absl::Status PwriteAll(int fd, const void* data, size_t n, uint64_t offset,
                       const std::filesystem::path& path);

}  // namespace xlstmd::base

#endif  // XLSTMD_CORE_BASE_FILE_IO_H_
