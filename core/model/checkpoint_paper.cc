// Family-B tensors (xlstm-spec.md 4.6) under upstream's xLSTMLMModel module names, each checked
// against the shape the config implies. Biases are taken when their config allows them and the
// checkpoint has them (mlstm.bias: proj_up, proj_down, q/k/v; feedforward.bias: the FFN;
// `bias`: norm biases); a bias the config does not allow is an unused tensor, hence an error.
#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/model/checkpoint.h"
#include "core/model/checkpoint_internal.h"

namespace xlstmd::core {
namespace {

using checkpoint_internal::kVector;
using checkpoint_internal::Resolver;

// The tensor when the config allows biases and the checkpoint has it; else an unset slice.
absl::StatusOr<TensorSlice> OptionalBias(Resolver& r, bool bias, const std::string& name,
                                         int64_t n) {
  if (!bias || !r.Has(name)) return TensorSlice{};
  return r.Whole(name, n, kVector);
}

absl::Status ResolveConv(Resolver& r, const std::string& x, int64_t d, int64_t ks,
                         PaperBlockTensors* bt) {
  if (ks <= 0) return absl::OkStatus();
  XLSTMD_ASSIGN_OR_RETURN(bt->conv_w, r.Shaped(x + "conv1d.conv.weight", {d, 1, ks}));
  XLSTMD_ASSIGN_OR_RETURN(bt->conv_b, r.Whole(x + "conv1d.conv.bias", d, kVector));
  return absl::OkStatus();
}

absl::Status ResolveMlstmBlock(Resolver& r, const ModelConfig& c, const std::string& x,
                               PaperBlockTensors* bt) {
  const PaperConfig& p = c.paper;
  const int64_t e = c.embedding_dim, din = p.m_inner(e), bs = p.m_qkv_blocksize, nh = p.m_heads;
  XLSTMD_ASSIGN_OR_RETURN(bt->proj_up, r.Whole(x + "proj_up.weight", 2 * din, e));
  XLSTMD_ASSIGN_OR_RETURN(bt->proj_up_b, OptionalBias(r, p.m_bias, x + "proj_up.bias", 2 * din));
  XLSTMD_RETURN_IF_ERROR(ResolveConv(r, x, din, p.m_conv, bt));
  const std::vector<int64_t> hw{din / bs, bs, bs};
  XLSTMD_ASSIGN_OR_RETURN(bt->q, r.Shaped(x + "q_proj.weight", hw));
  XLSTMD_ASSIGN_OR_RETURN(bt->k, r.Shaped(x + "k_proj.weight", hw));
  XLSTMD_ASSIGN_OR_RETURN(bt->v, r.Shaped(x + "v_proj.weight", hw));
  XLSTMD_ASSIGN_OR_RETURN(bt->q_b, OptionalBias(r, p.m_bias, x + "q_proj.bias", din));
  XLSTMD_ASSIGN_OR_RETURN(bt->k_b, OptionalBias(r, p.m_bias, x + "k_proj.bias", din));
  XLSTMD_ASSIGN_OR_RETURN(bt->v_b, OptionalBias(r, p.m_bias, x + "v_proj.bias", din));
  const std::string cell = x + "mlstm_cell.";
  XLSTMD_ASSIGN_OR_RETURN(bt->igate_w, r.Whole(cell + "igate.weight", nh, 3 * din));
  XLSTMD_ASSIGN_OR_RETURN(bt->fgate_w, r.Whole(cell + "fgate.weight", nh, 3 * din));
  XLSTMD_ASSIGN_OR_RETURN(bt->igate_b, r.Whole(cell + "igate.bias", nh, kVector));
  XLSTMD_ASSIGN_OR_RETURN(bt->fgate_b, r.Whole(cell + "fgate.bias", nh, kVector));
  XLSTMD_ASSIGN_OR_RETURN(bt->outnorm_w, r.Whole(cell + "outnorm.weight", din, kVector));
  XLSTMD_ASSIGN_OR_RETURN(bt->outnorm_b, OptionalBias(r, p.bias, cell + "outnorm.bias", din));
  XLSTMD_ASSIGN_OR_RETURN(bt->skip, r.Whole(x + "learnable_skip", din, kVector));
  XLSTMD_ASSIGN_OR_RETURN(bt->proj_down, r.Whole(x + "proj_down.weight", e, din));
  XLSTMD_ASSIGN_OR_RETURN(bt->proj_down_b, OptionalBias(r, p.m_bias, x + "proj_down.bias", e));
  return absl::OkStatus();
}

absl::Status ResolveSlstmBlock(Resolver& r, const ModelConfig& c, const std::string& blk,
                               PaperBlockTensors* bt) {
  const PaperConfig& p = c.paper;
  const int64_t e = c.embedding_dim, nh = p.s_heads, dh = p.s_dh(e), f = p.ff_dim(e);
  const std::string x = blk + "xlstm.";
  XLSTMD_RETURN_IF_ERROR(ResolveConv(r, x, e, p.s_conv, bt));
  const std::vector<int64_t> hw{nh, dh, dh};
  XLSTMD_ASSIGN_OR_RETURN(bt->gate_i, r.Shaped(x + "fgate.weight", hw));
  XLSTMD_ASSIGN_OR_RETURN(bt->gate_f, r.Shaped(x + "igate.weight", hw));
  XLSTMD_ASSIGN_OR_RETURN(bt->gate_z, r.Shaped(x + "zgate.weight", hw));
  XLSTMD_ASSIGN_OR_RETURN(bt->gate_o, r.Shaped(x + "ogate.weight", hw));
  const std::vector<int64_t> rk = p.s_vanilla_layout ? std::vector<int64_t>{nh, 4 * dh, dh}
                                                     : std::vector<int64_t>{nh, dh, 4 * dh};
  XLSTMD_ASSIGN_OR_RETURN(bt->recurrent, r.Shaped(x + "slstm_cell._recurrent_kernel_", rk));
  XLSTMD_ASSIGN_OR_RETURN(bt->bias, r.Whole(x + "slstm_cell._bias_", 4 * e, kVector));
  if (p.s_group_norm_weight) {
    XLSTMD_ASSIGN_OR_RETURN(bt->group_norm_w, r.Whole(x + "group_norm.weight", e, kVector));
  }
  if (!p.s_ffn) return absl::OkStatus();
  XLSTMD_ASSIGN_OR_RETURN(bt->ffn_norm_w, r.Whole(blk + "ffn_norm.weight", e, kVector));
  XLSTMD_ASSIGN_OR_RETURN(bt->ffn_norm_b, OptionalBias(r, p.bias, blk + "ffn_norm.bias", e));
  XLSTMD_ASSIGN_OR_RETURN(bt->ffn_up, r.Whole(blk + "ffn.proj_up.weight", 2 * f, e));
  XLSTMD_ASSIGN_OR_RETURN(bt->ffn_up_b,
                          OptionalBias(r, p.ff_bias, blk + "ffn.proj_up.bias", 2 * f));
  XLSTMD_ASSIGN_OR_RETURN(bt->ffn_down, r.Whole(blk + "ffn.proj_down.weight", e, f));
  XLSTMD_ASSIGN_OR_RETURN(bt->ffn_down_b,
                          OptionalBias(r, p.ff_bias, blk + "ffn.proj_down.bias", e));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PaperTensors> ResolvePaperTensors(const Checkpoint& ckpt, const ModelConfig& c) {
  Resolver r(ckpt);
  PaperTensors out;
  const int64_t e = c.embedding_dim;
  // safetensors' save_model keeps one name of a tied pair (lm_head.weight sorts first).
  const bool head_only =
      c.paper.tie_weights && !r.Has("token_embedding.weight") && r.Has("lm_head.weight");
  XLSTMD_ASSIGN_OR_RETURN(
      out.embedding,
      r.Whole(head_only ? "lm_head.weight" : "token_embedding.weight", c.vocab_size, e));
  for (int64_t b = 0; b < c.num_blocks; ++b) {
    const std::string blk = absl::StrCat("xlstm_block_stack.blocks.", b, ".");
    PaperBlockTensors bt;
    bt.slstm = c.paper.slstm[static_cast<size_t>(b)];
    XLSTMD_ASSIGN_OR_RETURN(bt.norm_w, r.Whole(blk + "xlstm_norm.weight", e, kVector));
    XLSTMD_ASSIGN_OR_RETURN(bt.norm_b, OptionalBias(r, c.paper.bias, blk + "xlstm_norm.bias", e));
    if (bt.slstm) {
      XLSTMD_RETURN_IF_ERROR(ResolveSlstmBlock(r, c, blk, &bt));
    } else {
      XLSTMD_RETURN_IF_ERROR(ResolveMlstmBlock(r, c, blk + "xlstm.", &bt));
    }
    out.blocks.push_back(std::move(bt));
  }
  if (c.paper.add_post_blocks_norm) {
    const std::string norm = "xlstm_block_stack.post_blocks_norm.";
    XLSTMD_ASSIGN_OR_RETURN(out.post_norm_w, r.Whole(norm + "weight", e, kVector));
    XLSTMD_ASSIGN_OR_RETURN(out.post_norm_b, OptionalBias(r, c.paper.bias, norm + "bias", e));
  }
  // Upstream ties by sharing the parameter; a checkpoint may still store lm_head.weight.
  if (c.paper.tie_weights && (head_only || !r.Has("lm_head.weight"))) {
    out.lm_head = out.embedding;
  } else {
    XLSTMD_ASSIGN_OR_RETURN(out.lm_head, r.Whole("lm_head.weight", c.vocab_size, e));
  }
  XLSTMD_RETURN_IF_ERROR(r.CheckAllUsed());
  return out;
}

}  // namespace xlstmd::core
