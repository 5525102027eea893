// ModelConfig: the fields of a Hugging Face `config.json` that the xLSTM runtime needs.
//
// Family A (`model_type: "xlstm"`, the xLSTM-7B architecture; xlstm-spec.md section 3.1) and
// family B (`model_type: "xlstm-paper"`, the paper's xLSTMLMModel with sLSTM and mLSTM blocks;
// section 4.1, the dataclass tree of upstream's config). Parsing validates types and ranges;
// derived dimensions follow the spec (plain truncation for qk/v dims, round-up for the FFN).
// The loader cross-checks them with the weight shapes.
#ifndef XLSTMD_CORE_MODEL_CONFIG_H_
#define XLSTMD_CORE_MODEL_CONFIG_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace xlstmd::core {

enum class ModelFamily { kLarge, kPaper };

// Family B's fields (xlstm-spec.md 4.1). Block b is an sLSTM block when slstm[b].
struct PaperConfig {
  std::vector<bool> slstm;
  bool add_post_blocks_norm = true;
  bool bias = false;     // top-level `bias` (norm biases, where a checkpoint has them)
  bool m_bias = false;   // mlstm_block.mlstm.bias (else `bias`): proj_up/proj_down/q/k/v biases
  bool ff_bias = false;  // slstm_block.feedforward.bias (else `bias`): the FFN's biases
  bool s_ffn = true;     // slstm_block.feedforward is not null: sLSTM blocks have an FFN
  bool tie_weights = false;
  // mlstm_block.mlstm
  int64_t m_heads = 4;
  int64_t m_conv = 4;  // conv1d_kernel_size; 0 = no convolution
  int64_t m_qkv_blocksize = 4;
  double m_proj_factor = 2.0;
  bool m_round_up = true;
  int64_t m_round_multiple = 64;
  // slstm_block.slstm
  int64_t s_heads = 4;
  int64_t s_conv = 4;
  bool s_group_norm_weight = true;
  bool s_vanilla_layout = false;  // "slstm_weight_layout" / backend: vanilla vs cuda (spec 4.4)
  // slstm_block.feedforward
  double ff_proj_factor = 1.3;
  bool ff_round_up = true;
  int64_t ff_round_multiple = 64;
  std::string ff_act = "gelu";

  // Derived (upstream's _set_proj_up_dim: ceil or floor of factor * E / multiple, times it).
  int64_t m_inner(int64_t e) const;  // Din
  int64_t ff_dim(int64_t e) const;   // F
  int64_t m_dh(int64_t e) const { return m_inner(e) / m_heads; }
  int64_t s_dh(int64_t e) const { return e / s_heads; }
  bool has_mlstm() const;
  bool has_slstm() const;
};

struct ModelConfig {
  ModelFamily family = ModelFamily::kLarge;
  PaperConfig paper;       // family B only
  std::string model_type;  // "xlstm" or "xlstm-paper"
  int64_t vocab_size = 0;
  int64_t embedding_dim = 0;  // E (`embedding_dim` or `hidden_size`)
  int64_t num_blocks = 0;     // (`num_blocks` or `num_hidden_layers`)
  int64_t num_heads = 0;
  double qk_dim_factor = 0.5;
  double v_dim_factor = 1.0;
  double ffn_proj_factor = 2.667;
  int64_t ffn_round_up_to_multiple_of = 64;
  float gate_soft_cap = 15.0f;          // <= 0 disables
  float output_logit_soft_cap = 30.0f;  // <= 0 disables
  float norm_eps = 1e-6f;
  float eps = 1e-6f;
  bool use_bias = false;
  bool add_out_norm = true;
  bool tie_word_embeddings = false;
  std::string weight_mode = "single";  // "single" | "fused"
  int64_t chunk_size = 64;
  int64_t bos_token_id = 0;
  int64_t pad_token_id = 1;
  int64_t eos_token_id = 2;
  bool force_bos_token_insert = true;

  // Derived (xlstm-spec.md 3.1).
  int64_t qk_dim() const;   // int(E * qk_dim_factor)
  int64_t v_dim() const;    // int(E * v_dim_factor)
  // Upstream's round-up, floor((x + R - 1) / R) * R with x = E * ffn_proj_factor in double.
  // Equals ceil(x / R) * R except when x lies strictly between a multiple of R and that
  // multiple + 1; there upstream rounds down, and the stored weights follow upstream.
  int64_t ffn_dim() const;
  int64_t dqk() const { return qk_dim() / num_heads; }
  int64_t dv() const { return v_dim() / num_heads; }
};

// `source` names the file in error messages. Any error (bad JSON, duplicate keys, another or missing model_type,
// missing / wrong-typed / out-of-range field) is INVALID_ARGUMENT naming source and field.
// Unknown fields are ignored; `embedding_dim`/`hidden_size` and
// `num_blocks`/`num_hidden_layers` may both appear but must then agree. JSON null means
// "unset": the default is kept, except for the two soft caps, where null disables the cap.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source);
// Reads `dir`/config.json (NOT_FOUND if absent) and parses it as above.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& dir);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_CONFIG_H_
