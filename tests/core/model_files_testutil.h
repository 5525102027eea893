// Helpers shared by the model-file tests (config, safetensors, checkpoint): a scratch
// directory that cleans up after itself, raw file writing, and a status-message matcher.
// Test-only; single-threaded use.
#ifndef XLSTMD_TESTS_CORE_MODEL_FILES_TESTUTIL_H_
#define XLSTMD_TESTS_CORE_MODEL_FILES_TESTUTIL_H_

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xlstmd::testing {

// A fresh directory under gtest's TempDir(), removed (with its contents) on destruction.
class ScopedTempDir {
 public:
  ScopedTempDir() {
    std::string tmpl = ::testing::TempDir() + "xlstmd_model_files_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp failed for " << tmpl;
    }
    path_ = tmpl;
  }
  ~ScopedTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline void WriteFile(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "writing " << path;
}

inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A message matcher for StatusIs (tests/testing/status_matchers.h) requiring every one of
// `parts`: EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, MessageHas(path, "x"))).
template <typename... Parts>
auto MessageHas(const Parts&... parts) {
  return ::testing::AllOf(::testing::HasSubstr(std::string(parts))...);
}

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_CORE_MODEL_FILES_TESTUTIL_H_
