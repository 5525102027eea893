#include "core/model/random_model_paper.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "core/model/random_model.h"
#include "core/model/config.h"
#include "core/model/random_model_internal.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core {
namespace {

// Sorted keys, as upstream's json.dumps(sort_keys=True) wrote the golden configs.
using Json = nlohmann::json;
using random_model_internal::Draw;
using random_model_internal::MakePlan;
using random_model_internal::Normal;
using random_model_internal::Relayout;
using random_model_internal::TensorPlan;
using random_model_internal::Uniform;

// Upstream's default rounding of the up-projections (round_proj_up_dim_up,
// round_proj_up_to_multiple_of); fixed here so Din and F follow from the factors.
constexpr int64_t kRoundMultiple = 64;
constexpr double kSmallBias = 0.05;
constexpr double kNormOffset = 0.1;

// The loader's view of the spec, so derived dims round exactly as at load time.
PaperConfig DimsOf(const PaperModelSpec& spec) {
  PaperConfig p;
  p.slstm.assign(static_cast<size_t>(std::max<int64_t>(spec.num_blocks, 0)), false);
  for (int64_t b : spec.slstm_at) {
    if (b >= 0 && b < spec.num_blocks) p.slstm[static_cast<size_t>(b)] = true;
  }
  p.bias = spec.bias;
  p.tie_weights = spec.tie_weights;
  p.m_heads = spec.mlstm_heads;
  p.m_conv = spec.mlstm_conv;
  p.m_qkv_blocksize = spec.qkv_proj_blocksize;
  p.m_proj_factor = spec.mlstm_proj_factor;
  p.m_round_up = true;
  p.m_round_multiple = kRoundMultiple;
  p.s_heads = spec.slstm_heads;
  p.s_conv = spec.slstm_conv;
  p.s_group_norm_weight = spec.group_norm_weight;
  p.s_vanilla_layout = spec.slstm_layout == SlstmWeightLayout::kVanilla;
  p.ff_proj_factor = spec.ffn_proj_factor;
  p.ff_round_up = true;
  p.ff_round_multiple = kRoundMultiple;
  p.ff_act = spec.ffn_act;
  return p;
}

class Planner {
 public:
  explicit Planner(const PaperModelSpec& spec)
      : spec_(spec),
        p_(DimsOf(spec)),
        e_(spec.embedding_dim),
        depth_(1.0 / std::sqrt(2.0 * static_cast<double>(spec.num_blocks))) {}

  // Single use: hands over the list it built.
  std::vector<TensorPlan> Plan() && {
    const double embedding_std = spec_.tie_weights ? InvSqrt(e_) : 1.0;
    Add("token_embedding.weight", {spec_.vocab, e_}, Normal(embedding_std));
    for (int64_t b = 0; b < spec_.num_blocks; ++b) {
      const std::string blk = absl::StrCat("xlstm_block_stack.blocks.", b, ".");
      Add(blk + "xlstm_norm.weight", {e_}, Uniform(-kNormOffset, kNormOffset));
      if (p_.slstm[static_cast<size_t>(b)]) {
        SlstmBlock(blk);
      } else {
        MlstmBlock(blk + "xlstm.");
      }
    }
    Add("xlstm_block_stack.post_blocks_norm.weight", {e_}, Uniform(-kNormOffset, kNormOffset));
    if (!spec_.tie_weights) Add("lm_head.weight", {spec_.vocab, e_}, Normal(InvSqrt(e_)));
    return std::move(plans_);
  }

 private:
  static double InvSqrt(int64_t n) { return 1.0 / std::sqrt(static_cast<double>(n)); }

  void Add(std::string name, std::vector<int64_t> shape, Draw draw) {
    plans_.push_back(MakePlan(std::move(name), std::move(shape), {draw}));
  }
  void Bias(const std::string& name, int64_t n) {
    if (spec_.bias) Add(name, {n}, Uniform(-kSmallBias, kSmallBias));
  }
  void Conv(const std::string& x, int64_t d, int64_t ks) {
    if (ks <= 0) return;
    Add(x + "conv1d.conv.weight", {d, 1, ks}, Normal(InvSqrt(ks)));
    Add(x + "conv1d.conv.bias", {d}, Uniform(-kSmallBias, kSmallBias));
  }

  void MlstmBlock(const std::string& x) {
    const int64_t din = p_.m_inner(e_), bs = p_.m_qkv_blocksize, nh = p_.m_heads;
    Add(x + "proj_up.weight", {2 * din, e_}, Normal(InvSqrt(e_)));
    Bias(x + "proj_up.bias", 2 * din);
    Conv(x, din, p_.m_conv);
    for (const char* qkv : {"q_proj", "k_proj", "v_proj"}) {
      Add(absl::StrCat(x, qkv, ".weight"), {din / bs, bs, bs}, Normal(InvSqrt(bs)));
      Bias(absl::StrCat(x, qkv, ".bias"), din);
    }
    const std::string cell = x + "mlstm_cell.";
    Add(cell + "igate.weight", {nh, 3 * din}, Normal(InvSqrt(3 * din)));
    Add(cell + "igate.bias", {nh}, Uniform(-3.0, 0.0));
    Add(cell + "fgate.weight", {nh, 3 * din}, Normal(InvSqrt(3 * din)));
    Add(cell + "fgate.bias", {nh}, Uniform(3.0, 6.0));
    Add(cell + "outnorm.weight", {din}, Uniform(-kNormOffset, kNormOffset));
    Add(x + "learnable_skip", {din}, Uniform(0.9, 1.1));
    Add(x + "proj_down.weight", {e_, din}, Normal(depth_ * InvSqrt(din)));
    Bias(x + "proj_down.bias", e_);
  }

  void SlstmBlock(const std::string& blk) {
    const std::string x = blk + "xlstm.";
    const int64_t nh = p_.s_heads, dh = p_.s_dh(e_), f = p_.ff_dim(e_);
    const bool vanilla = p_.s_vanilla_layout;
    Conv(x, e_, p_.s_conv);
    for (const char* gate : {"fgate", "igate", "zgate", "ogate"}) {
      Add(absl::StrCat(x, gate, ".weight"), {nh, dh, dh}, Normal(InvSqrt(dh)));
    }
    // Logical R is [NH, DH (in), 4 * DH (g, out)], the cuda order; vanilla stores each head's
    // [DH, 4 * DH] matrix transposed.
    TensorPlan recurrent = MakePlan(
        x + "slstm_cell._recurrent_kernel_",
        vanilla ? std::vector<int64_t>{nh, 4 * dh, dh} : std::vector<int64_t>{nh, dh, 4 * dh},
        {Normal(InvSqrt(dh))});
    if (vanilla) recurrent.relayout = Relayout{nh, dh, 4 * dh, 1};
    plans_.push_back(std::move(recurrent));
    // Logical B is (head, gate, unit), the cuda order; vanilla stores (gate, head, unit).
    // Segments of DH cycle through the gates i, f, z, o.
    TensorPlan bias =
        MakePlan(x + "slstm_cell._bias_", {4 * e_},
                 {Uniform(-3.0, 0.0), Uniform(3.0, 6.0), Uniform(-kSmallBias, kSmallBias),
                  Uniform(-kSmallBias, kSmallBias)});
    bias.segment = dh;
    if (vanilla) bias.relayout = Relayout{1, nh, 4, dh};
    plans_.push_back(std::move(bias));
    if (p_.s_group_norm_weight) {
      Add(x + "group_norm.weight", {e_}, Uniform(-kNormOffset, kNormOffset));
    }
    Add(blk + "ffn_norm.weight", {e_}, Uniform(-kNormOffset, kNormOffset));
    Add(blk + "ffn.proj_up.weight", {2 * f, e_}, Normal(InvSqrt(e_)));
    Bias(blk + "ffn.proj_up.bias", 2 * f);
    Add(blk + "ffn.proj_down.weight", {e_, f}, Normal(depth_ * InvSqrt(f)));
    Bias(blk + "ffn.proj_down.bias", e_);
  }

  const PaperModelSpec& spec_;
  const PaperConfig p_;
  const int64_t e_;
  const double depth_;
  std::vector<TensorPlan> plans_;
};

// upstream's xLSTMLMModelConfig after __post_init__, field for field as in
// shared/golden/xlstm-paper-b1/config.json; the training-only fields keep upstream's defaults.
Json MlstmBlockJson(const PaperModelSpec& spec, const PaperConfig& p) {
  const int64_t din = p.m_inner(spec.embedding_dim);
  Json m;
  m["_inner_embedding_dim"] = din;
  m["_num_blocks"] = spec.num_blocks;
  m["_proj_up_dim"] = din;
  m["bias"] = spec.bias;
  m["context_length"] = spec.context_length;
  m["conv1d_kernel_size"] = spec.mlstm_conv;
  m["dropout"] = 0.0;
  m["embedding_dim"] = spec.embedding_dim;
  m["num_heads"] = spec.mlstm_heads;
  m["proj_factor"] = spec.mlstm_proj_factor;
  m["qkv_proj_blocksize"] = spec.qkv_proj_blocksize;
  m["round_proj_up_dim_up"] = true;
  m["round_proj_up_to_multiple_of"] = kRoundMultiple;
  return Json{{"_block_idx", nullptr}, {"_num_blocks", spec.num_blocks}, {"mlstm", m}};
}

Json SlstmBlockJson(const PaperModelSpec& spec, const PaperConfig& p) {
  Json ff;
  ff["_num_blocks"] = spec.num_blocks;
  ff["_proj_up_dim"] = p.ff_dim(spec.embedding_dim);
  ff["act_fn"] = spec.ffn_act;
  ff["bias"] = spec.bias;
  ff["dropout"] = 0.0;
  ff["embedding_dim"] = spec.embedding_dim;
  ff["ff_type"] = "ffn_gated";
  ff["proj_factor"] = spec.ffn_proj_factor;
  ff["round_proj_up_dim_up"] = true;
  ff["round_proj_up_to_multiple_of"] = kRoundMultiple;
  Json s;
  s["_block_idx"] = nullptr;
  s["_num_blocks"] = spec.num_blocks;
  // The backend that stores the layout we write (config_paper.cc reads either field).
  s["backend"] = p.s_vanilla_layout ? "vanilla" : "cuda";
  s["batch_size"] = 8;
  s["bias_init"] = "powerlaw_blockdependent";
  s["constants"] = Json::object();
  s["conv1d_kernel_size"] = spec.slstm_conv;
  s["dropout"] = 0.0;
  s["dtype"] = "bfloat16";
  s["dtype_a"] = "float32";
  s["dtype_b"] = "float32";
  s["dtype_g"] = "bfloat16";
  s["dtype_r"] = "bfloat16";
  s["dtype_s"] = "bfloat16";
  s["dtype_w"] = "bfloat16";
  s["embedding_dim"] = spec.embedding_dim;
  s["enable_automatic_mixed_precision"] = true;
  s["forward_clipval"] = nullptr;
  s["function"] = "slstm";
  s["gradient_recurrent_clipval"] = nullptr;
  s["gradient_recurrent_cut"] = false;
  s["group_norm_weight"] = spec.group_norm_weight;
  s["hidden_size"] = spec.embedding_dim;
  s["initial_val"] = 0.0;
  s["input_shape"] = "BSGNH";
  s["internal_input_shape"] = "SBNGH";
  s["num_gates"] = 4;
  s["num_heads"] = spec.slstm_heads;
  s["num_states"] = 4;
  s["output_shape"] = "BNSH";
  s["recurrent_weight_init"] = "zeros";
  return Json{
      {"_block_idx", nullptr}, {"_num_blocks", spec.num_blocks}, {"feedforward", ff}, {"slstm", s}};
}

std::string ConfigJson(const PaperModelSpec& spec) {
  const PaperConfig p = DimsOf(spec);
  const char* layout = p.s_vanilla_layout ? "vanilla" : "cuda";
  std::vector<int64_t> slstm_at;
  std::vector<int> block_map;
  std::vector<std::string> block_types;
  for (size_t b = 0; b < p.slstm.size(); ++b) {
    if (p.slstm[b]) slstm_at.push_back(static_cast<int64_t>(b));
    block_map.push_back(p.slstm[b] ? 1 : 0);
    block_types.push_back(p.slstm[b] ? "slstm" : "mlstm");
  }
  Json j;
  j[kRandomWeightsKey] = true;
  j["_block_map"] = absl::StrJoin(block_map, ",");
  j["_block_types"] = block_types;
  j["_note"] = absl::StrCat(
      "Dataclass fields of xlstm.xLSTMLMModelConfig after __post_init__ (derived fields start "
      "with '_'). Random weights written by `xlstm mkmodel --family xlstm-paper`. sLSTM cell "
      "params in model.safetensors use the ",
      layout, "-backend internal layout; see xlstm-spec.md 4.4.");
  j["add_embedding_dropout"] = false;
  j["add_post_blocks_norm"] = true;
  j["architecture"] = "xLSTMLMModel";
  j["bias"] = spec.bias;
  j["context_length"] = spec.context_length;
  j["dropout"] = 0.0;
  j["embedding_dim"] = spec.embedding_dim;
  j["mlstm_block"] = p.has_mlstm() ? MlstmBlockJson(spec, p) : Json(nullptr);
  j["model_type"] = "xlstm-paper";
  j["num_blocks"] = spec.num_blocks;
  j["slstm_at"] = slstm_at;
  j["slstm_block"] = p.has_slstm() ? SlstmBlockJson(spec, p) : Json(nullptr);
  j["slstm_weight_layout"] = layout;
  j["tie_weights"] = spec.tie_weights;
  j["vocab_size"] = spec.vocab;
  j["weight_decay_on_embedding"] = false;
  return j.dump(2) + "\n";
}

absl::Status CheckRange(const char* field, int64_t v, int64_t lo, int64_t hi) {
  if (v >= lo && v <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, " ", v, " out of range [", lo, ", ", hi, "]"));
}

absl::Status CheckFactor(const char* field, double f) {
  if (f > 0.0 && f <= 64.0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " ", f, " out of (0, 64]"));
}

absl::Status CheckDivides(const char* field, int64_t v, const char* dim_name, int64_t dim) {
  if (dim % v == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, " ", v, " does not divide ", dim_name, " ", dim));
}

absl::Status ValidateMlstm(const PaperModelSpec& spec, const PaperConfig& p) {
  XLSTMD_RETURN_IF_ERROR(CheckFactor("mlstm_proj_factor", spec.mlstm_proj_factor));
  XLSTMD_RETURN_IF_ERROR(CheckRange("mlstm_heads", spec.mlstm_heads, 1, int64_t{1} << 20));
  XLSTMD_RETURN_IF_ERROR(CheckRange("mlstm_conv", spec.mlstm_conv, 0, 1024));
  XLSTMD_RETURN_IF_ERROR(
      CheckRange("qkv_proj_blocksize", spec.qkv_proj_blocksize, 1, int64_t{1} << 20));
  const int64_t din = p.m_inner(spec.embedding_dim);
  XLSTMD_RETURN_IF_ERROR(CheckDivides("mlstm_heads", spec.mlstm_heads, "the mLSTM inner dim", din));
  return CheckDivides("qkv_proj_blocksize", spec.qkv_proj_blocksize, "the mLSTM inner dim", din);
}

absl::Status ValidateSlstm(const PaperModelSpec& spec) {
  XLSTMD_RETURN_IF_ERROR(CheckRange("slstm_heads", spec.slstm_heads, 1, spec.embedding_dim));
  XLSTMD_RETURN_IF_ERROR(
      CheckDivides("slstm_heads", spec.slstm_heads, "embedding_dim", spec.embedding_dim));
  XLSTMD_RETURN_IF_ERROR(CheckRange("slstm_conv", spec.slstm_conv, 0, 1024));
  XLSTMD_RETURN_IF_ERROR(CheckFactor("ffn_proj_factor", spec.ffn_proj_factor));
  static const std::set<std::string> kActs = {"gelu", "swish", "relu", "relu^2", "sigmoid", "selu"};
  if (kActs.count(spec.ffn_act) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ffn_act \"", spec.ffn_act, "\" is not one of gelu, swish, relu, relu^2, sigmoid, selu"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidatePaperModelSpec(const PaperModelSpec& spec) {
  XLSTMD_RETURN_IF_ERROR(CheckRange("embedding_dim", spec.embedding_dim, 1, int64_t{1} << 20));
  XLSTMD_RETURN_IF_ERROR(CheckRange("num_blocks", spec.num_blocks, 1, 4096));
  XLSTMD_RETURN_IF_ERROR(CheckRange("vocab", spec.vocab, 3, int64_t{1} << 24));
  XLSTMD_RETURN_IF_ERROR(CheckRange("context_length", spec.context_length, 1, int64_t{1} << 30));
  std::set<int64_t> seen;
  for (int64_t b : spec.slstm_at) {
    if (b < 0 || b >= spec.num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("slstm_at holds ", b, ", outside [0, num_blocks = ", spec.num_blocks, ")"));
    }
    if (!seen.insert(b).second) {
      return absl::InvalidArgumentError(absl::StrCat("slstm_at holds ", b, " twice"));
    }
  }
  if (spec.dtype != kernels::DType::kF32 && spec.dtype != kernels::DType::kBF16) {
    return absl::InvalidArgumentError("dtype must be f32 or bf16");
  }
  if (spec.max_shard_bytes == 0) return absl::InvalidArgumentError("max_shard_bytes must be > 0");
  const PaperConfig p = DimsOf(spec);
  if (p.has_mlstm()) XLSTMD_RETURN_IF_ERROR(ValidateMlstm(spec, p));
  if (p.has_slstm()) XLSTMD_RETURN_IF_ERROR(ValidateSlstm(spec));
  return absl::OkStatus();
}

int64_t PaperModelParameterCount(const PaperModelSpec& spec) {
  int64_t total = 0;
  for (const TensorPlan& t : Planner(spec).Plan()) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    total += n;
  }
  return total;
}

absl::Status WritePaperRandomModel(const PaperModelSpec& spec,
                                   const std::filesystem::path& out_dir) {
  XLSTMD_RETURN_IF_ERROR(ValidatePaperModelSpec(spec));
  random_model_internal::WriteOptions options;
  options.dtype = spec.dtype;
  options.seed = spec.seed;
  options.max_shard_bytes = spec.max_shard_bytes;
  options.threads = spec.threads;
  options.overwrite = spec.overwrite;
  options.progress = spec.progress;
  return random_model_internal::WriteModelDir(Planner(spec).Plan(), options, ConfigJson(spec),
                                              out_dir);
}

}  // namespace xlstmd::core
