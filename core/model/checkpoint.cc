#include "core/model/checkpoint.h"
#include "core/model/checkpoint_internal.h"

#include <algorithm>
#include <cstdint>
#include <set>
#include <string_view>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/base/json_file.h"
#include "core/base/status_macros.h"
#include "kernels/backend.h"
#include "kernels/quant.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core {
namespace {

using Json = nlohmann::json;

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";
// The 7B index is ~30 KB; a cap keeps a hostile index from exhausting memory.
constexpr std::uintmax_t kMaxIndexBytes = 64u << 20;

// Shard names come from an untrusted index and are joined to the model dir, so anything
// that could leave the dir (or hide a NUL) is refused.
bool IsPlainFileName(std::string_view name) {
  return !name.empty() && name != "." && name.find('/') == std::string_view::npos &&
         name.find('\\') == std::string_view::npos && name.find("..") == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

// Appends `context` to the message, keeping the code.
absl::Status Annotate(const absl::Status& s, absl::string_view context) {
  return absl::Status(s.code(), absl::StrCat(s.message(), " (", context, ")"));
}

// name -> shard file name, validated.
absl::StatusOr<std::map<std::string, std::string>> ReadWeightMap(
    const std::filesystem::path& index_path) {
  const std::string where = index_path.string();
  XLSTMD_ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(index_path, kMaxIndexBytes));
  absl::StatusOr<Json> doc = ParseStrictJsonObject(text, where);
  if (!doc.ok()) return doc.status();
  auto meta = doc->find("metadata");
  if (meta != doc->end() && !meta->is_object() && !meta->is_null()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": \"metadata\" must be an object, got ", JsonTypeName(*meta)));
  }
  auto wm = doc->find("weight_map");
  if (wm == doc->end() || !wm->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": \"weight_map\" is missing or not an object"));
  }
  if (wm->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"weight_map\" is empty"));
  }
  std::map<std::string, std::string> out;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": weight_map entry for tensor \"",
                                                     it.key(), "\" must be a string, got ",
                                                     JsonTypeName(*it)));
    }
    const std::string& shard = it->get_ref<const std::string&>();
    if (!IsPlainFileName(shard)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": weight_map maps tensor \"", it.key(),
                                                     "\" to \"", shard,
                                                     "\", which is not a plain file name"));
    }
    out.emplace(it.key(), shard);
  }
  return out;
}

using checkpoint_internal::ShapeString;
}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::filesystem::path& dir) {
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(dir, ec);
  if (!std::filesystem::exists(st)) {
    return absl::NotFoundError(absl::StrCat(dir.string(), ": no such directory"));
  }
  if (!std::filesystem::is_directory(st)) {
    return absl::InvalidArgumentError(absl::StrCat(dir.string(), ": not a directory"));
  }
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;

  const std::filesystem::path index_path = dir / kIndexFile;
  const bool sharded = std::filesystem::exists(index_path, ec);
  std::map<std::string, std::string> weight_map;
  if (sharded) {
    XLSTMD_ASSIGN_OR_RETURN(weight_map, ReadWeightMap(index_path));
    std::set<std::string> shards;
    for (const auto& [name, shard] : weight_map) shards.insert(shard);
    for (const std::string& shard : shards) {
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(dir / shard);
      if (!f.ok())
        return Annotate(f.status(), absl::StrCat("shard named in ", index_path.string()));
      ckpt->files_.push_back(*std::move(f));
    }
  } else if (std::filesystem::exists(dir / kSingleFile, ec)) {
    XLSTMD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f,
                            SafetensorsFile::Open(dir / kSingleFile));
    ckpt->files_.push_back(std::move(f));
  } else {
    return absl::NotFoundError(
        absl::StrCat("no ", kSingleFile, " or ", kIndexFile, " in ", dir.string()));
  }

  // One file never holds a name twice (its header parser refuses that), so a repeat here is
  // always across shards.
  for (const auto& f : ckpt->files_) {
    for (const TensorView& t : f->tensors()) {
      auto [it, inserted] = ckpt->by_name_.emplace(t.name, &t);
      if (!inserted) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor \"", t.name, "\" is in both ", it->second->file, " and ", t.file));
      }
    }
  }
  if (!sharded) return ckpt;

  for (const auto& [name, shard] : weight_map) {
    const std::string expected = (dir / shard).string();
    auto it = ckpt->by_name_.find(name);
    if (it == ckpt->by_name_.end() || it->second->file != expected) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": weight_map puts tensor \"", name, "\" in ", shard,
                       " but ", expected, " does not contain it"));
    }
  }
  for (const auto& [name, view] : ckpt->by_name_) {
    if (weight_map.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" in ", view->file,
                                                     " is not listed in the weight_map of ",
                                                     index_path.string()));
    }
  }
  return ckpt;
}

const TensorView* Checkpoint::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  names.reserve(by_name_.size());
  for (const auto& [name, view] : by_name_) names.push_back(name);
  return names;
}

size_t TensorSlice::bytes() const {
  if (tensor == nullptr) return 0;
  if (quant != kernels::DType::kF32) {
    return static_cast<size_t>(rows) * kernels::QuantCodeBytesPerRow(quant, cols);
  }
  return static_cast<size_t>(rows * cols) * TensorDTypeSize(tensor->dtype);
}

const void* TensorSlice::data() const {
  if (tensor == nullptr) return nullptr;
  const size_t offset =
      quant != kernels::DType::kF32
          ? static_cast<size_t>(row_begin) * kernels::QuantCodeBytesPerRow(quant, cols)
          : static_cast<size_t>(row_begin * cols) * TensorDTypeSize(tensor->dtype);
  return static_cast<const char*>(tensor->data) + offset;
}

const void* TensorSlice::scale_data() const {
  if (scale == nullptr) return nullptr;
  return static_cast<const char*>(scale->data) +
         static_cast<size_t>(row_begin) * kernels::QuantScaleBytesPerRow(quant, cols);
}

namespace {

using checkpoint_internal::kVector;
using checkpoint_internal::Resolver;

// Per-block dims, read once from the config.
struct Dims {
  int64_t e, qk, v, nh, f;
};

absl::Status ResolveMlstmLayer(Resolver& r, const ModelConfig& c, const Dims& d,
                               const std::string& ml, XlstmBlockTensors* bt) {
  if (c.weight_mode == "fused") {
    XLSTMD_ASSIGN_OR_RETURN(std::vector<TensorSlice> qkvo,
                            r.Split(ml + "qkv_opreact.weight", {d.qk, d.qk, d.v, d.v}, d.e));
    bt->q = qkvo[0];
    bt->k = qkvo[1];
    bt->v = qkvo[2];
    bt->ogate = qkvo[3];
    if (c.use_bias) {
      XLSTMD_ASSIGN_OR_RETURN(qkvo,
                              r.Split(ml + "qkv_opreact.bias", {d.qk, d.qk, d.v, d.v}, kVector));
      bt->q_b = qkvo[0];
      bt->k_b = qkvo[1];
      bt->v_b = qkvo[2];
      bt->ogate_b = qkvo[3];
    }
    XLSTMD_ASSIGN_OR_RETURN(std::vector<TensorSlice> ifw,
                            r.Split(ml + "ifgate_preact.weight", {d.nh, d.nh}, d.e));
    bt->igate_w = ifw[0];
    bt->fgate_w = ifw[1];
    XLSTMD_ASSIGN_OR_RETURN(std::vector<TensorSlice> ifb,
                            r.Split(ml + "ifgate_preact.bias", {d.nh, d.nh}, kVector));
    bt->igate_b = ifb[0];
    bt->fgate_b = ifb[1];
  } else {
    // transformers' fallback module spells q/k/v as query/key/value; whichever is present
    // is used, and the other (if both are) is reported as an extra tensor.
    const bool long_names = !r.Has(ml + "q.weight") && r.Has(ml + "query.weight");
    const std::string q = ml + (long_names ? "query" : "q");
    const std::string k = ml + (long_names ? "key" : "k");
    const std::string v = ml + (long_names ? "value" : "v");
    XLSTMD_ASSIGN_OR_RETURN(bt->q, r.Whole(q + ".weight", d.qk, d.e));
    XLSTMD_ASSIGN_OR_RETURN(bt->k, r.Whole(k + ".weight", d.qk, d.e));
    XLSTMD_ASSIGN_OR_RETURN(bt->v, r.Whole(v + ".weight", d.v, d.e));
    XLSTMD_ASSIGN_OR_RETURN(bt->ogate, r.Whole(ml + "ogate_preact.weight", d.v, d.e));
    if (c.use_bias) {
      XLSTMD_ASSIGN_OR_RETURN(bt->q_b, r.Whole(q + ".bias", d.qk, kVector));
      XLSTMD_ASSIGN_OR_RETURN(bt->k_b, r.Whole(k + ".bias", d.qk, kVector));
      XLSTMD_ASSIGN_OR_RETURN(bt->v_b, r.Whole(v + ".bias", d.v, kVector));
      XLSTMD_ASSIGN_OR_RETURN(bt->ogate_b, r.Whole(ml + "ogate_preact.bias", d.v, kVector));
    }
    XLSTMD_ASSIGN_OR_RETURN(bt->igate_w, r.Whole(ml + "igate_preact.weight", d.nh, d.e));
    XLSTMD_ASSIGN_OR_RETURN(bt->fgate_w, r.Whole(ml + "fgate_preact.weight", d.nh, d.e));
    XLSTMD_ASSIGN_OR_RETURN(bt->igate_b, r.Whole(ml + "igate_preact.bias", d.nh, kVector));
    XLSTMD_ASSIGN_OR_RETURN(bt->fgate_b, r.Whole(ml + "fgate_preact.bias", d.nh, kVector));
  }
  XLSTMD_ASSIGN_OR_RETURN(bt->mh_norm_w, r.Whole(ml + "multihead_norm.weight", d.v, kVector));
  XLSTMD_ASSIGN_OR_RETURN(bt->out_proj, r.Whole(ml + "out_proj.weight", d.e, d.v));
  if (c.use_bias) {
    XLSTMD_ASSIGN_OR_RETURN(bt->mh_norm_b, r.Whole(ml + "multihead_norm.bias", d.v, kVector));
    XLSTMD_ASSIGN_OR_RETURN(bt->out_proj_b, r.Whole(ml + "out_proj.bias", d.e, kVector));
  }
  return absl::OkStatus();
}

absl::Status ResolveFfn(Resolver& r, const ModelConfig& c, const Dims& d, const std::string& ffn,
                        XlstmBlockTensors* bt) {
  if (c.weight_mode == "fused") {
    XLSTMD_ASSIGN_OR_RETURN(std::vector<TensorSlice> gu,
                            r.Split(ffn + "proj_up_gate_z.weight", {d.f, d.f}, d.e));
    bt->ffn_gate = gu[0];
    bt->ffn_up = gu[1];
    if (c.use_bias) {
      XLSTMD_ASSIGN_OR_RETURN(gu, r.Split(ffn + "proj_up_gate_z.bias", {d.f, d.f}, kVector));
      bt->ffn_gate_b = gu[0];
      bt->ffn_up_b = gu[1];
    }
  } else {
    XLSTMD_ASSIGN_OR_RETURN(bt->ffn_gate, r.Whole(ffn + "proj_up_gate.weight", d.f, d.e));
    XLSTMD_ASSIGN_OR_RETURN(bt->ffn_up, r.Whole(ffn + "proj_up.weight", d.f, d.e));
    if (c.use_bias) {
      XLSTMD_ASSIGN_OR_RETURN(bt->ffn_gate_b, r.Whole(ffn + "proj_up_gate.bias", d.f, kVector));
      XLSTMD_ASSIGN_OR_RETURN(bt->ffn_up_b, r.Whole(ffn + "proj_up.bias", d.f, kVector));
    }
  }
  XLSTMD_ASSIGN_OR_RETURN(bt->ffn_down, r.Whole(ffn + "proj_down.weight", d.e, d.f));
  if (c.use_bias) {
    XLSTMD_ASSIGN_OR_RETURN(bt->ffn_down_b, r.Whole(ffn + "proj_down.bias", d.e, kVector));
  }
  return absl::OkStatus();
}

absl::StatusOr<XlstmBlockTensors> ResolveBlock(Resolver& r, const ModelConfig& c, const Dims& d,
                                               const std::string& p) {
  XlstmBlockTensors bt;
  XLSTMD_ASSIGN_OR_RETURN(bt.norm_mlstm_w, r.Whole(p + "norm_mlstm.weight", d.e, kVector));
  XLSTMD_ASSIGN_OR_RETURN(bt.norm_ffn_w, r.Whole(p + "norm_ffn.weight", d.e, kVector));
  if (c.use_bias) {
    XLSTMD_ASSIGN_OR_RETURN(bt.norm_mlstm_b, r.Whole(p + "norm_mlstm.bias", d.e, kVector));
    XLSTMD_ASSIGN_OR_RETURN(bt.norm_ffn_b, r.Whole(p + "norm_ffn.bias", d.e, kVector));
  }
  XLSTMD_RETURN_IF_ERROR(ResolveMlstmLayer(r, c, d, p + "mlstm_layer.", &bt));
  XLSTMD_RETURN_IF_ERROR(ResolveFfn(r, c, d, p + "ffn.", &bt));
  return bt;
}

}  // namespace

absl::StatusOr<XlstmTensors> ResolveXlstmTensors(const Checkpoint& ckpt,
                                                 const ModelConfig& config) {
  const ModelConfig& c = config;
  const Dims d{c.embedding_dim, c.qk_dim(), c.v_dim(), c.num_heads, c.ffn_dim()};
  Resolver r(ckpt);
  XlstmTensors out;

  // NX-AI's HF export renames upstream's `embedding.weight` to `backbone.embeddings.weight`;
  // either is fine, both at once would be ambiguous.
  const std::string kHfEmbedding = "backbone.embeddings.weight";
  const std::string kPlainEmbedding = "embedding.weight";
  const bool hf_embedding = r.Has(kHfEmbedding);
  if (hf_embedding && r.Has(kPlainEmbedding)) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint ", ckpt.dir().string(), " has both ",
                                                   kHfEmbedding, " and ", kPlainEmbedding));
  }
  if (!hf_embedding && !r.Has(kPlainEmbedding)) {
    return absl::NotFoundError(absl::StrCat("tensor \"", kHfEmbedding, "\" (or \"", kPlainEmbedding,
                                            "\") not found in checkpoint ", ckpt.dir().string()));
  }
  XLSTMD_ASSIGN_OR_RETURN(out.embedding, r.Whole(hf_embedding ? kHfEmbedding : kPlainEmbedding,
                                                 c.vocab_size, c.embedding_dim));

  // HF checkpoints nest the stack under `backbone.`; upstream's plain module does not.
  bool any_backbone = false;
  for (const std::string& name : ckpt.Names()) {
    if (name.rfind("backbone.", 0) == 0) any_backbone = true;
  }
  const std::string root = any_backbone ? "backbone." : "";

  for (int64_t b = 0; b < c.num_blocks; ++b) {
    XLSTMD_ASSIGN_OR_RETURN(XlstmBlockTensors bt,
                            ResolveBlock(r, c, d, absl::StrCat(root, "blocks.", b, ".")));
    out.blocks.push_back(std::move(bt));
  }
  if (c.add_out_norm) {
    XLSTMD_ASSIGN_OR_RETURN(out.out_norm_w, r.Whole(root + "out_norm.weight", d.e, kVector));
    if (c.use_bias) {
      XLSTMD_ASSIGN_OR_RETURN(out.out_norm_b, r.Whole(root + "out_norm.bias", d.e, kVector));
    }
  }
  // Tied checkpoints usually omit lm_head.weight; when one is stored anyway, it is used.
  if (c.tie_word_embeddings && !r.Has("lm_head.weight")) {
    out.lm_head = out.embedding;
  } else {
    XLSTMD_ASSIGN_OR_RETURN(out.lm_head, r.Whole("lm_head.weight", c.vocab_size, d.e));
  }
  XLSTMD_RETURN_IF_ERROR(r.CheckAllUsed());
  return out;
}

std::optional<kernels::DType> StoredQuantization(const Checkpoint& ckpt, const std::string& name) {
  const TensorView* t = ckpt.Find(name);
  if (t == nullptr || t->shape.size() != 2 || ckpt.Find(name + "_scale") == nullptr) {
    return std::nullopt;
  }
  if (t->dtype == TensorDType::kI8) return kernels::DType::kI8;
  if (t->dtype == TensorDType::kU8) return kernels::DType::kQ4;
  return std::nullopt;
}

kernels::DType NativeStorageDType(const Checkpoint& ckpt) {
  constexpr std::string_view kScale = "_scale";
  for (const std::string& name : ckpt.Names()) {
    const TensorView* t = ckpt.Find(name);
    if (t->shape.size() != 2 || t->dtype == TensorDType::kF32 || t->dtype == TensorDType::kF64) {
      continue;
    }
    const bool scales = name.size() > kScale.size() && name.ends_with(kScale) &&
                        StoredQuantization(ckpt, name.substr(0, name.size() - kScale.size()));
    if (!scales && !StoredQuantization(ckpt, name)) return kernels::DType::kBF16;
  }
  return kernels::DType::kF32;
}

std::optional<kernels::DType> CheckpointQuantization(const Checkpoint& ckpt) {
  for (const std::string& name : ckpt.Names()) {
    if (std::optional<kernels::DType> q = StoredQuantization(ckpt, name)) return q;
  }
  return std::nullopt;
}

}  // namespace xlstmd::core
