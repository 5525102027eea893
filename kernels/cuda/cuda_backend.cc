// The CUDA backend: device memory, one non-blocking stream per instance, and the kernels of
// cuda_ops.h. Every op is enqueued on the stream; the host waits only in Synchronize and in
// copies to or from pageable memory. A CUDA error is sticky: the first one is kept, every
// later Synchronize reports it as INTERNAL, and the engine stops serving (Scheduler).
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_fences.h"
#include "kernels/cuda/cuda_gemm_lt.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch_plan.h"
#include "kernels/quant.h"

namespace xlstmd::kernels::cuda {
namespace {

std::string ErrorText(cudaError_t e) {
  return absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

struct CudaMatrix final : WeightMatrix {
  DeviceWeights w{};
  DType dtype = DType::kF32;
  size_t bytes = 0;
};

const CudaMatrix* Mat(const WeightMatrix* w) { return static_cast<const CudaMatrix*>(w); }

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, DType weight_dtype, MathMode math, const cudaDeviceProp& prop,
              cudaStream_t stream, std::unique_ptr<PrefillGemm> prefill)
      : device_(device),
        weight_dtype_(weight_dtype),
        math_(math),
        prop_(prop),
        stream_(stream),
        fences_(std::make_unique<StreamFences>(device, stream)),
        prefill_(std::move(prefill)) {}
  ~CudaBackend() override {
    Bind();
    cudaStreamSynchronize(stream_);
    prefill_.reset();
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    fences_.reset();
    cudaStreamDestroy(stream_);
  }

  std::string Name() const override { return absl::StrCat("cuda:", device_); }
  std::string Isa() const override { return absl::StrCat("sm_", prop_.major, prop_.minor); }
  int Threads() const override { return prop_.multiProcessorCount; }
  DType WeightDType() const override { return weight_dtype_; }
  MathMode Math() const override { return math_; }
  bool HostVisible() const override { return false; }
  absl::Status CheckMlstmDims(const MlstmDims& d) const override {
    std::string why;
    const MlstmPlan step = PlanMlstmStep(1, d.heads, d.dqk, d.dv);
    if (step.smem_bytes > prop_.sharedMemPerBlockOptin) {
      why = absl::StrCat("the mLSTM step needs ", step.smem_bytes,
                         " bytes of shared memory per block; the device allows ",
                         prop_.sharedMemPerBlockOptin);
    } else {
      PlanMlstmChunkwise(1, d.heads, d.dqk, d.dv, 1, prop_.sharedMemPerBlockOptin, &why);
    }
    if (why.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(Name(), " (", prop_.name, "): ", why,
                                                   "; serve this model on the CPU"));
  }
  absl::Status CheckSlstmDims(int64_t heads, int64_t dh) const override {
    const SlstmPlan plan = PlanSlstm(1, heads, dh);
    if (plan.smem_bytes <= prop_.sharedMemPerBlockOptin) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        Name(), " (", prop_.name, "): the sLSTM cell with head dim ", dh, " needs ",
        plan.smem_bytes, " bytes of shared memory per block; the device allows ",
        prop_.sharedMemPerBlockOptin, "; serve this model on the CPU"));
  }
  DeviceInfo Info() const override {
    Bind();
    DeviceInfo d;
    d.description = absl::StrCat(prop_.name, ", sm_", prop_.major, prop_.minor, ", ",
                                 prop_.multiProcessorCount, " SMs");
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) == cudaSuccess) {
      d.free_bytes = free;
      d.total_bytes = total;
    } else {
      cudaGetLastError();
    }
    int mem_khz = 0, bus_bits = 0, sm_khz = 0;
    cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device_);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device_);
    cudaDeviceGetAttribute(&sm_khz, cudaDevAttrClockRate, device_);
    cudaGetLastError();
    // Double data rate; 128 FP32 lanes per SM on sm_80/sm_90 data-centre parts.
    d.nominal_gbps = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    d.nominal_fp32_gflops = 2.0 * 128 * prop_.multiProcessorCount * sm_khz * 1e3 / 1e9;
    d.nominal_bf16_mma_gflops =
        MmaFlopsPerClockPerSm(prop_.major, prop_.minor) * prop_.multiProcessorCount * sm_khz / 1e6;
    return d;
  }

  absl::StatusOr<void*> Alloc(size_t bytes) override {
    Bind();
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();  // an allocation failure is not sticky
      return absl::ResourceExhaustedError(
          absl::StrCat(Name(), ": cannot allocate ", bytes, " bytes: ", ErrorText(e)));
    }
    Check(cudaMemsetAsync(p, 0, bytes, stream_));
    return p;
  }
  void Free(void* p) override {
    if (p == nullptr) return;
    Bind();
    Check(cudaFree(p));  // waits for the device, so no queued op still uses p
  }
  absl::StatusOr<void*> AllocHost(size_t bytes) override {
    Bind();
    void* p = nullptr;
    const cudaError_t e = cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(
          absl::StrCat(Name(), ": cannot pin ", bytes, " bytes of host memory: ", ErrorText(e)));
    }
    std::memset(p, 0, bytes);
    pinned_.Add(p, bytes);
    return p;
  }
  void FreeHost(void* p) override {
    if (p == nullptr) return;
    Bind();
    // Copies from or to it may still be queued.
    Check(cudaStreamSynchronize(stream_));
    pinned_.Remove(p);
    Check(cudaFreeHost(p));
  }

  void CopyToDevice(void* dst, const void* src, size_t bytes) override {
    Copy(dst, src, bytes, cudaMemcpyHostToDevice, src);
  }
  void CopyToHost(void* dst, const void* src, size_t bytes) override {
    Copy(dst, src, bytes, cudaMemcpyDeviceToHost, dst);
  }
  void CopyDeviceToDevice(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    Bind();
    Check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void Memset0(void* dst, size_t bytes) override {
    if (bytes == 0) return;
    Bind();
    Check(cudaMemsetAsync(dst, 0, bytes, stream_));
  }

  absl::StatusOr<WeightMatrix*> UploadMatrixAs(const void* src, DType src_dtype, int64_t rows,
                                               int64_t cols, DType storage) override {
    if (rows < 0 || cols < 0 ||
        (src_dtype != DType::kF32 && src_dtype != DType::kBF16 && src_dtype != DType::kF16)) {
      return absl::InvalidArgumentError(absl::StrCat("UploadMatrix: bad shape [", rows, ", ",
                                                     cols, "] or source dtype"));
    }
    if (src == nullptr && rows > 0 && cols > 0) {
      return absl::InvalidArgumentError("UploadMatrix: null source");
    }
    if (storage != DType::kF32 && storage != DType::kBF16) {
      return absl::InvalidArgumentError(absl::StrCat(
          Name(), ": weights stored as ", DTypeName(storage),
          " are not supported by the CUDA backend (use f32 or bf16)"));
    }
    // bf16 math is bf16 weights as well as bf16 products (NX-AI's numerics).
    if (math_ == MathMode::kBf16) storage = DType::kBF16;
    Bind();
    const size_t esize = DTypeSize(storage);
    const int64_t ld = PaddedWeightCols(cols, esize);
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(rows, 1)) * ld * esize;
    auto m = std::make_unique<CudaMatrix>();
    void* dev = nullptr;
    cudaError_t e = cudaMalloc(&dev, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(
          absl::StrCat(Name(), ": cannot allocate ", bytes, " bytes of weights: ", ErrorText(e)));
    }
    // Converted a block of rows at a time through host memory; uploads run concurrently from
    // the loader's threads, each with its own synchronous copies.
    constexpr int64_t kRowsPerBlock = 256;
    std::vector<char> staging(static_cast<size_t>(std::min<int64_t>(rows, kRowsPerBlock)) * ld *
                              esize);
    const size_t src_row = static_cast<size_t>(cols) * DTypeSize(src_dtype);
    for (int64_t r0 = 0; r0 < rows; r0 += kRowsPerBlock) {
      const int64_t n = std::min(kRowsPerBlock, rows - r0);
      for (int64_t r = 0; r < n; ++r) {
        // Rows padded with zeros to `ld` (whole 16-byte vectors for the GEMM's loads).
        char* row = staging.data() + static_cast<size_t>(r * ld) * esize;
        ConvertFloatRow(static_cast<const char*>(src) + static_cast<size_t>(r0 + r) * src_row,
                        src_dtype, storage, cols, row);
        std::memset(row + static_cast<size_t>(cols) * esize, 0,
                    static_cast<size_t>(ld - cols) * esize);
      }
      e = cudaMemcpy(static_cast<char*>(dev) + static_cast<size_t>(r0 * ld) * esize,
                     staging.data(), static_cast<size_t>(n * ld) * esize, cudaMemcpyHostToDevice);
      if (e != cudaSuccess) {
        cudaFree(dev);
        return absl::InternalError(absl::StrCat(Name(), ": weight upload: ", ErrorText(e)));
      }
    }
    // cudaMemcpy from pageable memory may return before the DMA lands, and the non-blocking
    // stream is not ordered after the legacy one: wait here, once per matrix.
    e = cudaStreamSynchronize(cudaStreamLegacy);
    if (e != cudaSuccess) {
      cudaFree(dev);
      return absl::InternalError(absl::StrCat(Name(), ": weight upload: ", ErrorText(e)));
    }
    m->w = DeviceWeights{dev, storage == DType::kBF16, rows, cols, ld};
    if (storage == DType::kBF16) {
      std::lock_guard<std::mutex> lock(upload_mu_);
      max_bf16_cols_ = std::max(max_bf16_cols_, cols);
    }
    m->dtype = storage;
    m->bytes = bytes;
    return m.release();
  }
  absl::StatusOr<WeightMatrix*> UploadQuantized(const QuantizedMatrixView& m) override {
    return absl::InvalidArgumentError(absl::StrCat(
        Name(), ": quantized (", DTypeName(m.dtype),
        ") weights are not supported by the CUDA backend; serve the float checkpoint"));
  }
  DType MatrixDType(const WeightMatrix* w) const override { return Mat(w)->dtype; }
  void FreeMatrix(WeightMatrix* w) override {
    if (w == nullptr) return;
    Bind();
    auto* m = static_cast<CudaMatrix*>(w);
    Check(cudaFree(const_cast<void*>(m->w.data)));
    delete m;
  }
  int64_t MatrixRows(const WeightMatrix* w) const override { return Mat(w)->w.rows; }
  int64_t MatrixCols(const WeightMatrix* w) const override { return Mat(w)->w.cols; }
  size_t MatrixBytes(const WeightMatrix* w) const override { return Mat(w)->bytes; }

  void MatMul(const MatMulParams& p) override {
    const OpScope scope(this, OpKind::kGemm);
    const bool bf16_x = math_ == MathMode::kBf16;
    if (p.prefill) {
      const absl::StatusOr<bool> done =
          prefill_->Run(p.x, p.ldx, Mat(p.w)->w, p.y, p.ldy, p.m, p.accumulate, bf16_x);
      if (!done.ok()) return Fail(std::string(done.status().message()));
      if (*done) return;
    }
    Check(LaunchGemm(p.x, p.ldx, Mat(p.w)->w, p.y, p.ldy, p.m, p.accumulate, bf16_x, stream_));
  }
  absl::Status ReserveMatMul(int64_t rows) override {
    Bind();
    int64_t k = 0;
    {
      std::lock_guard<std::mutex> lock(upload_mu_);
      k = max_bf16_cols_;
    }
    if (k == 0) return absl::OkStatus();  // f32 weights only: nothing is staged
    absl::Status s = prefill_->Reserve(rows, k);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(Name(), ": ", s.message()));
    return absl::OkStatus();
  }
  size_t MatMulScratchBytes(int64_t rows) const override {
    std::lock_guard<std::mutex> lock(upload_mu_);
    return PrefillStagingBytes(rows, max_bf16_cols_);
  }
  void RmsNorm(const RmsNormParams& p) override {
    const OpScope scope(this, OpKind::kRowOps);
    Check(LaunchRmsNorm(p, stream_));
  }
  void Embed(const EmbedParams& p) override {
    const OpScope scope(this, OpKind::kRowOps);
    Check(LaunchEmbed(Mat(p.table)->w, p.ids, p.y, p.rows, p.ldy, stream_));
  }
  void BiasSoftCap(const BiasSoftCapParams& p) override {
    const OpScope scope(this, OpKind::kRowOps);
    Check(LaunchBiasSoftCap(p, stream_));
  }
  void SwiGlu(const SwiGluParams& p) override {
    const OpScope scope(this, OpKind::kRowOps);
    Check(LaunchSwiGlu(p, stream_));
  }
  void HeadNormGate(const HeadNormGateParams& p) override {
    const OpScope scope(this, OpKind::kRowOps);
    Check(LaunchHeadNormGate(p, stream_));
  }
  void MlstmStep(const MlstmStepParams& p) override {
    const OpScope scope(this, OpKind::kMlstm);
    const MlstmPlan plan = PlanMlstmStep(p.batch, p.dims.heads, p.dims.dqk, p.dims.dv);
    Check(EnsureSharedMemory(plan.smem_bytes, mlstm_smem_allowed_, AllowMlstmSharedMemory));
    Check(LaunchMlstmStep(p, plan, stream_));
  }
  void MlstmChunkwise(const MlstmChunkParams& p) override {
    const OpScope scope(this, OpKind::kMlstm);
    std::string why;
    const MlstmPlan plan = PlanMlstmChunkwise(p.num_seqs, p.dims.heads, p.dims.dqk, p.dims.dv,
                                              p.chunk_size, prop_.sharedMemPerBlockOptin, &why);
    if (!why.empty()) return Fail(absl::StrCat("mLSTM prefill: ", why));
    Check(EnsureSharedMemory(plan.smem_bytes, mlstm_smem_allowed_, AllowMlstmSharedMemory));
    Check(LaunchMlstmChunkwise(p, plan, stream_));  // chunks also end at p.chunk_size multiples
  }
  void GatherRows(const GatherRowsParams& p) override {
    const OpScope scope(this, OpKind::kRowOps);
    Check(LaunchGatherRows(p, stream_));
  }
  void Headwise(const HeadwiseParams& p) override {
    const OpScope scope(this, OpKind::kGemm);
    Check(LaunchHeadwise(p, stream_));
  }
  void CausalConv(const CausalConvParams& p) override {
    const OpScope scope(this, OpKind::kMlstm);
    Check(LaunchCausalConv(p, stream_));
  }
  void SlstmSequence(const SlstmParams& p) override {
    const OpScope scope(this, OpKind::kMlstm);
    const SlstmPlan plan = PlanSlstm(p.seqs.num_seqs, p.heads, p.dh);
    if (plan.smem_bytes > prop_.sharedMemPerBlockOptin) {
      return Fail(absl::StrCat("sLSTM: head dim ", p.dh, " needs ", plan.smem_bytes,
                               " bytes of shared memory per block; the device allows ",
                               prop_.sharedMemPerBlockOptin));
    }
    Check(EnsureSharedMemory(plan.smem_bytes, slstm_smem_allowed_, AllowSlstmSharedMemory));
    Check(LaunchSlstm(p, plan, stream_));
  }

  // Timed steps run eagerly: a recording would time the graph launch, not its ops.
  bool SupportsCapture() const override { return !timing_; }
  int64_t StepBucket(int64_t batch) const override { return DecodeBucket(batch); }
  void BeginCapture() override {
    Bind();
    Check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  }
  // A failed recording is not a device failure: the caller runs the step eagerly instead.
  absl::Status EndCapture(int64_t key) override {
    Bind();
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    cudaGraphExec_t exec = nullptr;
    if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::FailedPreconditionError(
          absl::StrCat(Name(), ": recording a decode step: ", ErrorText(e)));
    }
    auto [it, inserted] = graphs_.emplace(key, exec);
    if (!inserted) {  // the old recording may still be running
      Check(cudaStreamSynchronize(stream_));
      cudaGraphExecDestroy(it->second);
      it->second = exec;
    }
    Check(cudaGraphLaunch(exec, stream_));
    return absl::OkStatus();
  }
  void AbortCapture() override {
    Bind();
    cudaGraph_t graph = nullptr;
    if (cudaStreamEndCapture(stream_, &graph) == cudaSuccess && graph != nullptr) {
      cudaGraphDestroy(graph);
    }
    cudaGetLastError();
  }
  bool Replay(int64_t key) override {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return false;
    Bind();
    Check(cudaGraphLaunch(it->second, stream_));
    return true;
  }
  void DropCaptures() override {
    if (graphs_.empty()) return;
    Bind();
    Check(cudaStreamSynchronize(stream_));  // a graph may still be running
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    graphs_.clear();
  }

  absl::Status Synchronize() override {
    Bind();
    Check(cudaStreamSynchronize(stream_));
    fences_->AllPassed();
    std::lock_guard<std::mutex> lock(error_mu_);
    return error_;
  }
  uint64_t RecordFence() override {
    Bind();
    cudaError_t e = cudaSuccess;
    const uint64_t fence = fences_->Record(&e);
    Check(e);
    return fence;
  }
  absl::Status WaitFence(uint64_t fence) override {
    Check(fences_->Wait(fence));
    std::lock_guard<std::mutex> lock(error_mu_);
    return error_;
  }

  absl::Status StartOpTiming() override {
    timed_.clear();
    events_used_ = 0;
    timing_ = true;
    return absl::OkStatus();
  }
  absl::StatusOr<OpTimes> StopOpTiming() override {
    if (!timing_) return absl::FailedPreconditionError("StopOpTiming without StartOpTiming");
    timing_ = false;
    absl::Status s = Synchronize();
    if (!s.ok()) return s;
    // A timing that cannot be read is the bench's problem, not the device's: not sticky.
    auto elapsed = [](cudaEvent_t a, cudaEvent_t b, double* ms) {
      float f = 0;
      const cudaError_t e = cudaEventElapsedTime(&f, a, b);
      if (e != cudaSuccess) cudaGetLastError();
      *ms += f;
      return e == cudaSuccess;
    };
    OpTimes t;
    bool ok = true;
    for (const TimedOp& op : timed_) {
      double* sum = op.kind == OpKind::kGemm    ? &t.gemm_ms
                    : op.kind == OpKind::kMlstm ? &t.mlstm_ms
                                                : &t.rowops_ms;
      ok = elapsed(op.start, op.end, sum) && ok;
    }
    if (!timed_.empty()) ok = elapsed(timed_.front().start, timed_.back().end, &t.span_ms) && ok;
    t.ops = static_cast<int64_t>(timed_.size());
    timed_.clear();
    events_used_ = 0;
    if (!ok) return absl::InternalError(absl::StrCat(Name(), ": reading the op timings failed"));
    return t;
  }

 private:
  // The device is per host thread: the scheduler and the loader's threads each bind it.
  // Always set (cheap): a cache would go stale when another backend binds another device.
  void Bind() const { cudaSetDevice(device_); }
  // Op timing (StartOpTiming): an event recorded on the stream before and after each op.
  enum class OpKind { kGemm, kMlstm, kRowOps };
  struct TimedOp {
    OpKind kind;
    cudaEvent_t start, end;
  };
  class OpScope {
   public:
    OpScope(CudaBackend* be, OpKind kind) : be_(be), kind_(kind) {
      be_->Bind();
      if (be_->timing_) start_ = be_->RecordEvent();
    }
    ~OpScope() {
      if (start_ == nullptr || !be_->timing_) return;
      cudaEvent_t end = be_->RecordEvent();
      if (end != nullptr) be_->timed_.push_back({kind_, start_, end});
    }
    OpScope(const OpScope&) = delete;
    OpScope& operator=(const OpScope&) = delete;

   private:
    CudaBackend* be_;
    OpKind kind_;
    cudaEvent_t start_ = nullptr;
  };
  // An event from the pool, recorded now; null (and timing off) when none can be made.
  cudaEvent_t RecordEvent() {
    if (events_used_ == events_.size()) {
      cudaEvent_t e = nullptr;
      if (cudaEventCreate(&e) != cudaSuccess) {
        cudaGetLastError();
        timing_ = false;
        return nullptr;
      }
      events_.push_back(e);
    }
    cudaEvent_t e = events_[events_used_++];
    Check(cudaEventRecord(e, stream_));
    return e;
  }
  void Check(cudaError_t e) {
    if (e == cudaSuccess) return;
    Fail(ErrorText(e));
  }
  void Fail(const std::string& what) {
    std::lock_guard<std::mutex> lock(error_mu_);
    if (error_.ok()) error_ = absl::InternalError(absl::StrCat(Name(), ": ", what));
  }
  // Dynamic shared memory past the default 48 KiB is opted into per kernel; `allowed` is
  // that kernel's current opt-in.
  static cudaError_t EnsureSharedMemory(size_t bytes, size_t& allowed,
                                        cudaError_t (*allow)(size_t)) {
    constexpr size_t kDefault = 48 * 1024;
    if (bytes <= kDefault || bytes <= allowed) return cudaSuccess;
    const cudaError_t e = allow(bytes);
    if (e == cudaSuccess) allowed = bytes;
    return e;
  }
  // Pinned host memory is copied asynchronously; pageable memory before returning (the
  // caller may reuse it at once).
  void Copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, const void* host) {
    if (bytes == 0) return;
    Bind();
    Check(cudaMemcpyAsync(dst, src, bytes, kind, stream_));
    if (!pinned_.Contains(host)) Check(cudaStreamSynchronize(stream_));
  }

  const int device_;
  const DType weight_dtype_;
  const MathMode math_;
  const cudaDeviceProp prop_;
  cudaStream_t stream_;
  std::unique_ptr<StreamFences> fences_;
  size_t mlstm_smem_allowed_ = 0;
  size_t slstm_smem_allowed_ = 0;
  std::unique_ptr<PrefillGemm> prefill_;
  mutable std::mutex upload_mu_;  // matrices are uploaded from the loader's threads
  int64_t max_bf16_cols_ = 0;     // widest bf16 matrix: the prefill staging's row width
  std::map<int64_t, cudaGraphExec_t> graphs_;  // decode-step recordings by key
  bool timing_ = false;
  std::vector<cudaEvent_t> events_;  // pool, reused by every timing
  size_t events_used_ = 0;
  std::vector<TimedOp> timed_;
  PinnedBlocks pinned_;  // AllocHost blocks
  std::mutex error_mu_;
  absl::Status error_;  // the first CUDA error; sticky
};

}  // namespace

absl::StatusOr<int> UsableDeviceCount() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::UnavailableError(absl::StrCat("no usable CUDA device (", ErrorText(e), ")"));
  }
  if (count == 0) return absl::UnavailableError("no CUDA device");
  return count;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options) {
  if (options.weight_dtype != DType::kF32 && options.weight_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("cuda backend: weight dtype ",
                                                   DTypeName(options.weight_dtype),
                                                   " is not supported (use f32 or bf16)"));
  }
  absl::StatusOr<int> count = UsableDeviceCount();
  if (!count.ok()) return count.status();
  if (options.device < 0 || options.device >= *count) {
    return absl::UnavailableError(absl::StrCat("cuda:", options.device, " does not exist (",
                                               *count, " CUDA device(s))"));
  }
  cudaError_t e = cudaSetDevice(options.device);
  cudaDeviceProp prop{};
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, options.device);
  cudaStream_t stream = nullptr;
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat("cuda:", options.device, " is not usable: ", ErrorText(e)));
  }
  if (prop.major < 8) {
    cudaStreamDestroy(stream);
    return absl::UnavailableError(absl::StrCat("cuda:", options.device, " (", prop.name,
                                               ") is sm_", prop.major, prop.minor,
                                               "; the CUDA backend needs sm_80 or newer"));
  }
  absl::StatusOr<std::unique_ptr<PrefillGemm>> prefill = PrefillGemm::Create(stream);
  if (!prefill.ok()) {
    cudaStreamDestroy(stream);
    return absl::UnavailableError(absl::StrCat("cuda:", options.device, " (", prop.name,
                                               "): ", prefill.status().message()));
  }
  const DType weights = options.math == MathMode::kBf16 ? DType::kBF16 : options.weight_dtype;
  return std::unique_ptr<Backend>(new CudaBackend(options.device, weights, options.math, prop,
                                                  stream, std::move(*prefill)));
}

}  // namespace xlstmd::kernels::cuda
