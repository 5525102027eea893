// Checkpoint: every tensor of a Hugging Face model directory, memory-mapped.
//
// Accepts `model.safetensors`, or `model.safetensors.index.json` + the shards it names
// (`model-0000k-of-0000n.safetensors`). Validates that the index's weight_map points at
// existing shards that really hold those tensors, and that no tensor name appears twice.
//
// XlstmTensors: the family-A tensors resolved from a Checkpoint under either naming scheme
// (spec 3.3: `backbone.embeddings.weight` or `embedding.weight`; `q/k/v` or
// `query/key/value`; weight_mode "single" or "fused"), shape-checked against the config.
// Missing, extra (unknown) or mis-shaped tensors and unsupported dtypes (anything but F32,
// BF16, F16; and for matrices the quantized pair `NAME` I8/U8 + `NAME_scale` that
// `xlstm quantize` writes) are errors naming the file and tensor.
//
// Error codes: Open gives NOT_FOUND for a missing dir, a dir without weights or a shard the
// index names but that does not exist; INVALID_ARGUMENT for everything malformed. Resolve gives
// NOT_FOUND for a missing tensor and INVALID_ARGUMENT otherwise. Upstream's plain module names
// (no `backbone.` prefix: `blocks.{b}...`, `out_norm.weight`) are accepted too. With
// tie_word_embeddings and no stored `lm_head.weight`, lm_head is the embedding.
//
// Lifetime and threads: a Checkpoint is immutable after Open; its TensorViews (and every
// TensorSlice resolved from it) point into its mappings and stay valid while it lives.
// Const methods may be called from any thread.
#ifndef XLSTMD_CORE_MODEL_CHECKPOINT_H_
#define XLSTMD_CORE_MODEL_CHECKPOINT_H_

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/config.h"
#include "core/model/safetensors.h"
#include "kernels/op_params.h"

namespace xlstmd::core {

class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::filesystem::path& dir);
  const TensorView* Find(const std::string& name) const;  // nullptr if absent
  std::vector<std::string> Names() const;                 // sorted
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  const std::filesystem::path& dir() const { return dir_; }  // as given to Open()

 private:
  Checkpoint() = default;
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> by_name_;
};

// A row range of a checkpoint tensor: rows [row_begin, row_begin + rows) of a 2-D (or 1-D)
// tensor. Fused checkpoints split one stored matrix into several logical ones this way.
struct TensorSlice {
  const TensorView* tensor = nullptr;  // nullptr: absent (optional tensors only)
  int64_t row_begin = 0;
  int64_t rows = 0;
  int64_t cols = 0;  // 1 for vectors; the logical column count for quantized matrices
  // A matrix stored quantized by `xlstm quantize`: kI8 or kQ4 (codes in `tensor`, canonical
  // layout of kernels/quant.h) with its scales in `scale`; kF32 for every float tensor.
  kernels::DType quant = kernels::DType::kF32;
  const TensorView* scale = nullptr;
  const void* data() const;        // start of the slice (its codes when quantized)
  const void* scale_data() const;  // quantized only: the slice's first row of scales
  size_t bytes() const;            // of data() (codes only when quantized)
};

struct XlstmBlockTensors {
  TensorSlice norm_mlstm_w, norm_mlstm_b;        // [E]
  TensorSlice q, k;                              // [qk_dim, E]
  TensorSlice v, ogate;                          // [v_dim, E]
  TensorSlice igate_w, fgate_w;                  // [NH, E]
  TensorSlice igate_b, fgate_b;                  // [NH] (always present)
  TensorSlice q_b, k_b, v_b, ogate_b;            // use_bias only
  TensorSlice mh_norm_w, mh_norm_b;              // [v_dim]
  TensorSlice out_proj, out_proj_b;              // [E, v_dim], [E]
  TensorSlice norm_ffn_w, norm_ffn_b;            // [E]
  TensorSlice ffn_gate, ffn_up;                  // [F, E]
  TensorSlice ffn_gate_b, ffn_up_b;              // [F]
  TensorSlice ffn_down, ffn_down_b;              // [E, F], [E]
};

struct XlstmTensors {
  TensorSlice embedding;              // [V, E]
  std::vector<XlstmBlockTensors> blocks;
  TensorSlice out_norm_w, out_norm_b; // [E] (add_out_norm)
  TensorSlice lm_head;                // [V, E] (the embedding when tie_word_embeddings)
};

absl::StatusOr<XlstmTensors> ResolveXlstmTensors(const Checkpoint& ckpt,
                                                 const ModelConfig& config);

// Family B (xlstm-spec.md 4.6), upstream's module names. Vectors and 3-D tensors are flat
// slices (rows = element count). Optional biases are unset when absent.
struct PaperBlockTensors {
  bool slstm = false;
  TensorSlice norm_w, norm_b;              // xlstm_norm [E]
  TensorSlice conv_w, conv_b;              // [D, 1, KS], [D] (KS > 0)
  // mLSTM blocks (D = Din)
  TensorSlice proj_up, proj_up_b;          // [2*Din, E], [2*Din]
  TensorSlice q, k, v;                     // [Din/bs, bs, bs]
  TensorSlice q_b, k_b, v_b;               // [Din]
  TensorSlice igate_w, fgate_w;            // [NH, 3*Din]
  TensorSlice igate_b, fgate_b;            // [NH]
  TensorSlice outnorm_w, outnorm_b;        // [Din]
  TensorSlice skip;                        // [Din]
  TensorSlice proj_down, proj_down_b;      // [E, Din], [E]
  // sLSTM blocks (D = E); gate_i is the module named "fgate" (spec 4.4's name swap)
  TensorSlice gate_i, gate_f, gate_z, gate_o;  // [NH, DH, DH]
  TensorSlice recurrent, bias;             // _recurrent_kernel_, _bias_ [4*E]
  TensorSlice group_norm_w;                // [E] (group_norm_weight)
  TensorSlice ffn_norm_w, ffn_norm_b;      // [E]
  TensorSlice ffn_up, ffn_up_b;            // [2F, E]
  TensorSlice ffn_down, ffn_down_b;        // [E, F]
};

struct PaperTensors {
  TensorSlice embedding;                   // token_embedding [V, E]
  std::vector<PaperBlockTensors> blocks;
  TensorSlice post_norm_w, post_norm_b;    // [E] (add_post_blocks_norm)
  TensorSlice lm_head;                     // [V, E] (the embedding when tie_weights)
};

absl::StatusOr<PaperTensors> ResolvePaperTensors(const Checkpoint& ckpt,
                                                 const ModelConfig& config);

// The storage dtype a model is served with when the operator does not choose ("auto"):
// f32 when every matrix (2-D tensor) of the checkpoint is stored as F32 or F64, so a
// full-precision checkpoint keeps its precision; bf16 otherwise (BF16/F16 checkpoints such
// as xLSTM-7B, where f32 storage would double memory and bandwidth for no gain). The
// daemon and the tool share this rule so their outputs agree by default.
// Quantized matrices (their codes and scales) do not count: they keep their own format.
kernels::DType NativeStorageDType(const Checkpoint& ckpt);

// The format of a matrix `xlstm quantize` stored as `name`: 2-D I8 (kI8) or U8 (kQ4) codes
// with a `name_scale` tensor beside them; nullopt for anything else.
std::optional<kernels::DType> StoredQuantization(const Checkpoint& ckpt, const std::string& name);

// The quantized format of a checkpoint written by `xlstm quantize` (from its first quantized
// matrix), or nullopt when every matrix is stored as a float.
std::optional<kernels::DType> CheckpointQuantization(const Checkpoint& ckpt);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_CHECKPOINT_H_
