// Family B config (xlstm-spec.md 4.1): the dataclass tree of upstream's xLSTMLMModelConfig as
// json, with our marker "model_type": "xlstm-paper". Every error names the file and the field
// path (e.g. "mlstm_block.mlstm.num_heads").
#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/model/config_internal.h"

namespace xlstmd::core {

namespace {

// Upstream's UpProjConfigMixin._set_proj_up_dim.
int64_t ProjUpDim(double factor, int64_t e, bool round_up, int64_t multiple) {
  if (multiple <= 0) return 0;
  const double q = factor * static_cast<double>(e) / static_cast<double>(multiple);
  const double k = round_up ? std::ceil(q) : std::floor(q);
  return static_cast<int64_t>(k * static_cast<double>(multiple));
}

}  // namespace

int64_t PaperConfig::m_inner(int64_t e) const {
  return ProjUpDim(m_proj_factor, e, m_round_up, m_round_multiple);
}
int64_t PaperConfig::ff_dim(int64_t e) const {
  return ProjUpDim(ff_proj_factor, e, ff_round_up, ff_round_multiple);
}
bool PaperConfig::has_mlstm() const {
  return std::find(slstm.begin(), slstm.end(), false) != slstm.end();
}
bool PaperConfig::has_slstm() const {
  return std::find(slstm.begin(), slstm.end(), true) != slstm.end();
}

namespace config_internal {
namespace {

using Json = nlohmann::json;

// The sub-object `key` of `obj` (nullptr when absent or null); an error when it is another type.
absl::StatusOr<const Json*> SubObject(const Json& obj, const std::string& key,
                                      const std::string& source, const std::string& path) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  if (!it->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"", path, "\" must be an object, got ", JsonTypeName(*it)));
  }
  return &*it;
}

absl::Status ReadSlstmAt(const Json& doc, const std::string& source, int64_t blocks,
                         std::vector<bool>* out) {
  out->assign(static_cast<size_t>(blocks), false);
  auto it = doc.find("slstm_at");
  if (it == doc.end() || it->is_null()) return absl::OkStatus();
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": field \"slstm_at\" ", what));
  };
  if (it->is_string()) {
    if (it->get_ref<const std::string&>() != "all")
      return bad("must be a list of block indices or \"all\"");
    out->assign(static_cast<size_t>(blocks), true);
    return absl::OkStatus();
  }
  if (!it->is_array())
    return bad(absl::StrCat("must be a list of block indices, got ", JsonTypeName(*it)));
  for (const Json& v : *it) {
    if (!v.is_number_integer()) return bad("must hold integers");
    const int64_t b = v.get<int64_t>();
    if (b < 0 || b >= blocks) {
      return bad(absl::StrCat("holds ", b, ", outside [0, num_blocks = ", blocks, ")"));
    }
    if ((*out)[static_cast<size_t>(b)]) return bad(absl::StrCat("holds ", b, " twice"));
    (*out)[static_cast<size_t>(b)] = true;
  }
  return absl::OkStatus();
}

absl::Status ReadMlstm(const Json& obj, const std::string& source, int64_t e, PaperConfig* p) {
  const std::string where = source + ": mlstm_block.mlstm";
  FieldReader r(obj, where);
  XLSTMD_RETURN_IF_ERROR(r.Int("num_heads", false, &p->m_heads));
  XLSTMD_RETURN_IF_ERROR(r.Int("conv1d_kernel_size", false, &p->m_conv));
  XLSTMD_RETURN_IF_ERROR(r.Int("qkv_proj_blocksize", false, &p->m_qkv_blocksize));
  XLSTMD_RETURN_IF_ERROR(r.Double("proj_factor", &p->m_proj_factor));
  XLSTMD_RETURN_IF_ERROR(r.Bool("round_proj_up_dim_up", &p->m_round_up));
  XLSTMD_RETURN_IF_ERROR(r.Int("round_proj_up_to_multiple_of", false, &p->m_round_multiple));
  p->m_bias = p->bias;
  XLSTMD_RETURN_IF_ERROR(r.Bool("bias", &p->m_bias));
  XLSTMD_RETURN_IF_ERROR(r.InRange("num_heads", p->m_heads, 1, kMaxDim));
  XLSTMD_RETURN_IF_ERROR(r.InRange("conv1d_kernel_size", p->m_conv, 0, 1024));
  XLSTMD_RETURN_IF_ERROR(r.InRange("qkv_proj_blocksize", p->m_qkv_blocksize, 1, kMaxDim));
  XLSTMD_RETURN_IF_ERROR(r.Positive("proj_factor", p->m_proj_factor, kMaxFactor));
  XLSTMD_RETURN_IF_ERROR(
      r.InRange("round_proj_up_to_multiple_of", p->m_round_multiple, 1, kMaxDim));
  const int64_t din = p->m_inner(e);
  if (din < 1) return r.Error("proj_factor", absl::StrCat("gives an inner dim of ", din));
  if (din % p->m_heads != 0) {
    return r.Error("num_heads", absl::StrCat("(", p->m_heads, ") must divide the inner dim ", din));
  }
  if (din % p->m_qkv_blocksize != 0) {
    return r.Error("qkv_proj_blocksize",
                   absl::StrCat("(", p->m_qkv_blocksize, ") must divide the inner dim ", din));
  }
  return absl::OkStatus();
}

absl::Status ReadSlstm(const Json& block, const std::string& source, const Json& doc, int64_t e,
                       PaperConfig* p) {
  XLSTMD_ASSIGN_OR_RETURN(const Json* cell, SubObject(block, "slstm", source, "slstm_block.slstm"));
  if (cell == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"slstm_block.slstm\" is missing"));
  }
  const std::string where = source + ": slstm_block.slstm";
  FieldReader r(*cell, where);
  XLSTMD_RETURN_IF_ERROR(r.Int("num_heads", false, &p->s_heads));
  XLSTMD_RETURN_IF_ERROR(r.Int("conv1d_kernel_size", false, &p->s_conv));
  XLSTMD_RETURN_IF_ERROR(r.Bool("group_norm_weight", &p->s_group_norm_weight));
  XLSTMD_RETURN_IF_ERROR(r.InRange("num_heads", p->s_heads, 1, e));
  XLSTMD_RETURN_IF_ERROR(r.InRange("conv1d_kernel_size", p->s_conv, 0, 1024));
  if (e % p->s_heads != 0) {
    return r.Error("num_heads", absl::StrCat("(", p->s_heads, ") must divide embedding_dim ", e));
  }
  // Which layout the stored recurrent kernel and bias have: our explicit marker first, else the
  // backend the model was trained with (the default backend, cuda, stores its own layout).
  std::string layout = "cuda";
  XLSTMD_RETURN_IF_ERROR(r.String("backend", &layout));
  FieldReader top(doc, source);
  if (top.Get("slstm_weight_layout") != nullptr) {
    XLSTMD_RETURN_IF_ERROR(top.String("slstm_weight_layout", &layout));
    if (layout != "cuda" && layout != "vanilla") {
      return top.Error("slstm_weight_layout",
                       absl::StrCat("must be \"cuda\" or \"vanilla\", got \"", layout, "\""));
    }
  } else if (layout != "cuda" && layout != "vanilla") {
    return r.Error("backend",
                   absl::StrCat("must be \"cuda\" or \"vanilla\", got \"", layout, "\""));
  }
  p->s_vanilla_layout = layout == "vanilla";

  XLSTMD_ASSIGN_OR_RETURN(const Json* ff,
                          SubObject(block, "feedforward", source, "slstm_block.feedforward"));
  // Upstream builds an sLSTM block without a feed-forward part when its config is None.
  p->s_ffn = ff != nullptr;
  if (ff == nullptr) return absl::OkStatus();
  const std::string ff_where = source + ": slstm_block.feedforward";
  FieldReader f(*ff, ff_where);
  XLSTMD_RETURN_IF_ERROR(f.Double("proj_factor", &p->ff_proj_factor));
  XLSTMD_RETURN_IF_ERROR(f.Bool("round_proj_up_dim_up", &p->ff_round_up));
  XLSTMD_RETURN_IF_ERROR(f.Int("round_proj_up_to_multiple_of", false, &p->ff_round_multiple));
  XLSTMD_RETURN_IF_ERROR(f.String("act_fn", &p->ff_act));
  // The FFN's biases follow its own config (upstream does not pass the stack's `bias` down).
  p->ff_bias = p->bias;
  XLSTMD_RETURN_IF_ERROR(f.Bool("bias", &p->ff_bias));
  std::string ff_type = "ffn_gated";
  XLSTMD_RETURN_IF_ERROR(f.String("ff_type", &ff_type));
  if (ff_type != "ffn_gated") {
    return f.Error("ff_type", absl::StrCat("must be \"ffn_gated\" (upstream's only type), got \"",
                                           ff_type, "\""));
  }
  static const std::set<std::string> kActs = {"gelu", "swish", "relu", "relu^2", "sigmoid", "selu"};
  if (kActs.count(p->ff_act) == 0) {
    return f.Error("act_fn",
                   absl::StrCat("must be one of gelu, swish, relu, relu^2, sigmoid, selu; got \"",
                                p->ff_act, "\""));
  }
  XLSTMD_RETURN_IF_ERROR(f.Positive("proj_factor", p->ff_proj_factor, kMaxFactor));
  XLSTMD_RETURN_IF_ERROR(
      f.InRange("round_proj_up_to_multiple_of", p->ff_round_multiple, 1, kMaxDim));
  if (p->ff_dim(e) < 1) {
    return f.Error("proj_factor", absl::StrCat("gives an FFN dim of ", p->ff_dim(e)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ReadPaperConfig(const Json& doc, const std::string& source, ModelConfig* c) {
  FieldReader r(doc, source);
  PaperConfig& p = c->paper;
  XLSTMD_RETURN_IF_ERROR(r.Int("vocab_size", true, &c->vocab_size));
  XLSTMD_RETURN_IF_ERROR(r.Int("embedding_dim", true, &c->embedding_dim));
  XLSTMD_RETURN_IF_ERROR(r.Int("num_blocks", true, &c->num_blocks));
  XLSTMD_RETURN_IF_ERROR(r.InRange("vocab_size", c->vocab_size, 1, kMaxVocab));
  XLSTMD_RETURN_IF_ERROR(r.InRange("embedding_dim", c->embedding_dim, 1, kMaxDim));
  XLSTMD_RETURN_IF_ERROR(r.InRange("num_blocks", c->num_blocks, 1, kMaxBlocks));
  XLSTMD_RETURN_IF_ERROR(r.Bool("add_post_blocks_norm", &p.add_post_blocks_norm));
  XLSTMD_RETURN_IF_ERROR(r.Bool("bias", &p.bias));
  XLSTMD_RETURN_IF_ERROR(r.Bool("tie_weights", &p.tie_weights));
  XLSTMD_RETURN_IF_ERROR(r.Int("bos_token_id", false, &c->bos_token_id));
  XLSTMD_RETURN_IF_ERROR(r.Int("pad_token_id", false, &c->pad_token_id));
  XLSTMD_RETURN_IF_ERROR(r.Int("eos_token_id", false, &c->eos_token_id));
  XLSTMD_RETURN_IF_ERROR(r.Bool("force_bos_token_insert", &c->force_bos_token_insert));
  const int64_t max_id = c->vocab_size - 1;
  XLSTMD_RETURN_IF_ERROR(r.InRange("bos_token_id", c->bos_token_id, 0, max_id));
  XLSTMD_RETURN_IF_ERROR(r.InRange("pad_token_id", c->pad_token_id, 0, max_id));
  XLSTMD_RETURN_IF_ERROR(r.InRange("eos_token_id", c->eos_token_id, 0, max_id));
  XLSTMD_RETURN_IF_ERROR(ReadSlstmAt(doc, source, c->num_blocks, &p.slstm));
  // Upstream's block stack makes every block an sLSTM block when there is no mLSTM config.
  {
    auto m = doc.find("mlstm_block");
    if ((m == doc.end() || m->is_null()) && doc.contains("slstm_block") &&
        doc["slstm_block"].is_object()) {
      p.slstm.assign(static_cast<size_t>(c->num_blocks), true);
    }
  }
  const int64_t e = c->embedding_dim;
  if (p.has_mlstm()) {
    XLSTMD_ASSIGN_OR_RETURN(const Json* block,
                            SubObject(doc, "mlstm_block", source, "mlstm_block"));
    const Json* cell = nullptr;
    if (block != nullptr) {
      XLSTMD_ASSIGN_OR_RETURN(cell, SubObject(*block, "mlstm", source, "mlstm_block.mlstm"));
    }
    if (cell == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": field \"mlstm_block.mlstm\" is missing, but some blocks are mLSTM blocks"));
    }
    XLSTMD_RETURN_IF_ERROR(ReadMlstm(*cell, source, e, &p));
  }
  if (p.has_slstm()) {
    XLSTMD_ASSIGN_OR_RETURN(const Json* block,
                            SubObject(doc, "slstm_block", source, "slstm_block"));
    if (block == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": field \"slstm_block\" is missing, but slstm_at names sLSTM blocks"));
    }
    XLSTMD_RETURN_IF_ERROR(ReadSlstm(*block, source, doc, e, &p));
  }
  // Family-A fields other code may read stay consistent: heads of the mLSTM cell (else the
  // sLSTM's), no soft caps, the post-blocks norm as the out norm.
  c->num_heads = p.has_mlstm() ? p.m_heads : p.s_heads;
  c->gate_soft_cap = 0.0f;
  c->output_logit_soft_cap = 0.0f;
  c->norm_eps = 1e-5f;
  c->eps = 1e-6f;
  c->use_bias = p.bias;
  c->add_out_norm = p.add_post_blocks_norm;
  c->tie_word_embeddings = p.tie_weights;
  return absl::OkStatus();
}

}  // namespace config_internal
}  // namespace xlstmd::core
