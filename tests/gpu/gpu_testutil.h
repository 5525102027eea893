// Shared pieces of the `gpu` test label: the CUDA backend or a skip that says why (a failure
// under XLSTMD_REQUIRE_GPU=1), and host <-> device arrays over the Backend seam.
#ifndef XLSTMD_TESTS_GPU_GPU_TESTUTIL_H_
#define XLSTMD_TESTS_GPU_GPU_TESTUTIL_H_

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/backend_registry.h"

namespace xlstmd::testing {

inline bool RequireGpu() {
  const char* v = std::getenv("XLSTMD_REQUIRE_GPU");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

// The CUDA backend, or nullptr with `why` set when this machine or build has none.
inline std::unique_ptr<kernels::Backend> MakeCuda(kernels::DType storage, std::string* why) {
  kernels::BackendOptions o;
  o.weight_dtype = storage;
  auto be = kernels::CreateBackend("cuda", o);
  if (!be.ok()) {
    *why = std::string(be.status().message());
    return nullptr;
  }
  return std::move(*be);
}

// In a fixture's SetUp: skips (or, with XLSTMD_REQUIRE_GPU=1, fails) without a GPU.
#define XLSTMD_GPU_OR_SKIP(backend_ptr, storage)                                         \
  do {                                                                                   \
    std::string why_;                                                                    \
    backend_ptr = ::xlstmd::testing::MakeCuda(storage, &why_);                           \
    if (backend_ptr == nullptr) {                                                        \
      if (::xlstmd::testing::RequireGpu()) FAIL() << "XLSTMD_REQUIRE_GPU=1: " << why_;   \
      GTEST_SKIP() << "no CUDA backend: " << why_;                                       \
    }                                                                                    \
  } while (0)

// A float array in a backend's memory, filled from and read back to the host.
class BackendArray {
 public:
  BackendArray(kernels::Backend* be, const std::vector<float>& host) : be_(be) {
    auto buf = kernels::Allocate(*be, std::max<size_t>(1, host.size()) * sizeof(float));
    EXPECT_TRUE(buf.ok()) << buf.status();
    if (buf.ok()) buf_ = std::move(*buf);
    size_ = host.size();
    if (size_ > 0) be_->CopyToDevice(buf_.get(), host.data(), size_ * sizeof(float));
  }
  float* get() const { return buf_.as<float>(); }
  std::vector<float> Read() const {
    std::vector<float> out(size_);
    if (size_ > 0) be_->CopyToHost(out.data(), buf_.get(), size_ * sizeof(float));
    EXPECT_TRUE(be_->Synchronize().ok());
    return out;
  }

 private:
  kernels::Backend* be_;
  kernels::DeviceBuffer buf_;
  size_t size_ = 0;
};

// Index arrays live in backend memory too.
template <typename T>
class BackendIndex {
 public:
  BackendIndex(kernels::Backend* be, const std::vector<T>& host) {
    auto buf = kernels::Allocate(*be, std::max<size_t>(1, host.size()) * sizeof(T));
    EXPECT_TRUE(buf.ok()) << buf.status();
    if (buf.ok()) buf_ = std::move(*buf);
    if (!host.empty()) be->CopyToDevice(buf_.get(), host.data(), host.size() * sizeof(T));
  }
  const T* get() const { return buf_.as<T>(); }

 private:
  kernels::DeviceBuffer buf_;
};

inline std::vector<float> Gaussian(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> g(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = g(rng);
  return v;
}

// max |a - b| / max(1, max |b|): kernels on the two backends differ only in summation order.
inline double RelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0, scale = 1;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return a.size() == b.size() ? worst / scale : 1e30;
}

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_GPU_GPU_TESTUTIL_H_
