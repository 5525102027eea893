// QueuedBackend: a CPU backend that behaves like a device, so the device half of the model and
// the engine (every path taken when Backend::HostVisible() is false) runs in CI without a GPU.
//
// Like a CUDA stream, every op, copy and memset is only queued when issued; the queue runs, in
// order, when the host waits: Synchronize, WaitFence (any thread), a copy to or from pageable
// memory, and Free. Host memory from AllocHost counts as pinned: copies to and from it are
// queued too. So a caller that breaks the Backend contract gets what it would get from a GPU,
// made visible:
// - a pinned copy's destination is filled with 0xff bytes (NaNs) at issue, so a read before
//   the wait sees NaNs, not the data;
// - a pinned copy's source is checksummed at issue and again when the copy runs: a source
//   changed in between is counted as a violation;
// - freeing pinned memory that a queued copy still uses is counted as a violation (the queue
//   is then run first, so the test itself stays well defined).
// With `capture`, it also records op sequences as CUDA graphs do (SupportsCapture, the CUDA
// backend's decode buckets with padding rows): a recording keeps its ops' parameters, Replay
// queues them again, and a copy, fence or wait issued while recording is a violation.
// Results are otherwise those of the wrapped backend, bit for bit.
#ifndef XLSTMD_TESTS_TESTING_QUEUED_BACKEND_H_
#define XLSTMD_TESTS_TESTING_QUEUED_BACKEND_H_

#include <cstdint>
#include <functional>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace xlstmd::testing {

class QueuedBackend final : public kernels::Backend {
 public:
  explicit QueuedBackend(std::unique_ptr<kernels::Backend> inner, bool capture = false);
  ~QueuedBackend() override;

  // A QueuedBackend over a CPU backend with `threads` threads and bf16 weights.
  static std::unique_ptr<QueuedBackend> OverCpu(int threads = 2, bool capture = false);

  // Contract breaks seen so far (see above), and how often the host waited.
  int64_t violations() const;
  int64_t waits() const;
  // Ops issued and not yet run.
  size_t queued() const;
  // From now on the device has failed with `error` (INTERNAL), as with a sticky CUDA error:
  // queued and later work is dropped, and every wait returns the error.
  void FailDevice(std::string error);
  // Recordings made and replayed so far.
  int64_t captures() const;
  int64_t replays() const;

  std::string Name() const override { return "queued-" + inner_->Name(); }
  std::string Isa() const override { return inner_->Isa(); }
  int Threads() const override { return inner_->Threads(); }
  kernels::DType WeightDType() const override { return inner_->WeightDType(); }
  kernels::DeviceInfo Info() const override { return inner_->Info(); }
  absl::Status CheckMlstmDims(const kernels::MlstmDims& dims) const override {
    return inner_->CheckMlstmDims(dims);
  }
  absl::Status CheckSlstmDims(int64_t heads, int64_t dh) const override {
    return inner_->CheckSlstmDims(heads, dh);
  }
  bool HostVisible() const override { return false; }

  absl::StatusOr<void*> Alloc(size_t bytes) override { return inner_->Alloc(bytes); }
  void Free(void* p) override;
  absl::StatusOr<void*> AllocHost(size_t bytes) override;
  void FreeHost(void* p) override;
  void CopyToDevice(void* dst, const void* src, size_t bytes) override;
  void CopyToHost(void* dst, const void* src, size_t bytes) override;
  void CopyDeviceToDevice(void* dst, const void* src, size_t bytes) override;
  void Memset0(void* dst, size_t bytes) override;

  absl::StatusOr<kernels::WeightMatrix*> UploadMatrixAs(const void* src, kernels::DType src_dtype,
                                                        int64_t rows, int64_t cols,
                                                        kernels::DType storage) override {
    return inner_->UploadMatrixAs(src, src_dtype, rows, cols, storage);
  }
  absl::StatusOr<kernels::WeightMatrix*> UploadQuantized(
      const kernels::QuantizedMatrixView& m) override {
    return inner_->UploadQuantized(m);
  }
  kernels::DType MatrixDType(const kernels::WeightMatrix* w) const override {
    return inner_->MatrixDType(w);
  }
  void FreeMatrix(kernels::WeightMatrix* w) override;
  int64_t MatrixRows(const kernels::WeightMatrix* w) const override {
    return inner_->MatrixRows(w);
  }
  int64_t MatrixCols(const kernels::WeightMatrix* w) const override {
    return inner_->MatrixCols(w);
  }
  size_t MatrixBytes(const kernels::WeightMatrix* w) const override {
    return inner_->MatrixBytes(w);
  }

  void MatMul(const kernels::MatMulParams& p) override;
  absl::Status ReserveMatMul(int64_t rows) override;
  size_t MatMulScratchBytes(int64_t rows) const override {
    return inner_->MatMulScratchBytes(rows);
  }
  void RmsNorm(const kernels::RmsNormParams& p) override;
  void Embed(const kernels::EmbedParams& p) override;
  void BiasSoftCap(const kernels::BiasSoftCapParams& p) override;
  void SwiGlu(const kernels::SwiGluParams& p) override;
  void HeadNormGate(const kernels::HeadNormGateParams& p) override;
  void MlstmStep(const kernels::MlstmStepParams& p) override;
  void MlstmChunkwise(const kernels::MlstmChunkParams& p) override;
  void GatherRows(const kernels::GatherRowsParams& p) override;
  void Headwise(const kernels::HeadwiseParams& p) override;
  void CausalConv(const kernels::CausalConvParams& p) override;
  void SlstmSequence(const kernels::SlstmParams& p) override;

  absl::Status Synchronize() override;
  uint64_t RecordFence() override;
  absl::Status WaitFence(uint64_t fence) override;

  bool SupportsCapture() const override { return capture_; }
  int64_t StepBucket(int64_t batch) const override;
  void BeginCapture() override;
  absl::Status EndCapture(int64_t key) override;
  void AbortCapture() override;
  bool Replay(int64_t key) override;
  void DropCaptures() override;

 private:
  struct Op {
    std::function<void()> run;
    const char* host = nullptr;  // pinned host memory the op copies to or from
    size_t bytes = 0;
    bool writes_host = false;
  };
  void Enqueue(Op op);  // or records it, while capturing
  void RunQueue();
  void NotWhileCapturing();  // mu_ held: counts a violation while capturing
  bool IsPinned(const void* p) const;  // mu_ held
  // Whether a queued or running op touches [p, p + bytes) of host memory (writing it, if
  // `writes`).
  bool QueuedUses(const void* p, size_t bytes, bool writes) const;  // mu_ held

  std::unique_ptr<kernels::Backend> inner_;
  const bool capture_;
  std::mutex run_mu_;  // one thread runs the queue at a time; held across the ops
  mutable std::mutex mu_;
  std::deque<Op> queue_;
  Op running_;  // the op being run, taken off queue_ (its run function emptied)
  std::map<const char*, size_t> pinned_;  // AllocHost blocks by start
  bool capturing_ = false;
  std::vector<Op> recording_;
  std::map<int64_t, std::vector<Op>> graphs_;
  int64_t captures_ = 0;
  int64_t replays_ = 0;
  uint64_t fences_ = 0;
  int64_t violations_ = 0;
  int64_t waits_ = 0;
  absl::Status error_;  // sticky
};

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_TESTING_QUEUED_BACKEND_H_
