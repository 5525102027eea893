#include "kernels/cpu/cpu_backend.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_quant.h"
#include "kernels/cpu/mlstm_cpu.h"
#include "kernels/cpu/paper_cpu.h"

namespace xlstmd::kernels::cpu {
namespace {

constexpr size_t kAlign = 64;
constexpr size_t kHugePage = size_t{2} << 20;
// From this size on, blocks come from mmap at 2 MiB alignment so THP can back them.
constexpr size_t kHugeAllocBytes = kHugePage;
// Host <-> device copies from this size on are split across the pool: the batch-64 logits
// (64 x 50304 f32, 13 MB per step) took ~1 ms as one memcpy on one core while the other
// spun, and one core cannot saturate DRAM (~10 GB/s alone, ~2x that on two).
constexpr size_t kParallelCopyBytes = size_t{1} << 20;

size_t RoundUp(size_t v, size_t to) { return (v + to - 1) / to * to; }

bool ValidDType(DType t) { return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16; }

cpu::Isa ClampIsa(cpu::Isa want) {
  const CpuFeatures f = DetectCpuFeatures();
  const cpu::Isa best = f.avx512 ? Isa::kAvx512 : (f.avx2_fma ? Isa::kAvx2 : Isa::kScalar);
  return static_cast<int>(want) <= static_cast<int>(best) ? want : best;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(const BackendOptions& options,
                                                               cpu::Isa isa) {
  if (options.weight_dtype != DType::kF32 && options.weight_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("cpu backend: weight dtype ",
                                                   DTypeName(options.weight_dtype),
                                                   " is not supported (use f32 or bf16)"));
  }
  if (options.math != MathMode::kExact) {
    return absl::InvalidArgumentError(absl::StrCat("cpu backend: math ",
                                                   MathModeName(options.math),
                                                   " is CUDA-only; the CPU computes in f32"));
  }
  int threads = options.threads;
  if (threads <= 0) threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  return std::unique_ptr<CpuBackend>(new CpuBackend(threads, options.weight_dtype, ClampIsa(isa)));
}

CpuBackend::CpuBackend(int threads, DType weight_dtype, cpu::Isa isa)
    : weight_dtype_(weight_dtype), isa_(isa), pool_(threads) {}

CpuBackend::~CpuBackend() {
  // Whatever the caller leaked still has to go back to the kernel.
  for (const auto& [p, bytes] : mapped_) munmap(p, bytes);
}

std::string CpuBackend::Isa() const { return IsaName(isa_); }

DeviceInfo CpuBackend::Info() const {
  DeviceInfo d;
  d.description = absl::StrCat("cpu, ", IsaName(isa_), ", ", pool_.Threads(), " threads");
  return d;
}

absl::StatusOr<void*> CpuBackend::Alloc(size_t bytes) {
  if (bytes < kHugeAllocBytes) {
    void* p = nullptr;
    // Alloc(0) still returns a unique, freeable pointer.
    if (posix_memalign(&p, kAlign, RoundUp(std::max<size_t>(bytes, 1), kAlign)) != 0) {
      return absl::ResourceExhaustedError(absl::StrCat("cpu backend: cannot allocate ", bytes,
                                                       " bytes"));
    }
    std::memset(p, 0, bytes);
    return p;
  }
  if (bytes > (size_t{1} << 62)) {
    return absl::ResourceExhaustedError(absl::StrCat("cpu backend: cannot allocate ", bytes,
                                                     " bytes"));
  }
  // Over-map by one huge page, then trim both ends so the block starts on a 2 MiB boundary.
  const size_t size = RoundUp(bytes, kHugePage);
  void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
  if (raw == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat("cpu backend: cannot map ", bytes,
                                                     " bytes: ", std::strerror(errno)));
  }
  const uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = RoundUp(begin, kHugePage);
  if (aligned > begin) munmap(raw, aligned - begin);
  const size_t tail = (begin + size + kHugePage) - (aligned + size);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + size), tail);
  void* p = reinterpret_cast<void*>(aligned);
  madvise(p, size, MADV_HUGEPAGE);  // Advisory: failure (no THP) only costs speed.
  std::lock_guard<std::mutex> lock(alloc_mu_);
  mapped_.emplace(p, size);
  return p;
}

void CpuBackend::Free(void* p) {
  if (p == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(alloc_mu_);
    auto it = mapped_.find(p);
    if (it != mapped_.end()) {
      munmap(p, it->second);
      mapped_.erase(it);
      return;
    }
  }
  std::free(p);
}

// "Pinned" host memory is device memory here: both are plain host memory.
absl::StatusOr<void*> CpuBackend::AllocHost(size_t bytes) { return Alloc(bytes); }
void CpuBackend::FreeHost(void* p) { Free(p); }

void CpuBackend::ParallelCopy(void* dst, const void* src, size_t bytes) {
  if (bytes < kParallelCopyBytes || pool_.Threads() == 1) {
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return;
  }
  // Cache-line-sized units, so no two threads write the same line.
  const int64_t lines = static_cast<int64_t>((bytes + kAlign - 1) / kAlign);
  pool_.ParallelFor(lines, 1, [&](int64_t b, int64_t e) {
    const size_t begin = static_cast<size_t>(b) * kAlign;
    const size_t end = std::min(bytes, static_cast<size_t>(e) * kAlign);
    std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin,
                end - begin);
  });
}

void CpuBackend::CopyToDevice(void* dst, const void* src, size_t bytes) {
  ParallelCopy(dst, src, bytes);
}
void CpuBackend::CopyToHost(void* dst, const void* src, size_t bytes) {
  ParallelCopy(dst, src, bytes);
}
void CpuBackend::CopyDeviceToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) std::memmove(dst, src, bytes);
}
void CpuBackend::Memset0(void* dst, size_t bytes) {
  if (bytes > 0) std::memset(dst, 0, bytes);
}

absl::StatusOr<WeightMatrix*> CpuBackend::UploadMatrixAs(const void* src, DType src_dtype,
                                                         int64_t rows, int64_t cols,
                                                         DType storage) {
  if (rows < 0 || cols < 0 || !ValidDType(src_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("UploadMatrix: bad shape [", rows, ", ", cols,
                                                    "] or source dtype"));
  }
  if (src == nullptr && rows > 0 && cols > 0) {
    return absl::InvalidArgumentError("UploadMatrix: null source");
  }
  if (IsQuantized(storage)) return QuantizeAndUpload(src, src_dtype, rows, cols, storage);
  if (storage != DType::kF32 && storage != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("UploadMatrix: cannot store weights as ",
                                                   DTypeName(storage)));
  }
  const size_t esize = DTypeSize(storage);
  // Rows padded to 64 bytes: aligned vector loads, and the zero tail is harmless to read.
  const int64_t ld = static_cast<int64_t>(RoundUp(static_cast<size_t>(cols), kAlign / esize));
  size_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<size_t>(rows), static_cast<size_t>(ld) * esize,
                             &bytes)) {
    return absl::ResourceExhaustedError("UploadMatrix: matrix too large");
  }
  absl::StatusOr<void*> data = Alloc(bytes);
  if (!data.ok()) return data.status();
  const size_t src_row_bytes = static_cast<size_t>(cols) * DTypeSize(src_dtype);
  for (int64_t r = 0; r < rows; ++r) {
    ConvertFloatRow(static_cast<const char*>(src) + static_cast<size_t>(r) * src_row_bytes,
                    src_dtype, storage, cols,
                    static_cast<char*>(*data) + static_cast<size_t>(r * ld) * esize);
  }
  auto* w = new CpuMatrix(storage, rows, cols, ld, *data, nullptr, bytes);
  if (isa_ == cpu::Isa::kScalar) return w;
  // AVX-512 and AVX2 keep only the packed copy (gemm.h; Embed reads it too): the row-major one
  // was staging and is dropped, so weight memory is not doubled.
  const size_t packed_bytes = PackedGemmBytes(storage, rows, cols);
  absl::StatusOr<void*> packed = Alloc(packed_bytes);
  if (!packed.ok()) {
    FreeMatrix(w);
    return packed.status();
  }
  PackGemmWeights(*w, *packed);
  Free(w->data);
  w->data = nullptr;
  w->packed = *packed;
  w->bytes = packed_bytes;
  return w;
}

absl::StatusOr<WeightMatrix*> CpuBackend::QuantizeAndUpload(const void* src, DType src_dtype,
                                                            int64_t rows, int64_t cols,
                                                            DType storage) {
  // Row by row through f32 into the canonical layout, then packed (gemm_quant.h).
  const size_t code_row = QuantCodeBytesPerRow(storage, cols);
  const size_t scale_row = QuantScaleBytesPerRow(storage, cols);
  std::vector<uint8_t> codes(static_cast<size_t>(rows) * code_row);
  std::vector<uint8_t> scales(static_cast<size_t>(rows) * scale_row);
  std::vector<float> row(static_cast<size_t>(cols));
  const size_t src_row_bytes = static_cast<size_t>(cols) * DTypeSize(src_dtype);
  for (int64_t r = 0; r < rows; ++r) {
    ConvertFloatRow(static_cast<const char*>(src) + static_cast<size_t>(r) * src_row_bytes,
                    src_dtype, DType::kF32, cols, row.data());
    absl::Status s = QuantizeRow(storage, row.data(), cols, codes.data() + r * code_row,
                                 scales.data() + r * scale_row);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("row ", r, ": ", s.message()));
  }
  return UploadQuantized(QuantizedMatrixView{storage, rows, cols, codes.data(), scales.data()});
}

absl::StatusOr<WeightMatrix*> CpuBackend::UploadQuantized(const QuantizedMatrixView& m) {
  absl::Status valid = ValidateQuantized(m);
  if (!valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("UploadQuantized: ", valid.message()));
  }
  const size_t bytes = QuantPackedBytes(m.dtype, m.rows, m.cols);
  absl::StatusOr<void*> packed = Alloc(bytes);
  if (!packed.ok()) return packed.status();
  PackQuantized(m, *packed);
  return new CpuMatrix(m.dtype, m.rows, m.cols, m.cols, nullptr, *packed, bytes);
}

void CpuBackend::FreeMatrix(WeightMatrix* m) {
  if (m == nullptr) return;
  auto* w = static_cast<CpuMatrix*>(m);
  Free(w->data);
  Free(w->packed);
  delete w;
}

absl::Status CpuBackend::StartOpTiming() {
  timing_ = true;
  times_ = OpTimes{};
  return absl::OkStatus();
}

absl::StatusOr<OpTimes> CpuBackend::StopOpTiming() {
  if (!timing_) return absl::FailedPreconditionError("StopOpTiming without StartOpTiming");
  timing_ = false;
  OpTimes t = times_;
  if (t.ops > 0) {
    t.span_ms = std::chrono::duration<double, std::milli>(last_op_ - first_op_).count();
  }
  return t;
}

void CpuBackend::Account(OpKind kind, std::chrono::steady_clock::time_point start,
                         std::chrono::steady_clock::time_point end) {
  const double ms = std::chrono::duration<double, std::milli>(end - start).count();
  double* sum = kind == OpKind::kGemm    ? &times_.gemm_ms
                : kind == OpKind::kMlstm ? &times_.mlstm_ms
                                         : &times_.rowops_ms;
  *sum += ms;
  if (times_.ops++ == 0) first_op_ = start;
  last_op_ = end;
}

void CpuBackend::MatMul(const MatMulParams& p) {
  Timed(OpKind::kGemm, [&] { Gemm(pool_, isa_, p); });
}
void CpuBackend::RmsNorm(const RmsNormParams& p) {
  Timed(OpKind::kRowOps, [&] { cpu::RmsNorm(pool_, p); });
}
void CpuBackend::Embed(const EmbedParams& p) {
  Timed(OpKind::kRowOps, [&] { cpu::Embed(pool_, p); });
}
void CpuBackend::BiasSoftCap(const BiasSoftCapParams& p) {
  Timed(OpKind::kRowOps, [&] { cpu::BiasSoftCap(pool_, p, isa_); });
}
void CpuBackend::SwiGlu(const SwiGluParams& p) {
  Timed(OpKind::kRowOps, [&] { cpu::SwiGlu(pool_, p, isa_); });
}
void CpuBackend::HeadNormGate(const HeadNormGateParams& p) {
  Timed(OpKind::kRowOps, [&] { cpu::HeadNormGate(pool_, p, isa_); });
}
void CpuBackend::MlstmStep(const MlstmStepParams& p) {
  Timed(OpKind::kMlstm, [&] { cpu::MlstmStep(pool_, p, isa_); });
}
void CpuBackend::MlstmChunkwise(const MlstmChunkParams& p) {
  Timed(OpKind::kMlstm, [&] { cpu::MlstmChunkwise(pool_, p, isa_); });
}
void CpuBackend::GatherRows(const GatherRowsParams& p) {
  Timed(OpKind::kRowOps, [&] { cpu::GatherRows(pool_, p); });
}
void CpuBackend::Headwise(const HeadwiseParams& p) {
  Timed(OpKind::kGemm, [&] { cpu::Headwise(pool_, p, isa_); });
}
void CpuBackend::CausalConv(const CausalConvParams& p) {
  Timed(OpKind::kMlstm, [&] { cpu::CausalConv(pool_, p, isa_); });
}
void CpuBackend::SlstmSequence(const SlstmParams& p) {
  Timed(OpKind::kMlstm, [&] { cpu::SlstmSequence(pool_, p, isa_); });
}

}  // namespace xlstmd::kernels::cpu
