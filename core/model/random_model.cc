#include "core/model/random_model.h"

#include <cmath>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/model/config.h"
#include "core/model/random_model_internal.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core {
namespace {

using OrderedJson = nlohmann::ordered_json;
using random_model_internal::MakePlan;
using random_model_internal::Normal;
using random_model_internal::TensorPlan;
using random_model_internal::Uniform;

ModelConfig DimsOf(const RandomModelSpec& spec) {
  ModelConfig c;
  c.model_type = "xlstm";
  c.vocab_size = spec.vocab;
  c.embedding_dim = spec.embedding_dim;
  c.num_blocks = spec.num_blocks;
  c.num_heads = spec.num_heads;
  c.qk_dim_factor = spec.qk_dim_factor;
  c.v_dim_factor = spec.v_dim_factor;
  c.ffn_proj_factor = spec.ffn_proj_factor;
  return c;
}

std::vector<TensorPlan> PlanTensors(const RandomModelSpec& spec) {
  const ModelConfig c = DimsOf(spec);
  const int64_t e = c.embedding_dim, qk = c.qk_dim(), v = c.v_dim(), f = c.ffn_dim();
  const int64_t nh = c.num_heads;
  const double in_e = 1.0 / std::sqrt(static_cast<double>(e));
  const double depth = 1.0 / std::sqrt(2.0 * static_cast<double>(c.num_blocks));
  std::vector<TensorPlan> t;
  auto normal = [&t](std::string name, std::vector<int64_t> shape, double std_dev) {
    t.push_back(MakePlan(std::move(name), std::move(shape), {Normal(std_dev)}));
  };
  auto uniform = [&t](std::string name, std::vector<int64_t> shape, double lo, double hi) {
    t.push_back(MakePlan(std::move(name), std::move(shape), {Uniform(lo, hi)}));
  };
  normal("backbone.embeddings.weight", {c.vocab_size, e}, 1.0);
  for (int64_t b = 0; b < c.num_blocks; ++b) {
    const std::string p = absl::StrCat("backbone.blocks.", b, ".");
    const std::string m = p + "mlstm_layer.";
    uniform(p + "norm_mlstm.weight", {e}, 0.9, 1.1);
    normal(m + "q.weight", {qk, e}, in_e);
    normal(m + "k.weight", {qk, e}, in_e);
    normal(m + "v.weight", {v, e}, in_e);
    normal(m + "ogate_preact.weight", {v, e}, in_e);
    normal(m + "igate_preact.weight", {nh, e}, in_e);
    uniform(m + "igate_preact.bias", {nh}, -3.0, 0.0);
    normal(m + "fgate_preact.weight", {nh, e}, in_e);
    uniform(m + "fgate_preact.bias", {nh}, 3.0, 6.0);
    uniform(m + "multihead_norm.weight", {v}, 0.9, 1.1);
    normal(m + "out_proj.weight", {e, v}, depth / std::sqrt(static_cast<double>(v)));
    uniform(p + "norm_ffn.weight", {e}, 0.9, 1.1);
    normal(p + "ffn.proj_up_gate.weight", {f, e}, in_e);
    normal(p + "ffn.proj_up.weight", {f, e}, in_e);
    normal(p + "ffn.proj_down.weight", {e, f}, depth / std::sqrt(static_cast<double>(f)));
  }
  uniform("backbone.out_norm.weight", {e}, 0.9, 1.1);
  normal("lm_head.weight", {c.vocab_size, e}, in_e);
  return t;
}

std::string ConfigJson(const RandomModelSpec& spec) {
  const bool bf16 = spec.dtype == kernels::DType::kBF16;
  OrderedJson j;
  j["add_out_norm"] = true;
  j["architectures"] = {"xLSTMForCausalLM"};
  j["autocast_kernel_dtype"] = "bfloat16";
  j["bos_token_id"] = 0;
  j["chunk_size"] = 64;
  j["chunkwise_kernel"] = "chunkwise--native_autograd";
  j["embedding_dim"] = spec.embedding_dim;
  j["eos_token_id"] = 2;
  j["eps"] = 1e-6;
  j["ffn_proj_factor"] = spec.ffn_proj_factor;
  j["ffn_round_up_to_multiple_of"] = 64;
  j["force_bos_token_insert"] = true;
  j["gate_soft_cap"] = 15.0;
  j["hidden_size"] = spec.embedding_dim;
  j["inference_state_dtype"] = "float32";
  j["max_inference_chunksize"] = 16384;
  j["mode"] = "inference";
  j["model_type"] = "xlstm";
  j["norm_eps"] = 1e-6;
  j["norm_reduction_force_float32"] = true;
  j["num_blocks"] = spec.num_blocks;
  j["num_heads"] = spec.num_heads;
  j["num_hidden_layers"] = spec.num_blocks;
  j["output_logit_soft_cap"] = 30.0;
  j["pad_token_id"] = 1;
  j["qk_dim_factor"] = spec.qk_dim_factor;
  j["return_last_states"] = true;
  j["sequence_kernel"] = "native_sequence__native";
  j["step_kernel"] = "native";
  j["tie_word_embeddings"] = false;
  j["torch_dtype"] = bf16 ? "bfloat16" : "float32";
  j["use_bias"] = false;
  j["use_cache"] = true;
  j["v_dim_factor"] = spec.v_dim_factor;
  j["vocab_size"] = spec.vocab;
  j["weight_mode"] = "single";
  j[kRandomWeightsKey] = true;
  return j.dump(2) + "\n";
}

}  // namespace

bool HasRandomWeights(const std::filesystem::path& model_dir) {
  std::ifstream in(model_dir / "config.json");
  if (!in) return false;
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  const auto it = j.find(kRandomWeightsKey);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

absl::Status ValidateRandomModelSpec(const RandomModelSpec& spec) {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError(what); };
  if (spec.embedding_dim < 1 || spec.embedding_dim > (int64_t{1} << 20)) {
    return bad(absl::StrCat("embedding_dim ", spec.embedding_dim, " out of range [1, 1048576]"));
  }
  if (spec.num_blocks < 1 || spec.num_blocks > 4096) {
    return bad(absl::StrCat("num_blocks ", spec.num_blocks, " out of range [1, 4096]"));
  }
  if (spec.vocab < 1 || spec.vocab > (int64_t{1} << 24)) {
    return bad(absl::StrCat("vocab ", spec.vocab, " out of range [1, 16777216]"));
  }
  if (spec.num_heads < 1 || spec.num_heads > spec.embedding_dim) {
    return bad(absl::StrCat("num_heads ", spec.num_heads, " out of range [1, embedding_dim]"));
  }
  for (double f : {spec.qk_dim_factor, spec.v_dim_factor, spec.ffn_proj_factor}) {
    if (!(f > 0.0 && f <= 64.0)) return bad(absl::StrCat("dim factor ", f, " out of (0, 64]"));
  }
  if (spec.dtype != kernels::DType::kF32 && spec.dtype != kernels::DType::kBF16) {
    return bad("dtype must be f32 or bf16");
  }
  const ModelConfig c = DimsOf(spec);
  if (c.qk_dim() < c.num_heads || c.qk_dim() % c.num_heads != 0) {
    return bad(absl::StrCat("num_heads ", c.num_heads, " does not divide qk_dim ", c.qk_dim()));
  }
  if (c.v_dim() < c.num_heads || c.v_dim() % c.num_heads != 0) {
    return bad(absl::StrCat("num_heads ", c.num_heads, " does not divide v_dim ", c.v_dim()));
  }
  if (spec.max_shard_bytes == 0) return bad("max_shard_bytes must be > 0");
  return absl::OkStatus();
}

absl::Status WriteRandomModel(const RandomModelSpec& spec, const std::filesystem::path& out_dir) {
  XLSTMD_RETURN_IF_ERROR(ValidateRandomModelSpec(spec));
  random_model_internal::WriteOptions options;
  options.dtype = spec.dtype;
  options.seed = spec.seed;
  options.max_shard_bytes = spec.max_shard_bytes;
  options.threads = spec.threads;
  options.overwrite = spec.overwrite;
  options.progress = spec.progress;
  return random_model_internal::WriteModelDir(PlanTensors(spec), options, ConfigJson(spec),
                                              out_dir);
}

}  // namespace xlstmd::core
