// Family B (the xLSTM paper's xLSTMLMModel, xlstm-spec.md section 4) on the shared XlstmModel
// machinery: its weights (AddPaperWeights), activation widths and block loop
// (RunPaperBlocks). Prefill, decode, windows, slots and logits are family-independent
// (xlstm_forward.cc).
//
// Numerics: LayerNorms with scale 1 + w (folded at load) and eps 1e-5; the mLSTM cell with k
// scaled by 1/sqrt(DH) before it enters C and n (its gates see the unscaled k, so k is
// projected once unscaled for the gates and once scaled for the cell); no soft caps.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/model/checkpoint.h"
#include "core/model/weight_upload.h"
#include "core/model/xlstm_model.h"
#include "core/model/xlstm_model_internal.h"

namespace xlstmd::core {

namespace kn = ::xlstmd::kernels;
using kernels::Backend;

namespace {

constexpr float kNormEps = 1e-5f;
constexpr float kCellEps = 1e-6f;

void OnePlus(std::vector<float>& v) {
  for (float& x : v) x += 1.0f;
}

// [D, 1, ks] -> [ks, D], so the conv's loops over channels read contiguous weights.
auto TransposeConv(int64_t d, int64_t ks) {
  return [d, ks](std::vector<float>& v) {
    std::vector<float> t(v.size());
    for (int64_t c = 0; c < d; ++c)
      for (int64_t j = 0; j < ks; ++j) t[j * d + c] = v[c * ks + j];
    v.swap(t);
  };
}

// Headwise weights [P, O, I] -> [P, I, O] (HeadwiseParams): a block becomes a small GEMM.
auto TransposeHeadwise(int64_t blocks, int64_t out, int64_t in) {
  return [blocks, out, in](std::vector<float>& v) {
    std::vector<float> t(v.size());
    for (int64_t p = 0; p < blocks; ++p)
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i) t[(p * in + i) * out + o] = v[(p * out + o) * in + i];
    v.swap(t);
  };
}

// The vanilla backend's recurrent kernel [NH, 4*DH (g, out), DH (in)] -> the cuda layout
// [NH, DH (in), 4*DH (g, out)] the kernels use (spec 4.4).
auto VanillaKernelToCuda(int64_t nh, int64_t dh) {
  return [nh, dh](std::vector<float>& v) {
    std::vector<float> t(v.size());
    for (int64_t j = 0; j < nh; ++j)
      for (int64_t go = 0; go < 4 * dh; ++go)
        for (int64_t in = 0; in < dh; ++in)
          t[(j * dh + in) * 4 * dh + go] = v[(j * 4 * dh + go) * dh + in];
    v.swap(t);
  };
}

// Bias order (gate, head, unit) -> (head, gate, unit).
auto VanillaBiasToCuda(int64_t nh, int64_t dh) {
  return [nh, dh](std::vector<float>& v) {
    std::vector<float> t(v.size());
    for (int64_t g = 0; g < 4; ++g)
      for (int64_t j = 0; j < nh; ++j)
        for (int64_t u = 0; u < dh; ++u) t[(j * 4 + g) * dh + u] = v[(g * nh + j) * dh + u];
    v.swap(t);
  };
}

kn::GluAct ActOf(const std::string& name) {
  if (name == "swish") return kn::GluAct::kSilu;
  if (name == "relu") return kn::GluAct::kRelu;
  if (name == "relu^2") return kn::GluAct::kReluSq;
  if (name == "sigmoid") return kn::GluAct::kSigmoid;
  if (name == "selu") return kn::GluAct::kSelu;
  return kn::GluAct::kGelu;
}

}  // namespace

absl::Status XlstmModel::AddPaperWeights(const Checkpoint& ckpt, WeightUploader& up,
                                         const LoadOptions& options) {
  const ModelConfig& c = config_;
  const PaperConfig& p = c.paper;
  XLSTMD_ASSIGN_OR_RETURN(PaperTensors tensors, ResolvePaperTensors(ckpt, c));
  const int64_t e = c.embedding_dim;
  const kn::DType matrices = options.matrix_dtype.value_or(backend_->WeightDType());
  const kn::DType head = options.lm_head_dtype.value_or(matrices);
  auto norm = [&](const TensorSlice& w, const TensorSlice& b, int64_t n, float** w_out,
                  float** b_out) {
    up.AddVector({w}, n, w_out, OnePlus);
    if (b.tensor != nullptr) up.AddVector({b}, n, b_out);
  };
  for (int64_t b = 0; b < c.num_blocks; ++b) {
    const PaperBlockTensors& t = tensors.blocks[static_cast<size_t>(b)];
    auto bw = std::make_unique<BlockWeights>();
    BlockWeights* w = bw.get();
    w->slstm = t.slstm;
    norm(t.norm_w, t.norm_b, e, &w->norm_mlstm_w, &w->norm_mlstm_b);
    const int64_t d = t.slstm ? e : p.m_inner(e);
    const int64_t ks = t.slstm ? p.s_conv : p.m_conv;
    if (ks > 0) {
      up.AddVector({t.conv_w}, d * ks, &w->conv_w, TransposeConv(d, ks));
      up.AddVector({t.conv_b}, d, &w->conv_b);
    }
    if (t.slstm) {
      const int64_t nh = p.s_heads, dh = p.s_dh(e), f = p.ff_dim(e);
      const TensorSlice* gates[4] = {&t.gate_i, &t.gate_f, &t.gate_z, &t.gate_o};
      for (int g = 0; g < 4; ++g) {
        up.AddVector({*gates[g]}, nh * dh * dh, &w->hw[g], TransposeHeadwise(nh, dh, dh));
      }
      up.AddVector({t.recurrent}, nh * dh * 4 * dh, &w->s_recurrent,
                   p.s_vanilla_layout
                       ? std::function<void(std::vector<float>&)>(VanillaKernelToCuda(nh, dh))
                       : nullptr);
      up.AddVector({t.bias}, 4 * e, &w->s_bias,
                   p.s_vanilla_layout
                       ? std::function<void(std::vector<float>&)>(VanillaBiasToCuda(nh, dh))
                       : nullptr);
      TensorSlice gn = t.group_norm_w;
      gn.rows = e;  // absent (group_norm_weight false): zeros, i.e. scale 1
      up.AddVector({gn}, e, &w->group_norm_w, OnePlus);
      if (p.s_ffn) {
        norm(t.ffn_norm_w, t.ffn_norm_b, e, &w->norm_ffn_w, &w->norm_ffn_b);
        up.AddMatrix({t.ffn_up}, &w->w_ffn_up, matrices);
        up.AddMatrix({t.ffn_down}, &w->w_ffn_down, matrices);
        if (t.ffn_up_b.tensor != nullptr) up.AddVector({t.ffn_up_b}, 2 * f, &w->ffn_up_b);
        if (t.ffn_down_b.tensor != nullptr) up.AddVector({t.ffn_down_b}, e, &w->ffn_down_b);
      }
    } else {
      const int64_t din = p.m_inner(e), nh = p.m_heads, bs = p.m_qkv_blocksize;
      up.AddMatrix({t.proj_up}, &w->w_up, matrices);
      up.AddMatrix({t.igate_w, t.fgate_w}, &w->w_gates, matrices);
      up.AddMatrix({t.proj_down}, &w->w_down, matrices);
      if (t.proj_up_b.tensor != nullptr) up.AddVector({t.proj_up_b}, 2 * din, &w->up_b);
      if (t.proj_down_b.tensor != nullptr) up.AddVector({t.proj_down_b}, e, &w->out_b);
      const TensorSlice* qkv[3] = {&t.q, &t.k, &t.v};
      const TensorSlice* qkv_b[3] = {&t.q_b, &t.k_b, &t.v_b};
      for (int g = 0; g < 3; ++g) {
        up.AddVector({*qkv[g]}, din * bs, &w->hw[g], TransposeHeadwise(din / bs, bs, bs));
        if (qkv_b[g]->tensor != nullptr) up.AddVector({*qkv_b[g]}, din, &w->hw_b[g]);
      }
      up.AddVector({t.igate_b, t.fgate_b}, 2 * nh, &w->gate_bias);
      norm(t.outnorm_w, t.outnorm_b, din, &w->mh_norm_w, &w->mh_norm_b);
      up.AddVector({t.skip}, din, &w->skip);
    }
    blocks_.push_back(std::move(bw));
  }
  if (tensors.embedding.quant != kn::DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint ", ckpt.dir().string(), ": the embedding table ",
        tensors.embedding.tensor->name, " is quantized; it must be stored as a float"));
  }
  up.AddMatrix({tensors.embedding}, &embedding_, backend_->WeightDType());
  up.AddMatrix({tensors.lm_head}, &lm_head_, head);
  if (p.add_post_blocks_norm) {
    norm(tensors.post_norm_w, tensors.post_norm_b, e, &out_norm_w_, &out_norm_b_);
  }
  return absl::OkStatus();
}

// Widths of the Workspace buffers for family B (see xlstm_model_internal.h).
std::array<int64_t, 7> XlstmModel::PaperActivationFloats(int64_t rows) const {
  const ModelConfig& c = config_;
  const PaperConfig& p = c.paper;
  const int64_t e = c.embedding_dim;
  const int64_t din = p.has_mlstm() ? p.m_inner(e) : 0;
  const int64_t nh = p.has_mlstm() ? p.m_heads : 0;
  const int64_t f = p.has_slstm() && p.s_ffn ? p.ff_dim(e) : 0;
  const int64_t proj = std::max(2 * din, 4 * e);
  const int64_t wide = std::max(din, e);
  const int64_t ffn = std::max(3 * din + 2 * nh, 2 * f);
  const int64_t act = std::max(din, f);
  auto pad = [](int64_t n) { return (n + 15) / 16 * 16; };
  return {pad(rows * e),    pad(rows * e),   pad(rows * proj), pad(rows * wide),
          pad(rows * wide), pad(rows * ffn), pad(rows * act)};
}

void XlstmModel::RunPaperBlocks(const Window& win, const IndexArrays& dev, const IndexArrays& host,
                                int64_t chunk_size, bool step) {
  const ModelConfig& c = config_;
  const PaperConfig& p = c.paper;
  Workspace& w = *ws_;
  Backend& be = *backend_;
  const int64_t rows = win.rows(), e = c.embedding_dim;
  float* arena = arena_.as<float>();
  const int64_t stride = layout_.floats_per_slot();
  const int64_t num_seqs = static_cast<int64_t>(win.slots.size());
  const kn::RowSequences seqs =
      step ? kn::RowSequences{dev.slots, nullptr, nullptr, nullptr, nullptr, rows}
           : kn::RowSequences{dev.slots,      dev.row_begin, dev.length,
                              host.row_begin, host.length,   num_seqs};

  for (size_t b = 0; b < blocks_.size(); ++b) {
    const BlockWeights& bw = *blocks_[b];
    const MlstmBlockStateOffsets& so = layout_.block(static_cast<int64_t>(b));
    const int64_t window = so.conv_offset >= 0 ? so.conv_offset : 0;
    be.RmsNorm({w.x, bw.norm_mlstm_w, bw.norm_mlstm_b, w.hn, rows, e, e, e, kNormEps, true});
    if (bw.slstm) {
      const int64_t nh = p.s_heads, dh = p.s_dh(e), g = 4 * e, f = p.ff_dim(e);
      const float* xc = w.hn;
      if (p.s_conv > 0) {
        be.CausalConv({w.hn, bw.conv_w, bw.conv_b, w.hgate, seqs, e, p.s_conv, e, e, true, arena,
                       stride, window});
        xc = w.hgate;
      }
      // i and f from the conv branch, z and o from the normed input (spec 4.4).
      const float* inputs[4] = {xc, xc, w.hn, w.hn};
      for (int k = 0; k < 4; ++k) {
        be.Headwise({inputs[k], bw.hw[k], nullptr, w.proj + k * e, rows, nh, dh, dh, e, g, 1.0f});
      }
      be.SlstmSequence({w.proj, bw.s_recurrent, bw.s_bias, w.hcell, seqs, nh, dh, g, e, arena,
                        stride, so.h_offset, so.c_offset, so.n_offset, so.m_offset});
      be.HeadNormGate({w.hcell, nullptr, bw.group_norm_w, nullptr, w.x, rows, nh, dh, e, 0, e,
                       kNormEps, kn::GateAct::kNone, nullptr, nullptr, 0, /*accumulate=*/true});
      if (!p.s_ffn) continue;
      be.RmsNorm({w.x, bw.norm_ffn_w, bw.norm_ffn_b, w.hn, rows, e, e, e, kNormEps, true});
      be.MatMul({w.hn, bw.w_ffn_up.get(), w.ffn, rows, e, 2 * f, false, !step});
      if (bw.ffn_up_b != nullptr) be.BiasSoftCap({w.ffn, bw.ffn_up_b, rows, 2 * f, 2 * f, 0.0f});
      be.SwiGlu({w.ffn, w.ffn + f, w.act, rows, f, 2 * f, f, ActOf(p.ff_act)});
      be.MatMul({w.act, bw.w_ffn_down.get(), w.x, rows, f, e, true, !step});
      if (bw.ffn_down_b != nullptr) be.BiasSoftCap({w.x, bw.ffn_down_b, rows, e, e, 0.0f});
      continue;
    }
    const int64_t din = p.m_inner(e), nh = p.m_heads, dh = p.m_dh(e), bs = p.m_qkv_blocksize;
    const int64_t up = 2 * din, q = 3 * din + 2 * nh, blocks = din / bs;
    be.MatMul({w.hn, bw.w_up.get(), w.proj, rows, e, up, false, !step});
    if (bw.up_b != nullptr) be.BiasSoftCap({w.proj, bw.up_b, rows, up, up, 0.0f});
    const float* xm = w.proj;
    const float* z = w.proj + din;
    const float* xc = xm;
    int64_t ldxc = up;
    if (p.m_conv > 0) {
      be.CausalConv({xm, bw.conv_w, bw.conv_b, w.hgate, seqs, din, p.m_conv, up, din, true, arena,
                     stride, window});
      xc = w.hgate;
      ldxc = din;
    }
    float* qp = w.ffn;
    float* kp = w.ffn + din;
    float* vp = w.ffn + 2 * din;
    float* gates = w.ffn + 3 * din;
    be.Headwise({xc, bw.hw[0], bw.hw_b[0], qp, rows, blocks, bs, bs, ldxc, q, 1.0f});
    be.Headwise({xc, bw.hw[1], bw.hw_b[1], kp, rows, blocks, bs, bs, ldxc, q, 1.0f});
    be.Headwise({xm, bw.hw[2], bw.hw_b[2], vp, rows, blocks, bs, bs, up, q, 1.0f});
    be.MatMul({w.ffn, bw.w_gates.get(), gates, rows, q, q, false, !step});
    be.BiasSoftCap({gates, bw.gate_bias, rows, 2 * nh, q, 0.0f});
    // The cell's k carries 1/sqrt(DH) (its state holds the scaled keys, spec 2.5).
    be.Headwise({xc, bw.hw[1], bw.hw_b[1], kp, rows, blocks, bs, bs, ldxc, q,
                 1.0f / std::sqrt(static_cast<float>(dh))});
    const kn::MlstmDims dims{nh, dh, dh, kCellEps, 1.0f};
    const kn::MlstmStateRef state{arena, stride, so.c_offset, so.n_offset, so.m_offset};
    if (step) {
      be.MlstmStep({qp, kp, vp, gates, gates + nh, w.hcell, dev.slots, rows, q, q, q, q, q, din,
                    dims, state});
    } else {
      be.MlstmChunkwise({qp,          kp,
                         vp,          gates,
                         gates + nh,  w.hcell,
                         dev.slots,   dev.row_begin,
                         dev.length,  host.row_begin,
                         host.length, num_seqs,
                         chunk_size,  q,
                         q,           q,
                         q,           q,
                         din,         dims,
                         state});
    }
    be.HeadNormGate({w.hcell, z, bw.mh_norm_w, bw.mh_norm_b, w.act, rows, nh, dh, din, up, din,
                     kNormEps, kn::GateAct::kSilu, bw.skip, xc, ldxc, false});
    be.MatMul({w.act, bw.w_down.get(), w.x, rows, din, e, true, !step});
    if (bw.out_b != nullptr) be.BiasSoftCap({w.x, bw.out_b, rows, e, e, 0.0f});
  }
}

}  // namespace xlstmd::core
