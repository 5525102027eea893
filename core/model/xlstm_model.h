// XlstmModel: the xLSTM-Large (family A, xLSTM-7B architecture) forward pass on a Backend.
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
#include "core/model/state_layout.h"
#include "kernels/backend.h"

namespace xlstmd::core {

struct LoadOptions {
  int conversion_threads = 0;  // <= 0: hardware concurrency
  // Storage of the projection matrices (mLSTM and FFN): unset = the backend's WeightDType();
  // kI8 / kQ4 quantize them at load (kernels/quant.h). Matrices a checkpoint stores already
  // quantized (`xlstm quantize`) are uploaded as stored whatever this says.
  std::optional<kernels::DType> matrix_dtype;
  // Storage of the LM head: unset = as matrix_dtype. The embedding is never quantized (it is
  // gathered row by row, not streamed) and neither are the norms.
  std::optional<kernels::DType> lm_head_dtype;
};

enum class LogitsMode { kNone, kLast, kAll };

struct PrefillSequence {
  absl::Span<const int32_t> tokens;  // may be empty (the sequence is then skipped)
  int32_t slot;
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
  // Of which the embedding table (read a row per token, not streamed per step).
  size_t embedding_bytes() const;
  // Storage formats as served: the projections' (the first block's input projection) and
  // the LM head's.
  kernels::DType matrix_dtype() const;
  kernels::DType lm_head_dtype() const;
  size_t state_bytes_per_session() const { return layout_.bytes_per_slot(); }
  // Hex digest over the weight bytes as stored on disk plus the config; stable across loads.
  const std::string& weights_digest() const { return weights_digest_; }

  // (Re)allocates the state arena with `num_slots` zeroed slots (previous contents lost).
  absl::Status AllocateSlots(int32_t num_slots);
  int32_t num_slots() const { return num_slots_; }
  void ResetSlot(int32_t slot);
  void ReadSlot(int32_t slot, float* host_dst);        // floats_per_slot floats
  void WriteSlot(int32_t slot, const float* host_src);
  void CopySlot(int32_t src, int32_t dst);

  // Runs each sequence's tokens from its slot's current state (chunkwise-parallel mLSTM,
  // projections as one GEMM over all tokens) and leaves the final state in the slot.
  // Logits (host memory, row-major [rows, vocab]): kLast -> one row per sequence (in the
  // order given; empty sequences get no row), kAll -> one row per token. Slots must be
  // distinct and allocated, token ids in [0, vocab).
  absl::Status Prefill(absl::Span<const PrefillSequence> seqs, const PrefillOptions& options,
                       std::vector<float>* logits);

  // One recurrent step for a batch: row b feeds tokens[b] into slot slots[b].
  // Logits [batch, vocab] in host memory.
  absl::Status Step(absl::Span<const int32_t> tokens, absl::Span<const int32_t> slots,
                    std::vector<float>* logits);

 private:
  struct BlockWeights;
  struct Workspace;
  XlstmModel(ModelConfig config, kernels::Backend* backend);
  absl::Status ValidateSlots(absl::Span<const int32_t> slots) const;
  absl::Status ValidateTokens(absl::Span<const int32_t> tokens) const;
  // Runs the blocks over `rows` token rows already embedded in the workspace.
  void RunBlocks(int64_t rows, const std::vector<int32_t>& slots,
                 const std::vector<int64_t>& row_begin, const std::vector<int64_t>& length,
                 int64_t chunk_size, bool step);
  absl::Status ComputeLogits(const std::vector<int64_t>& rows, std::vector<float>* logits);
  absl::Status EnsureWorkspace(int64_t rows);

  ModelConfig config_;
  kernels::Backend* backend_;
  StateLayout layout_;
  std::vector<std::unique_ptr<BlockWeights>> blocks_;
  kernels::WeightMatrixPtr embedding_;
  kernels::WeightMatrixPtr lm_head_;
  float* out_norm_w_ = nullptr;  // backend memory
  float* out_norm_b_ = nullptr;
  size_t weight_bytes_ = 0;
  std::string weights_digest_;
  float* arena_ = nullptr;
  int32_t num_slots_ = 0;
  std::unique_ptr<Workspace> ws_;
  std::vector<void*> owned_;  // backend allocations freed in the destructor
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_XLSTM_MODEL_H_
