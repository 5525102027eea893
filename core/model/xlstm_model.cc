#include "core/model/xlstm_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
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
    : config_(std::move(config)), backend_(backend), ws_(std::make_unique<Workspace>()) {}

XlstmModel::~XlstmModel() {
  blocks_.clear();
  embedding_.reset();
  lm_head_.reset();
  if (ws_->base != nullptr) backend_->Free(ws_->base);
  if (ws_->logits != nullptr) backend_->Free(ws_->logits);
  if (arena_ != nullptr) backend_->Free(arena_);
  for (void* p : owned_) backend_->Free(p);
}

absl::StatusOr<std::unique_ptr<XlstmModel>> XlstmModel::Load(const std::filesystem::path& dir,
                                                             Backend* backend,
                                                             const LoadOptions& options) {
  XLSTMD_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  XLSTMD_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(dir));
  XLSTMD_ASSIGN_OR_RETURN(XlstmTensors tensors, ResolveXlstmTensors(*ckpt, config));
  std::unique_ptr<XlstmModel> model(new XlstmModel(std::move(config), backend));
  const ModelConfig& c = model->config_;
  model->layout_ = StateLayout::ForMlstmStack(c.num_blocks, c.num_heads, c.dqk(), c.dv());

  WeightUploader up(backend, options.conversion_threads);
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
  XLSTMD_RETURN_IF_ERROR(up.Run());
  model->weight_bytes_ = up.matrix_bytes();
  model->owned_ = up.TakeVectors();
  model->weights_digest_ = up.Digest(c);
  return model;
}

size_t XlstmModel::embedding_bytes() const { return backend_->MatrixBytes(embedding_.get()); }

kernels::DType XlstmModel::matrix_dtype() const {
  return blocks_.empty() ? backend_->WeightDType() : backend_->MatrixDType(blocks_[0]->w_in.get());
}

kernels::DType XlstmModel::lm_head_dtype() const { return backend_->MatrixDType(lm_head_.get()); }

absl::Status XlstmModel::AllocateSlots(int32_t num_slots) {
  if (num_slots < 0) return absl::InvalidArgumentError("num_slots must be >= 0");
  if (arena_ != nullptr) backend_->Free(arena_);
  arena_ = nullptr;
  num_slots_ = 0;
  if (num_slots == 0) return absl::OkStatus();
  const size_t bytes = static_cast<size_t>(num_slots) * layout_.bytes_per_slot();
  XLSTMD_ASSIGN_OR_RETURN(void* p, backend_->Alloc(bytes));
  arena_ = static_cast<float*>(p);
  num_slots_ = num_slots;
  return absl::OkStatus();
}

void XlstmModel::ResetSlot(int32_t slot) {
  backend_->Memset0(arena_ + slot * layout_.floats_per_slot(), layout_.bytes_per_slot());
}

void XlstmModel::ReadSlot(int32_t slot, float* host_dst) {
  backend_->CopyToHost(host_dst, arena_ + slot * layout_.floats_per_slot(),
                       layout_.bytes_per_slot());
}

void XlstmModel::WriteSlot(int32_t slot, const float* host_src) {
  backend_->CopyToDevice(arena_ + slot * layout_.floats_per_slot(), host_src,
                         layout_.bytes_per_slot());
}

void XlstmModel::CopySlot(int32_t src, int32_t dst) {
  if (src == dst) return;
  backend_->CopyDeviceToDevice(arena_ + dst * layout_.floats_per_slot(),
                               arena_ + src * layout_.floats_per_slot(),
                               layout_.bytes_per_slot());
}

absl::Status XlstmModel::ValidateSlots(absl::Span<const int32_t> slots) const {
  if (arena_ == nullptr) return absl::FailedPreconditionError("no state slots allocated");
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

absl::Status XlstmModel::EnsureWorkspace(int64_t rows) {
  Workspace& w = *ws_;
  if (rows <= w.capacity) return absl::OkStatus();
  const int64_t cap = std::max<int64_t>(rows, 2 * w.capacity);
  const ModelConfig& c = config_;
  const int64_t E = c.embedding_dim, V = c.v_dim(), F = c.ffn_dim(), P = InProjRows(c);
  auto pad = [](int64_t n) { return (n + 15) / 16 * 16; };
  const int64_t sizes[] = {pad(cap * E), pad(cap * E), pad(cap * P), pad(cap * V),
                           pad(cap * V), pad(cap * 2 * F), pad(cap * F)};
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  if (w.base != nullptr) backend_->Free(w.base);
  w.base = nullptr;
  w.capacity = 0;
  XLSTMD_ASSIGN_OR_RETURN(w.base, backend_->Alloc(static_cast<size_t>(total) * sizeof(float)));
  float* p = static_cast<float*>(w.base);
  float** slots[] = {&w.x, &w.hn, &w.proj, &w.hcell, &w.hgate, &w.ffn, &w.act};
  for (int i = 0; i < 7; ++i) {
    *slots[i] = p;
    p += sizes[i];
  }
  w.capacity = cap;
  return absl::OkStatus();
}

}  // namespace xlstmd::core
