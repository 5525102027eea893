// XlstmModel's forward pass (xlstm-spec.md 3.2): Prefill, Step and the shared block loop.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/model/xlstm_model.h"
#include "core/model/xlstm_model_internal.h"

namespace xlstmd::core {

namespace kn = ::xlstmd::kernels;
using kernels::Backend;

// The block loop over `rows` token rows whose embeddings are in ws_->x. In step mode row r
// is one session continuing from slot slots[r]; otherwise sequence s owns rows
// [row_begin[s], row_begin[s] + length[s]) and continues from slots[s].
void XlstmModel::RunBlocks(int64_t rows, const std::vector<int32_t>& slots,
                           const std::vector<int64_t>& row_begin,
                           const std::vector<int64_t>& length, int64_t chunk_size, bool step) {
  const ModelConfig& c = config_;
  Workspace& w = *ws_;
  Backend& be = *backend_;
  const int64_t E = c.embedding_dim, NH = c.num_heads, QK = c.qk_dim(), VD = c.v_dim();
  const int64_t F = c.ffn_dim(), P = 2 * QK + 2 * VD + 2 * NH;
  // Column offsets inside the fused projection output.
  const int64_t oq = 0, ok = QK, ov = 2 * QK, oo = 2 * QK + VD, oi = 2 * QK + 2 * VD, of = oi + NH;
  const kn::MlstmDims dims{NH, c.dqk(), c.dv(), c.eps, 1.0f / std::sqrt(static_cast<float>(c.dqk()))};

  for (size_t b = 0; b < blocks_.size(); ++b) {
    const BlockWeights& bw = *blocks_[b];
    const MlstmBlockStateOffsets& so = layout_.block(static_cast<int64_t>(b));
    const kn::MlstmStateRef state{arena_, layout_.floats_per_slot(), so.c_offset, so.n_offset,
                                  so.m_offset};
    be.RmsNorm({w.x, bw.norm_mlstm_w, bw.norm_mlstm_b, w.hn, rows, E, E, E, c.norm_eps});
    be.MatMul({w.hn, bw.w_in.get(), w.proj, rows, E, P, false});
    if (bw.in_bias != nullptr) be.BiasSoftCap({w.proj, bw.in_bias, rows, P, P, 0.0f});
    // Input and forget gates are adjacent: one bias + soft-cap pass for both.
    be.BiasSoftCap({w.proj + oi, bw.gate_bias, rows, 2 * NH, P, c.gate_soft_cap});
    if (step) {
      be.MlstmStep({w.proj + oq, w.proj + ok, w.proj + ov, w.proj + oi, w.proj + of, w.hcell,
                    slots.data(), rows, P, P, P, P, P, VD, dims, state});
    } else {
      be.MlstmChunkwise({w.proj + oq, w.proj + ok, w.proj + ov, w.proj + oi, w.proj + of,
                         w.hcell, slots.data(), row_begin.data(), length.data(),
                         static_cast<int64_t>(slots.size()), chunk_size, P, P, P, P, P, VD,
                         dims, state});
    }
    be.HeadNormGate({w.hcell, w.proj + oo, bw.mh_norm_w, bw.mh_norm_b, w.hgate, rows, NH,
                     c.dv(), VD, P, VD, c.norm_eps});
    be.MatMul({w.hgate, bw.w_out.get(), w.x, rows, VD, E, true});
    if (bw.out_b != nullptr) be.BiasSoftCap({w.x, bw.out_b, rows, E, E, 0.0f});

    be.RmsNorm({w.x, bw.norm_ffn_w, bw.norm_ffn_b, w.hn, rows, E, E, E, c.norm_eps});
    be.MatMul({w.hn, bw.w_ffn_up.get(), w.ffn, rows, E, 2 * F, false});
    if (bw.ffn_up_b != nullptr) be.BiasSoftCap({w.ffn, bw.ffn_up_b, rows, 2 * F, 2 * F, 0.0f});
    be.SwiGlu({w.ffn, w.ffn + F, w.act, rows, F, 2 * F, F});
    be.MatMul({w.act, bw.w_ffn_down.get(), w.x, rows, F, E, true});
    if (bw.ffn_down_b != nullptr) be.BiasSoftCap({w.x, bw.ffn_down_b, rows, E, E, 0.0f});
  }
}

// Final norm + lm_head + soft cap for the listed residual rows; result in host memory.
absl::Status XlstmModel::ComputeLogits(const std::vector<int64_t>& rows,
                                       std::vector<float>* logits) {
  const ModelConfig& c = config_;
  Workspace& w = *ws_;
  Backend& be = *backend_;
  const int64_t E = c.embedding_dim, V = c.vocab_size, R = static_cast<int64_t>(rows.size());
  logits->resize(static_cast<size_t>(R * V));
  if (R == 0) return absl::OkStatus();
  // Gather the selected rows into hn (R <= rows in the workspace), then normalise in place.
  for (int64_t r = 0; r < R; ++r) {
    be.CopyDeviceToDevice(w.hn + r * E, w.x + rows[r] * E, E * sizeof(float));
  }
  if (c.add_out_norm) be.RmsNorm({w.hn, out_norm_w_, out_norm_b_, w.hn, R, E, E, E, c.norm_eps});
  // Logits go through a bounded device buffer, kLogitRowsPerPass rows at a time.
  constexpr int64_t kLogitRowsPerPass = 256;
  const int64_t pass = std::min(R, kLogitRowsPerPass);
  if (w.logits_rows < pass) {
    if (w.logits != nullptr) be.Free(w.logits);
    w.logits = nullptr;
    w.logits_rows = 0;
    XLSTMD_ASSIGN_OR_RETURN(void* p, be.Alloc(static_cast<size_t>(pass * V) * sizeof(float)));
    w.logits = static_cast<float*>(p);
    w.logits_rows = pass;
  }
  for (int64_t r0 = 0; r0 < R; r0 += pass) {
    const int64_t n = std::min(pass, R - r0);
    be.MatMul({w.hn + r0 * E, lm_head_.get(), w.logits, n, E, V, false});
    be.BiasSoftCap({w.logits, nullptr, n, V, V, c.output_logit_soft_cap});
    be.CopyToHost(logits->data() + r0 * V, w.logits, static_cast<size_t>(n * V) * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status XlstmModel::Prefill(absl::Span<const PrefillSequence> seqs,
                                 const PrefillOptions& options, std::vector<float>* logits) {
  if (options.chunk_size < 1) return absl::InvalidArgumentError("chunk_size must be >= 1");
  std::vector<int32_t> slots, ids;
  std::vector<int64_t> row_begin, length, logit_rows;
  for (const PrefillSequence& s : seqs) {
    if (s.tokens.empty()) continue;
    XLSTMD_RETURN_IF_ERROR(ValidateTokens(s.tokens));
    slots.push_back(s.slot);
    row_begin.push_back(static_cast<int64_t>(ids.size()));
    length.push_back(static_cast<int64_t>(s.tokens.size()));
    ids.insert(ids.end(), s.tokens.begin(), s.tokens.end());
    if (options.logits == LogitsMode::kLast) logit_rows.push_back(static_cast<int64_t>(ids.size()) - 1);
  }
  XLSTMD_RETURN_IF_ERROR(ValidateSlots(slots));
  if (options.logits == LogitsMode::kAll) {
    for (int64_t r = 0; r < static_cast<int64_t>(ids.size()); ++r) logit_rows.push_back(r);
  }
  if (ids.empty()) {
    if (logits != nullptr) logits->clear();
    return absl::OkStatus();
  }
  const int64_t rows = static_cast<int64_t>(ids.size());
  XLSTMD_RETURN_IF_ERROR(EnsureWorkspace(rows));
  backend_->Embed({embedding_.get(), ids.data(), ws_->x, rows, config_.embedding_dim});
  RunBlocks(rows, slots, row_begin, length, options.chunk_size, /*step=*/false);
  if (options.logits != LogitsMode::kNone && logits != nullptr) {
    XLSTMD_RETURN_IF_ERROR(ComputeLogits(logit_rows, logits));
  }
  backend_->Synchronize();
  return absl::OkStatus();
}

absl::Status XlstmModel::Step(absl::Span<const int32_t> tokens, absl::Span<const int32_t> slots,
                              std::vector<float>* logits) {
  if (tokens.size() != slots.size()) {
    return absl::InvalidArgumentError(absl::StrCat("Step got ", tokens.size(), " tokens but ",
                                                   slots.size(), " slots"));
  }
  XLSTMD_RETURN_IF_ERROR(ValidateTokens(tokens));
  XLSTMD_RETURN_IF_ERROR(ValidateSlots(slots));
  const int64_t rows = static_cast<int64_t>(tokens.size());
  if (rows == 0) {
    if (logits != nullptr) logits->clear();
    return absl::OkStatus();
  }
  XLSTMD_RETURN_IF_ERROR(EnsureWorkspace(rows));
  std::vector<int32_t> slot_vec(slots.begin(), slots.end());
  backend_->Embed({embedding_.get(), tokens.data(), ws_->x, rows, config_.embedding_dim});
  RunBlocks(rows, slot_vec, {}, {}, 1, /*step=*/true);
  if (logits != nullptr) {
    std::vector<int64_t> all(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) all[r] = r;
    XLSTMD_RETURN_IF_ERROR(ComputeLogits(all, logits));
  }
  backend_->Synchronize();
  return absl::OkStatus();
}

}  // namespace xlstmd::core
