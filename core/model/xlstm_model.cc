#include "core/model/xlstm_model.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "spdlog/spdlog.h"
#include "core/model/checkpoint.h"
#include "core/model/weight_upload.h"
#include "core/model/xlstm_model_internal.h"

namespace xlstmd::core {

using kernels::Backend;
using kernels::WeightMatrixPtr;

namespace {
int64_t InProjRows(const ModelConfig& c) {
  return 2 * c.qk_dim() + 2 * c.v_dim() + 2 * c.num_heads;
}
}  // namespace

XlstmModel::XlstmModel(ModelConfig config, Backend* backend)
    : config_(std::move(config)),
      backend_(backend),
      ws_(std::make_unique<Workspace>()),
      serial_(NextSerial()) {}

int64_t XlstmModel::NextSerial() {
  static std::atomic<int64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

// Uploads still in flight read their sources: wait before those are released. Recordings
// point into this model's buffers: drop them (another model's are re-recorded on use).
XlstmModel::~XlstmModel() {
  if (!uploads_.empty()) (void)backend_->Synchronize();
  if (backend_->SupportsCapture()) backend_->DropCaptures();
}

absl::StatusOr<std::unique_ptr<XlstmModel>> XlstmModel::Load(const std::filesystem::path& dir,
                                                             Backend* backend,
                                                             const LoadOptions& options) {
  XLSTMD_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  XLSTMD_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(dir));
  if (config.family == ModelFamily::kPaper) {
    std::unique_ptr<XlstmModel> model(new XlstmModel(std::move(config), backend));
    const ModelConfig& c = model->config_;
    model->layout_ = StateLayout::ForPaper(c);
    if (c.paper.has_mlstm()) {
      const int64_t dh = c.paper.m_dh(c.embedding_dim);
      XLSTMD_RETURN_IF_ERROR(
          backend->CheckMlstmDims(kernels::MlstmDims{c.paper.m_heads, dh, dh, 1e-6f, 1.0f}));
    }
    if (c.paper.has_slstm()) {
      XLSTMD_RETURN_IF_ERROR(
          backend->CheckSlstmDims(c.paper.s_heads, c.paper.s_dh(c.embedding_dim)));
    }
    WeightUploader up(backend, options.conversion_threads);
    up.set_progress(options.progress);
    XLSTMD_RETURN_IF_ERROR(model->AddPaperWeights(*ckpt, up, options));
    XLSTMD_RETURN_IF_ERROR(model->FinishLoad(up, options));
    return model;
  }
  XLSTMD_ASSIGN_OR_RETURN(XlstmTensors tensors, ResolveXlstmTensors(*ckpt, config));
  std::unique_ptr<XlstmModel> model(new XlstmModel(std::move(config), backend));
  const ModelConfig& c = model->config_;
  model->layout_ = StateLayout::ForMlstmStack(c.num_blocks, c.num_heads, c.dqk(), c.dv());
  XLSTMD_RETURN_IF_ERROR(backend->CheckMlstmDims(
      kernels::MlstmDims{c.num_heads, c.dqk(), c.dv(), c.eps, 1.0f}));

  WeightUploader up(backend, options.conversion_threads);
  up.set_progress(options.progress);
  const kernels::DType matrices = options.matrix_dtype.value_or(backend->WeightDType());
  const kernels::DType head = options.lm_head_dtype.value_or(matrices);
  for (int64_t b = 0; b < c.num_blocks; ++b) {
    auto bw = std::make_unique<BlockWeights>();
    const XlstmBlockTensors& t = tensors.blocks[b];
    BlockWeights* w = bw.get();
    up.AddMatrix({t.q, t.k, t.v, t.ogate, t.igate_w, t.fgate_w}, &w->w_in, matrices);
    up.AddMatrix({t.out_proj}, &w->w_out, matrices);
    up.AddMatrix({t.ffn_gate, t.ffn_up}, &w->w_ffn_up, matrices);
    up.AddMatrix({t.ffn_down}, &w->w_ffn_down, matrices);
    up.AddVector({t.norm_mlstm_w}, c.embedding_dim, &w->norm_mlstm_w);
    up.AddVector({t.igate_b, t.fgate_b}, 2 * c.num_heads, &w->gate_bias);
    up.AddVector({t.mh_norm_w}, c.v_dim(), &w->mh_norm_w);
    up.AddVector({t.norm_ffn_w}, c.embedding_dim, &w->norm_ffn_w);
    if (c.use_bias) {
      // The gate biases are applied together with the soft cap; their slot here stays zero.
      TensorSlice none;
      none.rows = 2 * c.num_heads;
      none.cols = 1;
      up.AddVector({t.q_b, t.k_b, t.v_b, t.ogate_b, none}, InProjRows(c), &w->in_bias);
      up.AddVector({t.norm_mlstm_b}, c.embedding_dim, &w->norm_mlstm_b);
      up.AddVector({t.mh_norm_b}, c.v_dim(), &w->mh_norm_b);
      up.AddVector({t.out_proj_b}, c.embedding_dim, &w->out_b);
      up.AddVector({t.norm_ffn_b}, c.embedding_dim, &w->norm_ffn_b);
      up.AddVector({t.ffn_gate_b, t.ffn_up_b}, 2 * c.ffn_dim(), &w->ffn_up_b);
      up.AddVector({t.ffn_down_b}, c.embedding_dim, &w->ffn_down_b);
    }
    model->blocks_.push_back(std::move(bw));
  }
  if (tensors.embedding.quant != kernels::DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", dir.string(), ": the embedding table ",
                     tensors.embedding.tensor->name, " is quantized; it must be stored as a float"));
  }
  up.AddMatrix({tensors.embedding}, &model->embedding_, backend->WeightDType());
  up.AddMatrix({tensors.lm_head}, &model->lm_head_, head);
  if (c.add_out_norm) {
    up.AddVector({tensors.out_norm_w}, c.embedding_dim, &model->out_norm_w_);
    if (c.use_bias) up.AddVector({tensors.out_norm_b}, c.embedding_dim, &model->out_norm_b_);
  }
  XLSTMD_RETURN_IF_ERROR(model->FinishLoad(up, options));
  return model;
}

absl::Status XlstmModel::FinishLoad(WeightUploader& up, const LoadOptions& options) {
  XLSTMD_RETURN_IF_ERROR(up.Run());
  weight_bytes_ = up.matrix_bytes();
  vector_bytes_ = up.vector_bytes();
  vectors_ = up.TakeVectors();
  step_buckets_ = options.step_buckets;
  std::sort(step_buckets_.begin(), step_buckets_.end());
  weights_digest_ = up.Digest(config_);
  return absl::OkStatus();
}

size_t XlstmModel::embedding_bytes() const { return backend_->MatrixBytes(embedding_.get()); }

kernels::DType XlstmModel::matrix_dtype() const {
  if (blocks_.empty()) return backend_->WeightDType();
  const BlockWeights& b = *blocks_[0];
  const kernels::WeightMatrix* m = b.w_in ? b.w_in.get() : b.w_up ? b.w_up.get() : b.w_ffn_up.get();
  return backend_->MatrixDType(m);
}

kernels::DType XlstmModel::lm_head_dtype() const { return backend_->MatrixDType(lm_head_.get()); }

absl::Status XlstmModel::AllocateSlots(int32_t num_slots) {
  if (num_slots < 0) return absl::InvalidArgumentError("num_slots must be >= 0");
  backend_->DropCaptures();  // recordings point into the old arena
  arena_.reset();
  num_slots_ = 0;
  if (num_slots == 0) return absl::OkStatus();
  const size_t bytes = static_cast<size_t>(num_slots) * layout_.bytes_per_slot();
  XLSTMD_ASSIGN_OR_RETURN(arena_, kernels::Allocate(*backend_, bytes));
  num_slots_ = num_slots;
  return absl::OkStatus();
}

float* XlstmModel::SlotPtr(int32_t slot) const {
  return arena_.as<float>() + static_cast<int64_t>(slot) * layout_.floats_per_slot();
}

void XlstmModel::ResetSlot(int32_t slot) {
  backend_->Memset0(SlotPtr(slot), layout_.bytes_per_slot());
}

void XlstmModel::ReadSlot(int32_t slot, float* host_dst) {
  backend_->CopyToHost(host_dst, SlotPtr(slot), layout_.bytes_per_slot());
  WaitForCopy();
}

uint64_t XlstmModel::ReadSlotAsync(int32_t slot, float* host_dst) {
  backend_->CopyToHost(host_dst, SlotPtr(slot), layout_.bytes_per_slot());
  if (backend_->HostVisible()) return 0;
  const uint64_t fence = backend_->RecordFence();
  if (fence == 0) WaitForCopy();  // no fence could be recorded: the copy must be done now
  return fence;
}

void XlstmModel::WriteSlot(int32_t slot, const float* host_src) {
  backend_->CopyToDevice(SlotPtr(slot), host_src, layout_.bytes_per_slot());
  WaitForCopy();
}

// Restores issue their copy and go on: the forward pass that uses the slot is queued behind
// it, and its final wait is the one that frees the source. The cap bounds the host memory a
// burst of restores without a forward pass can hold.
void XlstmModel::WriteSlotAsync(int32_t slot, const float* host_src,
                                std::shared_ptr<const void> keep) {
  constexpr size_t kMaxUploadsInFlight = 16;
  backend_->CopyToDevice(SlotPtr(slot), host_src, layout_.bytes_per_slot());
  if (backend_->HostVisible() || keep == nullptr) return;
  uploads_.push_back(std::move(keep));
  if (uploads_.size() >= kMaxUploadsInFlight) WaitForCopy();
}

void XlstmModel::FinishUploads() {
  if (!uploads_.empty()) WaitForCopy();
}

absl::Status XlstmModel::SyncStream() {
  absl::Status status = backend_->Synchronize();
  uploads_.clear();  // finished, or the device is lost and copies nothing more
  return status;
}

void XlstmModel::WaitForCopy() {
  if (backend_->HostVisible()) return;  // the copy ran before CopyTo* returned
  // A failure is the device's sticky error: the next forward pass reports it and the
  // scheduler stops serving on this device.
  if (absl::Status s = SyncStream(); !s.ok()) {
    spdlog::error("state copy on {} failed: {}", backend_->Name(), std::string(s.message()));
  }
}

void XlstmModel::CopySlot(int32_t src, int32_t dst) {
  if (src == dst) return;
  backend_->CopyDeviceToDevice(SlotPtr(dst), SlotPtr(src), layout_.bytes_per_slot());
}

absl::Status XlstmModel::ValidateSlots(absl::Span<const int32_t> slots) const {
  if (!arena_) return absl::FailedPreconditionError("no state slots allocated");
  absl::flat_hash_set<int32_t> seen;
  for (int32_t s : slots) {
    if (s < 0 || s >= num_slots_) {
      return absl::InvalidArgumentError(
          absl::StrCat("state slot ", s, " out of range [0, ", num_slots_, ")"));
    }
    if (!seen.insert(s).second) {
      return absl::InvalidArgumentError(absl::StrCat("state slot ", s, " used twice in a batch"));
    }
  }
  return absl::OkStatus();
}

absl::Status XlstmModel::ValidateTokens(absl::Span<const int32_t> tokens) const {
  for (int32_t t : tokens) {
    if (t < 0 || t >= config_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", t, " out of range [0, ", config_.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

XlstmModel::IndexArrays XlstmModel::IndexAt(char* base, int64_t capacity) {
  IndexArrays a;
  a.row_begin = reinterpret_cast<int64_t*>(base);
  a.length = a.row_begin + capacity;
  a.ids = reinterpret_cast<int32_t*>(a.length + capacity);
  a.slots = a.ids + capacity;
  a.gather = a.slots + capacity;
  return a;
}

absl::Status XlstmModel::Reserve(int64_t rows, int64_t logit_rows) {
  if (rows < 1 || logit_rows < 1) {
    return absl::InvalidArgumentError("Reserve: rows and logit rows must be >= 1");
  }
  // Room for the padded decode step of the largest batch too (StepBucket).
  const int64_t bucket = StepBucket(logit_rows);
  XLSTMD_RETURN_IF_ERROR(AllocateBuffers(std::max(rows, bucket), std::max(logit_rows, bucket)));
  ws_->reserved = true;
  return absl::OkStatus();
}

// The activation buffers of a `rows`-row window, in floats (each padded to 16), in the order
// of the Workspace pointers: x, hn, proj, hcell, hgate, ffn, act.
std::array<int64_t, 7> XlstmModel::ActivationFloats(int64_t rows) const {
  if (config_.family == ModelFamily::kPaper) return PaperActivationFloats(rows);
  const ModelConfig& c = config_;
  const int64_t E = c.embedding_dim, V = c.v_dim(), F = c.ffn_dim(), P = InProjRows(c);
  auto pad = [](int64_t n) { return (n + 15) / 16 * 16; };
  return {pad(rows * E), pad(rows * E), pad(rows * P), pad(rows * V),
          pad(rows * V), pad(rows * 2 * F), pad(rows * F)};
}

size_t XlstmModel::IndexBytes(int64_t rows) {
  return static_cast<size_t>(rows) * (2 * sizeof(int64_t) + 3 * sizeof(int32_t));
}

size_t XlstmModel::ForwardBytes(int64_t rows, int64_t logit_rows) const {
  int64_t floats = 0;
  for (int64_t n : ActivationFloats(rows)) floats += n;
  // A device backend keeps a pinned host copy of the index arrays and of the logits.
  const size_t copies = backend_->HostVisible() ? 1 : 2;
  return static_cast<size_t>(floats) * sizeof(float) + IndexBytes(rows) * copies +
         backend_->MatMulScratchBytes(rows) +
         static_cast<size_t>(logit_rows) * static_cast<size_t>(config_.vocab_size) *
             sizeof(float) * copies;
}

absl::Status XlstmModel::PrepareForward(int64_t rows, int64_t logit_rows, bool can_spill) {
  Workspace& w = *ws_;
  w.logits_done = 0;
  if (w.reserved) {
    if (logit_rows > w.logits_capacity && !can_spill) {
      return absl::InvalidArgumentError(absl::StrCat("a forward call wants ", logit_rows,
                                                     " logit rows; ", w.logits_capacity,
                                                     " were reserved"));
    }
    return absl::OkStatus();
  }
  // Unreserved (tools, tests): grow to what the call needs, bounded so that very long calls
  // still run in windows and copy their logits out in passes.
  constexpr int64_t kMaxWindowRows = 4096, kMaxLogitRows = 256;
  const int64_t want_rows = std::min(std::max<int64_t>(rows, 1), kMaxWindowRows);
  const int64_t want_logits =
      can_spill ? std::min(std::max<int64_t>(logit_rows, 1), kMaxLogitRows) : std::max<int64_t>(logit_rows, 1);
  if (want_rows <= w.capacity && want_logits <= w.logits_capacity) return absl::OkStatus();
  return AllocateBuffers(std::max(want_rows, w.capacity), std::max(want_logits, w.logits_capacity));
}

absl::Status XlstmModel::AllocateBuffers(int64_t rows, int64_t logit_rows) {
  Workspace& w = *ws_;
  backend_->DropCaptures();  // recordings point into the old buffers
  const ModelConfig& c = config_;
  if (rows != w.capacity) {
    const std::array<int64_t, 7> sizes = ActivationFloats(rows);
    int64_t total = 0;
    for (int64_t s : sizes) total += s;
    w.base.reset();
    w.capacity = 0;
    XLSTMD_ASSIGN_OR_RETURN(w.base, kernels::Allocate(*backend_, static_cast<size_t>(total) * sizeof(float)));
    float* p = w.base.as<float>();
    float** slots[] = {&w.x, &w.hn, &w.proj, &w.hcell, &w.hgate, &w.ffn, &w.act};
    for (int i = 0; i < 7; ++i) {
      *slots[i] = p;
      p += sizes[i];
    }
    w.host_index.reset();
    w.dev_index.reset();
    XLSTMD_ASSIGN_OR_RETURN(w.host_index, kernels::AllocateHost(*backend_, IndexBytes(rows)));
    // Where backend memory is host memory, the ops read the host arrays in place.
    if (!backend_->HostVisible()) {
      XLSTMD_ASSIGN_OR_RETURN(w.dev_index, kernels::Allocate(*backend_, IndexBytes(rows)));
    }
    XLSTMD_RETURN_IF_ERROR(backend_->ReserveMatMul(rows));
    w.capacity = rows;
  }
  if (logit_rows != w.logits_capacity) {
    const size_t bytes = static_cast<size_t>(logit_rows * c.vocab_size) * sizeof(float);
    w.logits.reset();
    w.host_logits.reset();
    w.logits_capacity = 0;
    XLSTMD_ASSIGN_OR_RETURN(w.logits, kernels::Allocate(*backend_, bytes));
    if (!backend_->HostVisible()) {
      XLSTMD_ASSIGN_OR_RETURN(w.host_logits, kernels::AllocateHost(*backend_, bytes));
    }
    w.logits_capacity = logit_rows;
  }
  return absl::OkStatus();
}

}  // namespace xlstmd::core
