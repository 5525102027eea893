#include "core/model/config.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/base/json_file.h"
#include "core/base/status_macros.h"
#include "core/model/config_internal.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core {
namespace {

using Json = nlohmann::json;
using config_internal::FieldReader;

// A real config.json is a few KiB; anything near this is not a config.
constexpr std::uintmax_t kMaxConfigBytes = 16u << 20;

using config_internal::kMaxBlocks;
using config_internal::kMaxDim;
using config_internal::kMaxFactor;
using config_internal::kMaxVocab;

absl::Status ReadFields(const FieldReader& r, ModelConfig* c) {
  XLSTMD_RETURN_IF_ERROR(r.Int("vocab_size", /*required=*/true, &c->vocab_size));
  XLSTMD_RETURN_IF_ERROR(r.IntWithAlias("embedding_dim", "hidden_size", &c->embedding_dim));
  XLSTMD_RETURN_IF_ERROR(r.IntWithAlias("num_blocks", "num_hidden_layers", &c->num_blocks));
  XLSTMD_RETURN_IF_ERROR(r.Int("num_heads", /*required=*/true, &c->num_heads));
  XLSTMD_RETURN_IF_ERROR(r.Double("qk_dim_factor", &c->qk_dim_factor));
  XLSTMD_RETURN_IF_ERROR(r.Double("v_dim_factor", &c->v_dim_factor));
  XLSTMD_RETURN_IF_ERROR(r.Double("ffn_proj_factor", &c->ffn_proj_factor));
  XLSTMD_RETURN_IF_ERROR(
      r.Int("ffn_round_up_to_multiple_of", false, &c->ffn_round_up_to_multiple_of));
  // Upstream types the caps `float | None`; None (JSON null) turns the cap off.
  for (auto [field, cap] : {std::pair{"gate_soft_cap", &c->gate_soft_cap},
                            std::pair{"output_logit_soft_cap", &c->output_logit_soft_cap}}) {
    if (r.IsNull(field)) {
      *cap = 0.0f;
      continue;
    }
    XLSTMD_RETURN_IF_ERROR(r.Float(field, cap));
  }
  XLSTMD_RETURN_IF_ERROR(r.Float("norm_eps", &c->norm_eps));
  XLSTMD_RETURN_IF_ERROR(r.Float("eps", &c->eps));
  XLSTMD_RETURN_IF_ERROR(r.Bool("use_bias", &c->use_bias));
  XLSTMD_RETURN_IF_ERROR(r.Bool("add_out_norm", &c->add_out_norm));
  XLSTMD_RETURN_IF_ERROR(r.Bool("tie_word_embeddings", &c->tie_word_embeddings));
  XLSTMD_RETURN_IF_ERROR(r.String("weight_mode", &c->weight_mode));
  XLSTMD_RETURN_IF_ERROR(r.Int("chunk_size", false, &c->chunk_size));
  XLSTMD_RETURN_IF_ERROR(r.Int("bos_token_id", false, &c->bos_token_id));
  XLSTMD_RETURN_IF_ERROR(r.Int("pad_token_id", false, &c->pad_token_id));
  XLSTMD_RETURN_IF_ERROR(r.Int("eos_token_id", false, &c->eos_token_id));
  XLSTMD_RETURN_IF_ERROR(r.Bool("force_bos_token_insert", &c->force_bos_token_insert));
  return absl::OkStatus();
}

absl::Status Validate(const FieldReader& r, const ModelConfig& c) {
  XLSTMD_RETURN_IF_ERROR(r.InRange("vocab_size", c.vocab_size, 1, kMaxVocab));
  // Range errors name the spelling the file actually used.
  const char* e_field = r.Get("embedding_dim") != nullptr ? "embedding_dim" : "hidden_size";
  const char* blocks_field = r.Get("num_blocks") != nullptr ? "num_blocks" : "num_hidden_layers";
  XLSTMD_RETURN_IF_ERROR(r.InRange(e_field, c.embedding_dim, 1, kMaxDim));
  XLSTMD_RETURN_IF_ERROR(r.InRange(blocks_field, c.num_blocks, 1, kMaxBlocks));
  XLSTMD_RETURN_IF_ERROR(r.InRange("num_heads", c.num_heads, 1, c.embedding_dim));
  XLSTMD_RETURN_IF_ERROR(r.Positive("qk_dim_factor", c.qk_dim_factor, kMaxFactor));
  XLSTMD_RETURN_IF_ERROR(r.Positive("v_dim_factor", c.v_dim_factor, kMaxFactor));
  XLSTMD_RETURN_IF_ERROR(r.Positive("ffn_proj_factor", c.ffn_proj_factor, kMaxFactor));
  XLSTMD_RETURN_IF_ERROR(
      r.InRange("ffn_round_up_to_multiple_of", c.ffn_round_up_to_multiple_of, 1, kMaxDim));
  XLSTMD_RETURN_IF_ERROR(r.Positive("norm_eps", c.norm_eps, 1.0));
  XLSTMD_RETURN_IF_ERROR(r.Positive("eps", c.eps, 1.0));
  XLSTMD_RETURN_IF_ERROR(r.InRange("chunk_size", c.chunk_size, 1, kMaxDim));
  const int64_t max_id = c.vocab_size - 1;
  XLSTMD_RETURN_IF_ERROR(r.InRange("bos_token_id", c.bos_token_id, 0, max_id));
  XLSTMD_RETURN_IF_ERROR(r.InRange("pad_token_id", c.pad_token_id, 0, max_id));
  XLSTMD_RETURN_IF_ERROR(r.InRange("eos_token_id", c.eos_token_id, 0, max_id));
  if (c.weight_mode != "single" && c.weight_mode != "fused") {
    return r.Error("weight_mode",
                   absl::StrCat("must be \"single\" or \"fused\", got \"", c.weight_mode, "\""));
  }
  if (c.qk_dim() < 1) {
    return r.Error("qk_dim_factor", absl::StrCat("gives qk_dim ", c.qk_dim(), " for embedding_dim ",
                                                 c.embedding_dim, "; it must be >= 1"));
  }
  if (c.v_dim() < 1) {
    return r.Error("v_dim_factor", absl::StrCat("gives v_dim ", c.v_dim(), " for embedding_dim ",
                                                c.embedding_dim, "; it must be >= 1"));
  }
  if (c.ffn_dim() < 1) {
    return r.Error("ffn_proj_factor",
                   absl::StrCat("gives ffn dim ", c.ffn_dim(), " for embedding_dim ",
                                c.embedding_dim, "; it must be >= 1"));
  }
  if (c.qk_dim() % c.num_heads != 0 || c.v_dim() % c.num_heads != 0) {
    return r.Error("num_heads", absl::StrCat("(", c.num_heads, ") must divide qk_dim (", c.qk_dim(),
                                             ") and v_dim (", c.v_dim(), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

// Python's int() truncates toward zero; the factors are validated positive, so a plain cast
// of the double product matches what upstream used to size the weights.
int64_t ModelConfig::qk_dim() const {
  return static_cast<int64_t>(static_cast<double>(embedding_dim) * qk_dim_factor);
}

int64_t ModelConfig::v_dim() const {
  return static_cast<int64_t>(static_cast<double>(embedding_dim) * v_dim_factor);
}

// Upstream computes `int(((x + R - 1) // R) * R)` with x = E * ffn_proj_factor as a Python
// float. We evaluate the same expression in double so that the result matches the stored
// weights bit for bit in every case (it equals ceil(x / R) * R except when x lies strictly
// between a multiple of R and that multiple + 1, where upstream rounds down).
int64_t ModelConfig::ffn_dim() const {
  const double x = static_cast<double>(embedding_dim) * ffn_proj_factor;
  const double r = static_cast<double>(ffn_round_up_to_multiple_of);
  if (r <= 0) return 0;
  return static_cast<int64_t>(std::floor((x + r - 1.0) / r) * r);
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source) {
  absl::StatusOr<Json> doc = ParseStrictJsonObject(json_text, source);
  if (!doc.ok()) return doc.status();
  FieldReader r(*doc, source);
  ModelConfig c;
  XLSTMD_RETURN_IF_ERROR(r.String("model_type", &c.model_type));
  if (c.model_type == "xlstm-paper") {
    c.family = ModelFamily::kPaper;
    XLSTMD_RETURN_IF_ERROR(config_internal::ReadPaperConfig(*doc, source, &c));
    return c;
  }
  if (c.model_type != "xlstm") {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": field \"model_type\" must be \"xlstm\" (xLSTM-Large family) or ",
        "\"xlstm-paper\" (the paper's xLSTMLMModel), got ",
        c.model_type.empty() ? std::string("nothing") : absl::StrCat("\"", c.model_type, "\"")));
  }
  XLSTMD_RETURN_IF_ERROR(ReadFields(r, &c));
  XLSTMD_RETURN_IF_ERROR(Validate(r, c));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "config.json";
  XLSTMD_ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(path, kMaxConfigBytes));
  return ParseModelConfig(text, path.string());
}

}  // namespace xlstmd::core
