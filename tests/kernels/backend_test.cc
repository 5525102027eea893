// The backend registry and the CPU backend's memory and weight handling: names and errors,
// Alloc alignment and zeroing, UploadMatrix conversions bit by bit (round-to-nearest-even
// with ties and NaN, every f16 pattern), row padding, and concurrent uploads.
#include "kernels/backend_registry.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_matrix.h"
#include "kernels/cpu/gemm.h"
#include "tests/testing/reference_ops.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::kernels {
namespace {

using ::testing::HasSubstr;
using ::xlstmd::testing::IsOk;
using ::xlstmd::testing::ReferenceF16ToF32;
using ::xlstmd::testing::ReferenceF32ToBf16;
using ::xlstmd::testing::StatusIs;

std::unique_ptr<cpu::CpuBackend> MakeCpu(DType storage, int threads = 1,
                                         cpu::Isa isa = cpu::SelectIsa()) {
  BackendOptions o;
  o.threads = threads;
  o.weight_dtype = storage;
  auto be = cpu::CpuBackend::Create(o, isa);
  EXPECT_THAT(be, IsOk());
  return std::move(*be);
}

// Uploads `src` as a [1, n] matrix and returns the stored row as raw 16- or 32-bit words.
template <typename Word, typename Src>
std::vector<Word> UploadRow(Backend& be, const std::vector<Src>& src, DType src_dtype) {
  auto m = be.UploadMatrix(src.data(), src_dtype, 1, static_cast<int64_t>(src.size()));
  EXPECT_THAT(m, IsOk());
  WeightMatrixPtr owner(*m, WeightMatrixDeleter{&be});
  const cpu::CpuMatrix* w = cpu::CpuMat(owner.get());
  if (w->data == nullptr) {  // AVX-512 and AVX2 backends keep only the packed copy (gemm.h)
    const Word* d = static_cast<const Word*>(w->packed);
    std::vector<Word> out(src.size());
    for (size_t c = 0; c < out.size(); ++c) {
      out[c] = d[cpu::PackedGemmIndex(w->dtype, 0, static_cast<int64_t>(c), w->cols)];
    }
    return out;
  }
  const Word* d = static_cast<const Word*>(w->data);
  return std::vector<Word>(d, d + src.size());
}

TEST(BackendRegistryTest, CpuAndAutoWork) {
  EXPECT_THAT(CompiledBackends(), ::testing::Contains("cpu"));
  std::string why;
  auto cpu = CreateBackend("cpu", BackendOptions{}, &why);
  ASSERT_THAT(cpu, IsOk());
  EXPECT_EQ((*cpu)->Name(), "cpu");
  EXPECT_EQ(why, "requested");
  EXPECT_GE((*cpu)->Threads(), 1);  // threads <= 0: one per core
  EXPECT_EQ((*cpu)->WeightDType(), DType::kBF16);
  auto any = CreateBackend("auto", BackendOptions{}, &why);
  ASSERT_THAT(any, IsOk());
  // "auto" says why it chose, as one token for the startup line.
  EXPECT_EQ(why.rfind("auto:", 0), 0u) << why;
  EXPECT_EQ(why.find_first_of(" ="), std::string::npos) << why;
  if ((*any)->Name() == "cpu") {
    EXPECT_NE(why, "auto:cuda_device_usable");
  } else {
    EXPECT_EQ(why, "auto:cuda_device_usable");
  }
}

// Without a usable GPU (always so in CI), "cuda" fails with UNAVAILABLE saying why, whether
// or not the build has the CUDA backend; "auto" then serves on the CPU.
TEST(BackendRegistryTest, CudaWithoutADeviceIsUnavailable) {
  auto be = CreateBackend("cuda", {});
  if (be.ok()) GTEST_SKIP() << "a CUDA device is usable on this machine";
  EXPECT_THAT(be, StatusIs(absl::StatusCode::kUnavailable,
                           ::testing::AnyOf(HasSubstr("CUDA device"), HasSubstr("no CUDA backend"))));
  EXPECT_THAT(CreateBackend("cuda:1", {}), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(CreateBackend("cuda:9999", {}), StatusIs(absl::StatusCode::kUnavailable));
  auto any = CreateBackend("auto", {});
  ASSERT_THAT(any, IsOk());
  EXPECT_EQ((*any)->Name(), "cpu");
}

// --cuda-math bf16 is a CUDA numerics mode: an explicit CPU backend refuses it, and "auto"
// landing on the CPU computes exactly and says so through Math().
TEST(BackendRegistryTest, Bf16MathNeedsCuda) {
  BackendOptions o;
  o.math = MathMode::kBf16;
  EXPECT_THAT(CreateBackend("cpu", o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs the CUDA backend")));
  EXPECT_THAT(cpu::CpuBackend::Create(o), StatusIs(absl::StatusCode::kInvalidArgument));
  auto any = CreateBackend("auto", o);
  ASSERT_THAT(any, IsOk());
  if ((*any)->Name() == "cpu") {
    EXPECT_EQ((*any)->Math(), MathMode::kExact);
  } else {
    EXPECT_EQ((*any)->Math(), MathMode::kBf16);
    EXPECT_EQ((*any)->WeightDType(), DType::kBF16);  // bf16 math stores bf16 weights
  }
  auto exact = CreateBackend("cpu", BackendOptions{});
  ASSERT_THAT(exact, IsOk());
  EXPECT_EQ((*exact)->Math(), MathMode::kExact);
}

// The bench's split of a pass: each op's time goes to its class, the span covers them all,
// and timing stops cleanly (a second Stop is an error, not stale totals).
TEST(CpuBackendTest, OpTimingSplitsByClass) {
  auto be = cpu::CpuBackend::Create(BackendOptions{1, DType::kF32});
  ASSERT_THAT(be, IsOk());
  const int64_t n = 256, k = 512, m = 16;
  std::vector<float> w(n * k, 0.01f), x(m * k, 1.0f), y(m * n), g(n, 1.0f);
  auto wm = (*be)->UploadMatrix(w.data(), DType::kF32, n, k);
  ASSERT_THAT(wm, IsOk());
  WeightMatrixPtr pw(*wm, {be->get()});
  EXPECT_THAT((*be)->StopOpTiming(), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT((*be)->StartOpTiming(), IsOk());
  (*be)->MatMul({x.data(), pw.get(), y.data(), m, k, n, false});
  (*be)->MatMul({x.data(), pw.get(), y.data(), m, k, n, false});
  (*be)->RmsNorm({y.data(), g.data(), nullptr, y.data(), m, n, n, n, 1e-6f});
  auto t = (*be)->StopOpTiming();
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->ops, 3);
  EXPECT_GT(t->gemm_ms, 0.0);
  EXPECT_GE(t->rowops_ms, 0.0);
  EXPECT_EQ(t->mlstm_ms, 0.0);
  EXPECT_GE(t->span_ms, t->gemm_ms + t->rowops_ms - 1e-9);
  EXPECT_GE(t->gaps_ms(), -1e-9);
  EXPECT_THAT((*be)->StopOpTiming(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(BackendRegistryTest, MathModeNamesRoundTrip) {
  for (MathMode m : {MathMode::kExact, MathMode::kBf16}) {
    const absl::StatusOr<MathMode> parsed = ParseMathMode(MathModeName(m));
    ASSERT_THAT(parsed, IsOk());
    EXPECT_EQ(*parsed, m);
  }
  EXPECT_THAT(ParseMathMode("tf32"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exact, bf16")));
}

TEST(BackendRegistryTest, UnknownNameListsValidOnes) {
  for (const char* name : {"tpu", "", "CPU", "cuda:", "cuda:x", "cuda:12345", "cuda:-1"}) {
    EXPECT_THAT(CreateBackend(name, {}),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("valid names: cpu")))
        << name;
  }
}

TEST(CpuBackendTest, RejectsF16Storage) {
  BackendOptions o;
  o.weight_dtype = DType::kF16;
  EXPECT_THAT(cpu::CpuBackend::Create(o), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(CpuBackendTest, IsaIsClampedToTheCpu) {
  auto scalar = cpu::CpuBackend::Create({}, cpu::Isa::kScalar);
  ASSERT_THAT(scalar, IsOk());
  EXPECT_EQ((*scalar)->Isa(), "scalar");
  auto best = cpu::CpuBackend::Create({}, cpu::Isa::kAvx512);
  ASSERT_THAT(best, IsOk());
  const cpu::CpuFeatures f = cpu::DetectCpuFeatures();
  EXPECT_EQ((*best)->Isa(), f.avx512 ? "avx512" : (f.avx2_fma ? "avx2" : "scalar"));
}

TEST(CpuBackendTest, AllocIsAlignedAndZeroed) {
  auto be = MakeCpu(DType::kF32);
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{100}, size_t{4096}, size_t{(2 << 20) - 1},
                       size_t{2 << 20}, size_t{5 << 20}}) {
    auto p = be->Alloc(bytes);
    ASSERT_THAT(p, IsOk());
    ASSERT_NE(*p, nullptr);
    const uintptr_t a = reinterpret_cast<uintptr_t>(*p);
    EXPECT_EQ(a % 64, 0u) << bytes;
    if (bytes >= (2u << 20)) {
      EXPECT_EQ(a % (2u << 20), 0u) << bytes;
    }
    const unsigned char* c = static_cast<const unsigned char*>(*p);
    size_t nonzero = 0;
    for (size_t i = 0; i < bytes; ++i) nonzero += c[i] != 0;
    EXPECT_EQ(nonzero, 0u) << bytes;
    be->Memset0(*p, bytes);
    be->Free(*p);
  }
  be->Free(nullptr);
}

TEST(CpuBackendTest, AllocTooLargeIsResourceExhausted) {
  auto be = MakeCpu(DType::kF32);
  EXPECT_THAT(be->Alloc(size_t{1} << 62), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(be->Alloc(~size_t{0}), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(CpuBackendTest, CopiesRoundTrip) {
  auto be = MakeCpu(DType::kF32);
  std::vector<int> src(1000), back(1000);
  for (int i = 0; i < 1000; ++i) src[i] = i * 7;
  auto a = be->Alloc(4000), b = be->Alloc(4000);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  be->CopyToDevice(*a, src.data(), 4000);
  be->CopyDeviceToDevice(*b, *a, 4000);
  be->CopyToHost(back.data(), *b, 4000);
  EXPECT_EQ(src, back);
  be->Free(*a);
  be->Free(*b);
}

TEST(CpuBackendTest, F32ToBf16RoundsToNearestEven) {
  auto be = MakeCpu(DType::kBF16);
  const std::vector<uint32_t> bits = {
      0x3F800000,  // 1.0: exact
      0x3F808000,  // tie, even below -> down
      0x3F818000,  // tie, odd below -> up to even
      0x3F808001,  // just above the tie -> up
      0x3F807FFF,  // just below the tie -> down
      0xBF818000,  // negative tie -> away to even
      0x7F7FFFFF,  // largest float -> rounds to +inf
      0x7F800000, 0xFF800000,  // +-inf
      0x7FC00000,  // quiet NaN
      0x7F800001,  // NaN whose payload is only in the low bits: must stay NaN
      0xFF812345,  // negative signalling NaN
      0x80000000,  // -0
      0x00008000,  // subnormal tie -> 0
      0x00018000,  // subnormal tie, odd -> 2
  };
  const std::vector<uint16_t> want = {0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x3F80, 0xBF82, 0x7F80,
                                      0x7F80, 0xFF80, 0x7FC0, 0x7FC0, 0xFFC1, 0x8000, 0x0000,
                                      0x0002};
  std::vector<float> src;
  for (uint32_t b : bits) src.push_back(std::bit_cast<float>(b));
  const std::vector<uint16_t> got = UploadRow<uint16_t>(*be, src, DType::kF32);
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(got[i], want[i]) << std::hex << "input 0x" << bits[i];
  }
  // And agreement with the independent reference on many random patterns.
  std::mt19937 rng(11);
  std::vector<float> rand(100000);
  for (float& f : rand) f = std::bit_cast<float>(static_cast<uint32_t>(rng()));
  const std::vector<uint16_t> out = UploadRow<uint16_t>(*be, rand, DType::kF32);
  for (size_t i = 0; i < rand.size(); ++i) {
    if (std::isnan(rand[i])) {
      EXPECT_TRUE(std::isnan(std::bit_cast<float>(static_cast<uint32_t>(out[i]) << 16)));
    } else {
      ASSERT_EQ(out[i], ReferenceF32ToBf16(rand[i])) << std::hex << std::bit_cast<uint32_t>(rand[i]);
    }
  }
}

TEST(CpuBackendTest, F16ConvertsExactlyForEveryPattern) {
  auto f32 = MakeCpu(DType::kF32);
  auto bf16 = MakeCpu(DType::kBF16);
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  const std::vector<uint32_t> as_f32 = UploadRow<uint32_t>(*f32, all, DType::kF16);
  const std::vector<uint16_t> as_bf16 = UploadRow<uint16_t>(*bf16, all, DType::kF16);
  for (int i = 0; i < 65536; ++i) {
    const float want = ReferenceF16ToF32(all[i]);
    const float got = std::bit_cast<float>(as_f32[i]);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << i;
      ASSERT_TRUE(std::isnan(std::bit_cast<float>(static_cast<uint32_t>(as_bf16[i]) << 16))) << i;
      continue;
    }
    ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want)) << std::hex << i;
    ASSERT_EQ(as_bf16[i], ReferenceF32ToBf16(want)) << std::hex << i;
  }
  EXPECT_EQ(std::bit_cast<float>(as_f32[0x3C00]), 1.0f);
  EXPECT_EQ(std::bit_cast<float>(as_f32[0x0001]), std::ldexp(1.0f, -24));
  EXPECT_EQ(std::bit_cast<float>(as_f32[0x7BFF]), 65504.0f);
  EXPECT_EQ(std::bit_cast<float>(as_f32[0xFC00]), -INFINITY);
}

TEST(CpuBackendTest, Bf16AndF32InputsAreCopiedOrWidened) {
  auto f32 = MakeCpu(DType::kF32);
  auto bf16 = MakeCpu(DType::kBF16);
  const std::vector<uint16_t> b = {0x3F80, 0x7FC1, 0xFF80, 0x0001, 0x8000, 0x7F81};
  EXPECT_EQ(UploadRow<uint16_t>(*bf16, b, DType::kBF16), b);  // bit copy, NaN payloads too
  const std::vector<uint32_t> widened = UploadRow<uint32_t>(*f32, b, DType::kBF16);
  for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(widened[i], static_cast<uint32_t>(b[i]) << 16);
  const std::vector<float> f = {1.5f, -0.0f, 3.0e38f, std::nanf("")};
  const std::vector<uint32_t> copied = UploadRow<uint32_t>(*f32, f, DType::kF32);
  for (size_t i = 0; i < f.size(); ++i) EXPECT_EQ(copied[i], std::bit_cast<uint32_t>(f[i]));
}

// The row-major layout of `data` (kept by the AVX2 and scalar backends).
// The row-major layout, which only the scalar backend keeps (AVX2 and AVX-512 keep the packed
// copy alone).
TEST(CpuBackendTest, RowsArePaddedWithZeros) {
  for (DType storage : {DType::kF32, DType::kBF16}) {
    auto be = MakeCpu(storage, /*threads=*/1, cpu::Isa::kScalar);
    const int64_t rows = 3, cols = 37;
    std::vector<float> src(rows * cols, 2.0f);
    auto m = be->UploadMatrix(src.data(), DType::kF32, rows, cols);
    ASSERT_THAT(m, IsOk());
    WeightMatrixPtr owner(*m, WeightMatrixDeleter{be.get()});
    const cpu::CpuMatrix* w = cpu::CpuMat(owner.get());
    EXPECT_EQ(be->MatrixRows(w), rows);
    EXPECT_EQ(be->MatrixCols(w), cols);
    EXPECT_EQ(w->dtype, storage);
    EXPECT_GE(w->ld, cols);
    const size_t esize = DTypeSize(storage);
    EXPECT_EQ(w->ld * esize % 64, 0u);
    EXPECT_GE(be->MatrixBytes(w), rows * w->ld * esize);
    const unsigned char* d = static_cast<const unsigned char*>(w->data);
    for (int64_t r = 0; r < rows; ++r) {
      for (size_t byte = cols * esize; byte < w->ld * esize; ++byte) {
        EXPECT_EQ(d[r * w->ld * esize + byte], 0) << r << " " << byte;
      }
    }
  }
}

TEST(CpuBackendTest, UploadRejectsBadArguments) {
  auto be = MakeCpu(DType::kBF16);
  float one = 1.0f;
  EXPECT_THAT(be->UploadMatrix(&one, DType::kF32, -1, 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(be->UploadMatrix(nullptr, DType::kF32, 2, 2),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(CpuBackendTest, ConcurrentUploadsAndMatMulThroughTheBackend) {
  auto be = MakeCpu(DType::kBF16, /*threads=*/2);
  const int64_t n = 70, k = 45;
  std::vector<float> src(n * k);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i % 13) - 6.0f;
  std::vector<WeightMatrix*> out(8, nullptr);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto m = be->UploadMatrix(src.data(), DType::kF32, n, k);
      if (m.ok()) out[t] = *m;
    });
  }
  for (auto& t : threads) t.join();
  const std::vector<float> x(k, 0.5f);
  for (WeightMatrix* w : out) {
    ASSERT_NE(w, nullptr);
    std::vector<float> y(n);
    be->MatMul({x.data(), w, y.data(), 1, k, n, false});
    for (int64_t j = 0; j < n; ++j) {
      double want = 0;  // small integers: exact in bf16 and in f32 sums
      for (int64_t c = 0; c < k; ++c) want += 0.5 * src[j * k + c];
      EXPECT_EQ(y[j], want) << j;
    }
    be->FreeMatrix(w);
  }
}

}  // namespace
}  // namespace xlstmd::kernels
