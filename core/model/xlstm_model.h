// XlstmModel: the xLSTM forward pass on a Backend, for both families of xlstm-spec.md:
// xLSTM-Large (family A, the xLSTM-7B architecture) and the paper's xLSTMLMModel (family B,
// mLSTM blocks with causal conv and sLSTM blocks; paper_model.cc).
//
// Load() reads a Hugging Face model directory (config.json + safetensors, sharded or not),
// checks every tensor, and converts the weights once to the backend's storage dtype; after
// that the weights are immutable. Recurrent states live in a slot arena in backend memory
// (AllocateSlots); Prefill and Step read and write the slots named in the call.
//
// Threading: all methods except the const accessors must be called from one thread at a time
// (the scheduler thread in the daemon). The model is move-less and owned by its creator.
//
// Numerics (xlstm-spec.md): activations, accumulation and states are float32 whatever the
// weight storage dtype.
#ifndef XLSTMD_CORE_MODEL_XLSTM_MODEL_H_
#define XLSTMD_CORE_MODEL_XLSTM_MODEL_H_

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/model/config.h"
#include "core/model/load_progress.h"
#include "core/model/state_layout.h"
#include "kernels/backend.h"

namespace xlstmd::core {

class Checkpoint;
class WeightUploader;

struct LoadOptions {
  int conversion_threads = 0;  // <= 0: hardware concurrency
  // Storage of the projection matrices (mLSTM and FFN): unset = the backend's WeightDType();
  // kI8 / kQ4 quantize them at load (kernels/quant.h). Matrices a checkpoint stores already
  // quantized (`xlstm quantize`) are uploaded as stored whatever this says.
  std::optional<kernels::DType> matrix_dtype;
  // Storage of the LM head: unset = as matrix_dtype. The embedding is never quantized (it is
  // gathered row by row, not streamed) and neither are the norms.
  std::optional<kernels::DType> lm_head_dtype;
  // Decode steps run padded to the smallest of these sizes that holds them (padding rows
  // touch no state) and, on a backend that records op sequences, replay one recording per
  // size. Empty: the backend's buckets (Backend::StepBucket; none on the CPU).
  std::vector<int64_t> step_buckets;
  // Called as the weights are uploaded (load_progress.h); unset = no reports.
  LoadProgressFn progress;
};

enum class LogitsMode { kNone, kLast, kAll };

struct PrefillSequence {
  absl::Span<const int32_t> tokens;  // may be empty (the sequence is then skipped)
  int32_t slot;
};

// Logits rows in host memory (pinned on device backends; the backend's own buffer on the
// CPU backend), row-major [rows, vocab]. Valid until the next call on the model.
struct LogitsView {
  const float* data = nullptr;
  int64_t rows = 0;
  int64_t vocab = 0;
  absl::Span<const float> row(int64_t r) const {
    return absl::MakeConstSpan(data + r * vocab, static_cast<size_t>(vocab));
  }
};

struct PrefillOptions {
  int64_t chunk_size = 64;  // any value >= 1; need not divide the length
  LogitsMode logits = LogitsMode::kLast;
};

class XlstmModel {
 public:
  static absl::StatusOr<std::unique_ptr<XlstmModel>> Load(const std::filesystem::path& dir,
                                                          kernels::Backend* backend,
                                                          const LoadOptions& options = {});
  ~XlstmModel();
  XlstmModel(const XlstmModel&) = delete;
  XlstmModel& operator=(const XlstmModel&) = delete;

  const ModelConfig& config() const { return config_; }
  const StateLayout& state_layout() const { return layout_; }
  const kernels::Backend& backend() const { return *backend_; }
  kernels::Backend& backend() { return *backend_; }
  int64_t vocab_size() const { return config_.vocab_size; }
  size_t weight_bytes() const { return weight_bytes_; }
  // Float32 vectors beside the matrices: norms and biases, and in family B the headwise
  // projections, conv kernels and sLSTM recurrent kernels (read every step like the matrices).
  size_t vector_bytes() const { return vector_bytes_; }
  // Of which the embedding table (read a row per token, not streamed per step).
  size_t embedding_bytes() const;
  // Storage formats as served: the projections' (the first block's input projection) and
  // the LM head's.
  kernels::DType matrix_dtype() const;
  kernels::DType lm_head_dtype() const;
  size_t state_bytes_per_session() const { return layout_.bytes_per_slot(); }
  // Hex digest over the weight bytes as stored on disk plus the config; stable across loads.
  const std::string& weights_digest() const { return weights_digest_; }

  // Sizes the activation workspace for `rows` token rows per forward window and the logits
  // buffer for `logit_rows` rows, once (at start-up): afterwards forward calls never
  // reallocate; a longer call runs in windows of `rows` rows, and a call wanting more logit
  // rows than reserved fails (the view API) or is copied out in passes (the vector API).
  // Without it the buffers grow on demand.
  absl::Status Reserve(int64_t rows, int64_t logit_rows);
  // Backend bytes (plus pinned host bytes on device backends) Reserve(rows, logit_rows) takes.
  size_t ForwardBytes(int64_t rows, int64_t logit_rows) const;

  // (Re)allocates the state arena with `num_slots` zeroed slots (previous contents lost).
  absl::Status AllocateSlots(int32_t num_slots);
  int32_t num_slots() const { return num_slots_; }
  void ResetSlot(int32_t slot);
  // One slot's state to or from host memory (floats_per_slot floats), complete on return
  // whatever the memory (a pinned buffer from AllocHost is copied in one DMA, then waited
  // for). The engine's tiers use the asynchronous forms below instead.
  void ReadSlot(int32_t slot, float* host_dst);
  void WriteSlot(int32_t slot, const float* host_src);
  // ReadSlot without the wait: `host_dst` holds the state once WaitForFence(returned fence)
  // has returned (any thread); later ops on the slot run after the copy. For pinned memory
  // on a device backend; elsewhere the copy is done on return and the fence is 0.
  uint64_t ReadSlotAsync(int32_t slot, float* host_dst);
  // WriteSlot without the wait. A source in AllocHost memory must come with `keep`, which
  // keeps it alive: the model holds `keep` until the copy has run (the model's next wait at
  // the end of a forward pass, or FinishUploads), so the caller may drop its references at
  // once but must not write the source. Later ops on the slot run after the copy. A pageable
  // source (keep may be null) is copied before the call returns, as on a host-visible
  // backend (see Backend).
  void WriteSlotAsync(int32_t slot, const float* host_src, std::shared_ptr<const void> keep);
  // Waits for the uploads in flight and releases their sources: when no forward pass is
  // coming, and before whatever those sources' deleters use goes away (the engine's pool).
  void FinishUploads();
  absl::Status WaitForFence(uint64_t fence) { return backend_->WaitFence(fence); }
  void CopySlot(int32_t src, int32_t dst);

  // Runs each sequence's tokens from its slot's current state (chunkwise-parallel mLSTM,
  // projections as one GEMM over all tokens) and leaves the final state in the slot.
  // Logits: kLast -> one row per sequence (in the order given; empty sequences get no row),
  // kAll -> one row per token. Slots must be distinct and allocated, token ids in [0, vocab).
  // An error from the backend itself (INTERNAL) means the device is unusable.
  absl::StatusOr<LogitsView> Prefill(absl::Span<const PrefillSequence> seqs,
                                     const PrefillOptions& options);
  // One recurrent step for a batch: row b feeds tokens[b] into slot slots[b]. Logits
  // [batch, vocab].
  absl::StatusOr<LogitsView> Step(absl::Span<const int32_t> tokens,
                                  absl::Span<const int32_t> slots);

  // The same with the logits copied into a vector (any number of rows; nullptr: none).
  absl::Status Prefill(absl::Span<const PrefillSequence> seqs, const PrefillOptions& options,
                       std::vector<float>* logits);
  absl::Status Step(absl::Span<const int32_t> tokens, absl::Span<const int32_t> slots,
                    std::vector<float>* logits);

 private:
  struct BlockWeights;
  struct Workspace;
  struct Window;
  struct IndexArrays;
  XlstmModel(ModelConfig config, kernels::Backend* backend);
  float* SlotPtr(int32_t slot) const;
  void WaitForCopy();  // after a state copy: see ReadSlot
  // backend_->Synchronize(), after which the sources of earlier WriteSlotAsync calls are
  // released: every wait on the backend goes through here.
  absl::Status SyncStream();
  absl::Status ValidateSlots(absl::Span<const int32_t> slots) const;
  absl::Status ValidateTokens(absl::Span<const int32_t> tokens) const;
  // Sizes the buffers for a call (growing them only when nothing was reserved) and empties
  // the logits buffer.
  absl::Status PrepareForward(int64_t rows, int64_t logit_rows, bool can_spill);
  absl::Status AllocateBuffers(int64_t rows, int64_t logit_rows);
  std::array<int64_t, 7> ActivationFloats(int64_t rows) const;
  static size_t IndexBytes(int64_t rows);
  absl::Status FinishLoad(WeightUploader& up, const LoadOptions& options);
  // Family B (paper_model.cc).
  absl::Status AddPaperWeights(const Checkpoint& ckpt, WeightUploader& up,
                               const LoadOptions& options);
  void RunPaperBlocks(const Window& win, const IndexArrays& dev, const IndexArrays& host,
                      int64_t chunk_size, bool step);
  std::array<int64_t, 7> PaperActivationFloats(int64_t rows) const;
  static IndexArrays IndexAt(char* base, int64_t capacity);
  absl::StatusOr<LogitsView> PrefillImpl(absl::Span<const PrefillSequence> seqs,
                                         const PrefillOptions& options,
                                         std::vector<float>* spill);
  absl::StatusOr<LogitsView> StepImpl(absl::Span<const int32_t> tokens,
                                      absl::Span<const int32_t> slots, std::vector<float>* spill);
  absl::Status RunWindow(const Window& win, int64_t chunk_size, bool step, LogitsMode mode,
                         std::vector<float>* spill);
  void UploadIndex(const Window& win, IndexArrays* host, IndexArrays* dev);
  absl::Status ComputeWindow(const Window& win, const IndexArrays& host, const IndexArrays& dev,
                             int64_t chunk_size, bool step, LogitsMode mode,
                             std::vector<float>* spill);
  void RunBlocks(const Window& win, const IndexArrays& dev, const IndexArrays& host,
                 int64_t chunk_size, bool step);
  absl::Status AppendLogits(const Window& win, const IndexArrays& dev, bool all_rows,
                            bool prefill, std::vector<float>* spill);
  absl::Status FlushLogits(std::vector<float>* spill);
  absl::StatusOr<LogitsView> FinishLogits();
  int64_t StepBucket(int64_t rows) const;
  absl::StatusOr<LogitsView> PaddedStep(absl::Span<const int32_t> tokens,
                                        absl::Span<const int32_t> slots, int64_t bucket);

  ModelConfig config_;
  kernels::Backend* backend_;
  StateLayout layout_;
  std::vector<std::unique_ptr<BlockWeights>> blocks_;
  kernels::WeightMatrixPtr embedding_;
  kernels::WeightMatrixPtr lm_head_;
  float* out_norm_w_ = nullptr;  // backend memory, owned by vectors_
  float* out_norm_b_ = nullptr;
  size_t weight_bytes_ = 0;
  size_t vector_bytes_ = 0;
  std::string weights_digest_;
  kernels::DeviceBuffer arena_;
  int32_t num_slots_ = 0;
  std::unique_ptr<Workspace> ws_;
  // Unique per model in the process: keys this model's recordings in a shared backend.
  const int64_t serial_;
  static int64_t NextSerial();
  std::vector<kernels::DeviceBuffer> vectors_;  // norm weights and biases
  std::vector<int64_t> step_buckets_;            // LoadOptions::step_buckets
  bool recording_failed_ = false;                // the backend could not record a step
  // Sources of state uploads that may still be in flight (WriteSlotAsync).
  std::vector<std::shared_ptr<const void>> uploads_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_XLSTM_MODEL_H_
