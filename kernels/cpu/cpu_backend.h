// The CPU backend: host memory, a fixed ThreadPool, and run-time ISA dispatch.
//
// "Device" memory is ordinary host memory: Alloc returns zeroed, 64-byte aligned blocks (large
// ones are 2 MiB aligned and advised for transparent huge pages), and the Copy* methods are
// memcpy. Weight matrices are stored as f32 or bf16 (BackendOptions::weight_dtype, or per
// matrix) with each row padded to a 64-byte multiple so that vector loads never split a cache
// line (the padding is zero), or quantized (int8, q4) in the layout of gemm_quant.h. Ops run synchronously on the pool, split by output column (GEMM) or row (row-wise
// ops). As for every Backend, only one thread may call ops/Alloc/Free; UploadMatrix and
// FreeMatrix may be called concurrently.
#ifndef XLSTMD_KERNELS_CPU_CPU_BACKEND_H_
#define XLSTMD_KERNELS_CPU_CPU_BACKEND_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/cpu_matrix.h"
#include "kernels/cpu/thread_pool.h"

namespace xlstmd::kernels::cpu {

class CpuBackend final : public Backend {
 public:
  // `isa` is clamped to what this CPU supports (tests pass kAvx2/kScalar to force the
  // fallbacks). Fails with INVALID_ARGUMENT unless options.weight_dtype is kF32 or kBF16.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(const BackendOptions& options,
                                                            cpu::Isa isa = SelectIsa());
  ~CpuBackend() override;

  std::string Name() const override { return "cpu"; }
  std::string Isa() const override;
  int Threads() const override { return pool_.Threads(); }
  DType WeightDType() const override { return weight_dtype_; }
  cpu::Isa SelectedIsa() const { return isa_; }

  bool HostVisible() const override { return true; }
  DeviceInfo Info() const override;
  absl::StatusOr<void*> Alloc(size_t bytes) override;
  void Free(void* p) override;
  absl::StatusOr<void*> AllocHost(size_t bytes) override;
  void FreeHost(void* p) override;
  void CopyToDevice(void* dst, const void* src, size_t bytes) override;
  void CopyToHost(void* dst, const void* src, size_t bytes) override;
  void CopyDeviceToDevice(void* dst, const void* src, size_t bytes) override;
  void Memset0(void* dst, size_t bytes) override;

  absl::StatusOr<WeightMatrix*> UploadMatrixAs(const void* src, DType src_dtype, int64_t rows,
                                               int64_t cols, DType storage) override;
  absl::StatusOr<WeightMatrix*> UploadQuantized(const QuantizedMatrixView& m) override;
  DType MatrixDType(const WeightMatrix* w) const override { return CpuMat(w)->dtype; }
  void FreeMatrix(WeightMatrix* w) override;
  int64_t MatrixRows(const WeightMatrix* w) const override { return CpuMat(w)->rows; }
  int64_t MatrixCols(const WeightMatrix* w) const override { return CpuMat(w)->cols; }
  size_t MatrixBytes(const WeightMatrix* w) const override { return CpuMat(w)->bytes; }

  void MatMul(const MatMulParams& p) override;
  void RmsNorm(const RmsNormParams& p) override;
  void Embed(const EmbedParams& p) override;
  void BiasSoftCap(const BiasSoftCapParams& p) override;
  void SwiGlu(const SwiGluParams& p) override;
  void HeadNormGate(const HeadNormGateParams& p) override;
  void MlstmStep(const MlstmStepParams& p) override;
  void MlstmChunkwise(const MlstmChunkParams& p) override;
  void GatherRows(const GatherRowsParams& p) override;
  void Headwise(const HeadwiseParams& p) override;
  void CausalConv(const CausalConvParams& p) override;
  void SlstmSequence(const SlstmParams& p) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }
  absl::Status StartOpTiming() override;
  absl::StatusOr<OpTimes> StopOpTiming() override;

 private:
  CpuBackend(int threads, DType weight_dtype, cpu::Isa isa);
  absl::StatusOr<WeightMatrix*> QuantizeAndUpload(const void* src, DType src_dtype, int64_t rows,
                                                  int64_t cols, DType storage);
  // memcpy, split across the pool for large copies (the caller-thread rule of backend.h
  // makes the pool free to use here).
  void ParallelCopy(void* dst, const void* src, size_t bytes);

  // Ops run synchronously, so the host clock around each one is its time.
  enum class OpKind { kGemm, kMlstm, kRowOps };
  template <typename F>
  void Timed(OpKind kind, F&& op) {
    if (!timing_) return op();
    const auto start = std::chrono::steady_clock::now();
    op();
    Account(kind, start, std::chrono::steady_clock::now());
  }
  void Account(OpKind kind, std::chrono::steady_clock::time_point start,
               std::chrono::steady_clock::time_point end);

  // Blocks of at least kHugeAllocBytes are mmap'ed (zero pages come for free and are only
  // committed when touched); their sizes are kept here so Free can munmap them.
  std::mutex alloc_mu_;
  std::unordered_map<void*, size_t> mapped_;  // guarded by alloc_mu_

  const DType weight_dtype_;
  const cpu::Isa isa_;
  ThreadPool pool_;
  bool timing_ = false;
  OpTimes times_;
  std::chrono::steady_clock::time_point first_op_, last_op_;
};

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_CPU_BACKEND_H_
