// The Backend seam: coarse, batched math on backend memory.
//
// A Backend owns its memory (weights, activations, the state arena) and its threads. Ops take
// one POD params struct each (op_params.h). Backends know nothing of sessions: recurrent state
// is addressed by slot index into an arena the caller allocated with `Alloc`.
//
// Ordering: every op, copy and Memset0 of one backend instance goes into one ordered queue
// (one non-blocking stream on CUDA), so each may use what an earlier one wrote without
// waiting. The call that issues them may return before they have run: `Synchronize()` returns
// once all issued work has finished, with an error if any of it failed. Until then the host
// memory handed to that work (pinned CopyToHost destinations, CopyToDevice sources) must stay
// valid and untouched. A copy to or from pageable host memory (anything not from AllocHost)
// completes before it returns. The CPU backend runs everything synchronously; the CUDA backend
// queues it, and the model waits only at the end of a forward pass.
//
// Index arrays (token ids, state slots, row ranges) are read by ops from backend memory: the
// model copies them to the device once per forward pass, not once per op.
//
// Threading: one thread (the model's owner, i.e. the scheduler) calls ops; a Backend is not
// safe for concurrent op calls. `Alloc`/`Free` follow the same rule. `AllocHost`/`FreeHost`
// and `WaitFence` may be called from any thread (the engine's state buffers are pinned and
// waited for on its I/O threads); `FreeHost` never while the stream is being captured.
// The backend may use its own worker threads internally.
#ifndef XLSTMD_KERNELS_BACKEND_H_
#define XLSTMD_KERNELS_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"

#include "absl/status/statusor.h"
#include "kernels/op_params.h"
#include "kernels/quant.h"

namespace xlstmd::kernels {

size_t DTypeSize(DType t);
const char* DTypeName(DType t);

// How a backend's projections compute (--cuda-math). kExact: weights read exactly, activations
// and accumulation in f32 (every backend; meets the golden tolerances). kBf16: weights stored
// as bf16 and projection inputs rounded to bf16 before the product, accumulation, states and
// row ops still f32 -- NX-AI's GPU numerics, faster for prefill, within golden.json's
// `bf16_compute_drift` rather than the f32 tolerances. CUDA only.
enum class MathMode { kExact, kBf16 };
const char* MathModeName(MathMode m);  // "exact", "bf16"
// The inverse of MathModeName; INVALID_ARGUMENT for any other text.
absl::StatusOr<MathMode> ParseMathMode(std::string_view name);

// Options shared by every backend. `threads` <= 0 means "one per available core".
struct BackendOptions {
  int threads = 0;
  // Default storage of weight matrices (kF32 or kBF16); UploadMatrixAs picks another per
  // matrix (e.g. quantized projections next to a bf16 embedding).
  DType weight_dtype = DType::kBF16;
  int device = 0;  // device index (CUDA); ignored by the CPU backend
  // kBf16 needs the CUDA backend: CreateBackend refuses it for "cpu", and "auto" falling
  // back to the CPU computes exactly (Backend::Math() says which applies).
  MathMode math = MathMode::kExact;
};

// What a backend knows of its device, for sizing (--slots auto) and the bench's rooflines.
struct DeviceInfo {
  std::string description;         // e.g. "NVIDIA H100 80GB HBM3, sm_90, 132 SMs"
  size_t total_bytes = 0;          // device memory; 0 on the CPU (host memory: not tracked)
  size_t free_bytes = 0;           // free device memory now
  double nominal_gbps = 0;         // memory bandwidth from the device's attributes; 0 = unknown
  double nominal_fp32_gflops = 0;  // FP32 FMA peak from the device's attributes; 0 = unknown
  // Dense bf16 tensor-core peak (f32 accumulation), from the SM count, clock and the
  // architecture's MMA rate per SM; 0 = unknown (and on the CPU).
  double nominal_bf16_mma_gflops = 0;
};

// Where a forward pass spends its time (`xlstm bench`'s split of a step): the summed time of
// each class of op, and the span from the first op's start to the last one's end; what the
// span holds beyond the three sums is copies, launch gaps and host work ("gaps").
struct OpTimes {
  double gemm_ms = 0;    // MatMul, Headwise
  double mlstm_ms = 0;   // the recurrent cells: MlstmStep/Chunkwise, SlstmSequence, CausalConv
  double rowops_ms = 0;  // norms, soft cap, SwiGLU, gates, embedding and row gathers
  double span_ms = 0;
  int64_t ops = 0;
  double gaps_ms() const { return span_ms - gemm_ms - mlstm_ms - rowops_ms; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  virtual std::string Name() const = 0;  // "cpu", "cuda:0"
  virtual std::string Isa() const = 0;   // e.g. "avx512", "avx2", "scalar", "sm_90"
  virtual int Threads() const = 0;
  virtual DType WeightDType() const = 0;
  virtual MathMode Math() const { return MathMode::kExact; }

  virtual DeviceInfo Info() const = 0;
  // Whether this backend's mLSTM kernels can run heads of these dims (shared memory per
  // block on CUDA); checked when a model loads, so a model that cannot run is refused then
  // (INVALID_ARGUMENT saying why) rather than failing the device at its first prefill.
  virtual absl::Status CheckMlstmDims(const MlstmDims& dims) const { return absl::OkStatus(); }
  // The same for the sLSTM cell of a paper-family model (heads of dh units).
  virtual absl::Status CheckSlstmDims(int64_t heads, int64_t dh) const {
    return absl::OkStatus();
  }

  // True when backend memory is ordinary host memory (the CPU backend): the host may then
  // read results in place instead of copying them out.
  virtual bool HostVisible() const = 0;

  // Backend memory. Alloc returns zeroed memory aligned to 64 bytes. Prefer the owning
  // Allocate() (DeviceBuffer below).
  virtual absl::StatusOr<void*> Alloc(size_t bytes) = 0;
  virtual void Free(void* p) = 0;
  // Host memory the device can copy to and from asynchronously (pinned on CUDA), aligned to
  // 64 bytes, zeroed. Prefer AllocateHost()
  // (HostBuffer below).
  virtual absl::StatusOr<void*> AllocHost(size_t bytes) = 0;
  virtual void FreeHost(void* p) = 0;
  virtual void CopyToDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual void CopyToHost(void* dst, const void* src, size_t bytes) = 0;
  virtual void CopyDeviceToDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual void Memset0(void* dst, size_t bytes) = 0;

  // Converts host data of dtype `src_dtype` (kF32/kBF16/kF16, row-major [rows, cols]) to an
  // immutable weight matrix stored as `storage`: kF32, kBF16, or a quantized format (kI8,
  // kQ4: quantized here, kernels/quant.h) where the backend supports it (INVALID_ARGUMENT
  // otherwise). Callers may convert many matrices from several threads at once (load is
  // parallel): the Upload* methods and FreeMatrix are safe to call concurrently.
  virtual absl::StatusOr<WeightMatrix*> UploadMatrixAs(const void* src, DType src_dtype,
                                                       int64_t rows, int64_t cols,
                                                       DType storage) = 0;
  // The same in the backend's default storage dtype (WeightDType()).
  absl::StatusOr<WeightMatrix*> UploadMatrix(const void* src, DType src_dtype, int64_t rows,
                                             int64_t cols) {
    return UploadMatrixAs(src, src_dtype, rows, cols, WeightDType());
  }
  // A matrix already quantized (read from a quantized checkpoint), validated first.
  virtual absl::StatusOr<WeightMatrix*> UploadQuantized(const QuantizedMatrixView& m) = 0;
  // The storage format of a matrix this backend made.
  virtual DType MatrixDType(const WeightMatrix* w) const = 0;
  virtual void FreeMatrix(WeightMatrix* w) = 0;
  virtual int64_t MatrixRows(const WeightMatrix* w) const = 0;
  virtual int64_t MatrixCols(const WeightMatrix* w) const = 0;
  virtual size_t MatrixBytes(const WeightMatrix* w) const = 0;

  // Ops (see op_params.h for exact semantics).
  virtual void MatMul(const MatMulParams& p) = 0;
  // Scratch for prefill MatMuls of up to `rows` rows (the CUDA backend stages x as bf16 hi
  // and lo parts for cuBLASLt), sized for the widest matrix uploaded so far. The model's
  // workspace reservation calls it, so nothing is allocated while serving; a prefill MatMul
  // of more rows runs in windows of `rows` (rows are independent of each other).
  virtual absl::Status ReserveMatMul(int64_t /*rows*/) { return absl::OkStatus(); }
  virtual size_t MatMulScratchBytes(int64_t /*rows*/) const { return 0; }
  virtual void RmsNorm(const RmsNormParams& p) = 0;
  virtual void Embed(const EmbedParams& p) = 0;
  virtual void BiasSoftCap(const BiasSoftCapParams& p) = 0;
  virtual void SwiGlu(const SwiGluParams& p) = 0;
  virtual void HeadNormGate(const HeadNormGateParams& p) = 0;
  virtual void MlstmStep(const MlstmStepParams& p) = 0;
  virtual void MlstmChunkwise(const MlstmChunkParams& p) = 0;
  virtual void GatherRows(const GatherRowsParams& p) = 0;
  // Family B (xLSTM paper) ops.
  virtual void Headwise(const HeadwiseParams& p) = 0;
  virtual void CausalConv(const CausalConvParams& p) = 0;
  virtual void SlstmSequence(const SlstmParams& p) = 0;

  // Returns once all work issued so far has finished (see "Ordering" above). An error means
  // the device is unusable (a sticky CUDA error): INTERNAL, and every later call fails too.
  // Always OK on the CPU backend, whose calls finish before they return.
  virtual absl::Status Synchronize() = 0;

  // Fences, for copies whose host side is read later, maybe on another thread: RecordFence
  // marks everything issued so far, and WaitFence(f) returns once all of that has run (with
  // the sticky error if the device failed). RecordFence is an op (the issuing thread, never
  // inside a capture); WaitFence may be called from any thread, any number of times. The CPU
  // backend finishes every call before returning, so its fences have always passed.
  virtual uint64_t RecordFence() { return 0; }
  virtual absl::Status WaitFence(uint64_t fence) { return absl::OkStatus(); }

  // Op timing for the bench: between StartOpTiming and StopOpTiming every op is timed
  // (host clock on the CPU; a pair of CUDA events around each op on the GPU, with recording
  // off so the ops run eagerly), which slows them a little. StopOpTiming waits for the work
  // and returns the totals since StartOpTiming. UNIMPLEMENTED where a backend cannot.
  virtual absl::Status StartOpTiming() {
    return absl::UnimplementedError("this backend does not time its ops");
  }
  virtual absl::StatusOr<OpTimes> StopOpTiming() {
    return absl::UnimplementedError("this backend does not time its ops");
  }

  // Recorded op sequences (CUDA graphs; not supported on the CPU). Between BeginCapture and
  // EndCapture(key) ops are recorded instead of run (no copies, allocations or Synchronize
  // in between); EndCapture stores the recording under `key` and runs it once, or fails
  // (FAILED_PRECONDITION, nothing run: run the ops again eagerly); Replay(key) runs it again
  // and returns false when there is none. A recording bakes in every pointer
  // and size of its ops: callers key it by what varies and DropCaptures when buffers move.
  virtual bool SupportsCapture() const { return false; }
  // The padded batch size a decode step of `batch` rows should run at so one recording per
  // size serves it (padding rows: token -1, slot -1); 0 = run unpadded.
  virtual int64_t StepBucket(int64_t batch) const { return 0; }
  virtual void BeginCapture() {}
  virtual absl::Status EndCapture(int64_t key) {
    return absl::UnimplementedError("this backend does not record op sequences");
  }
  // Ends a recording without keeping or running it (an error while recording).
  virtual void AbortCapture() {}
  virtual bool Replay(int64_t key) { return false; }
  virtual void DropCaptures() {}

 protected:
  Backend() = default;
};

// Owner of one block of backend memory (DeviceBuffer, from Alloc) or of pinned host memory
// (HostBuffer, from AllocHost); move-only, frees through its backend.
template <void (Backend::*kFree)(void*)>
class BackendBlock {
 public:
  BackendBlock() = default;
  BackendBlock(Backend* backend, void* p, size_t bytes) : backend_(backend), p_(p), bytes_(bytes) {}
  BackendBlock(BackendBlock&& o) noexcept { *this = std::move(o); }
  BackendBlock& operator=(BackendBlock&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = std::exchange(o.backend_, nullptr);
      p_ = std::exchange(o.p_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  BackendBlock(const BackendBlock&) = delete;
  BackendBlock& operator=(const BackendBlock&) = delete;
  ~BackendBlock() { reset(); }

  void reset() {
    if (p_ != nullptr) (backend_->*kFree)(p_);
    p_ = nullptr;
    bytes_ = 0;
  }
  void* get() const { return p_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return bytes_; }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  Backend* backend_ = nullptr;
  void* p_ = nullptr;
  size_t bytes_ = 0;
};
using DeviceBuffer = BackendBlock<&Backend::Free>;
using HostBuffer = BackendBlock<&Backend::FreeHost>;

inline absl::StatusOr<DeviceBuffer> Allocate(Backend& backend, size_t bytes) {
  absl::StatusOr<void*> p = backend.Alloc(bytes);
  if (!p.ok()) return p.status();
  return DeviceBuffer(&backend, *p, bytes);
}

inline absl::StatusOr<HostBuffer> AllocateHost(Backend& backend, size_t bytes) {
  absl::StatusOr<void*> p = backend.AllocHost(bytes);
  if (!p.ok()) return p.status();
  return HostBuffer(&backend, *p, bytes);
}

// RAII owner of a weight matrix.
struct WeightMatrixDeleter {
  Backend* backend;
  void operator()(WeightMatrix* w) const {
    if (w != nullptr) backend->FreeMatrix(w);
  }
};
using WeightMatrixPtr = std::unique_ptr<WeightMatrix, WeightMatrixDeleter>;

}  // namespace xlstmd::kernels

#endif  // XLSTMD_KERNELS_BACKEND_H_
