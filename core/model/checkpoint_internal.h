// The tensor resolver shared by the family-A (checkpoint.cc) and family-B
// (checkpoint_paper.cc) loaders. Not for use outside core/model.
#ifndef XLSTMD_CORE_MODEL_CHECKPOINT_INTERNAL_H_
#define XLSTMD_CORE_MODEL_CHECKPOINT_INTERNAL_H_

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "core/model/checkpoint.h"
#include "kernels/backend.h"
#include "kernels/quant.h"

namespace xlstmd::core::checkpoint_internal {

inline constexpr size_t kMaxExtraNamesShown = 5;

inline std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// 0 as `cols` in Resolver calls means "a vector": shape [rows] and TensorSlice::cols == 1.
inline constexpr int64_t kVector = 0;

// Looks tensors up by name, checks dtype and shape, and remembers which ones were used so
// that leftovers can be reported. Every error names the tensor and its file (or the dir).
class Resolver {
 public:
  explicit Resolver(const Checkpoint& ckpt) : ckpt_(ckpt) {}

  bool Has(const std::string& name) const { return ckpt_.Find(name) != nullptr; }

  // The whole tensor `name`, which must have shape [rows, cols] (or [rows] for kVector).
  absl::StatusOr<TensorSlice> Whole(const std::string& name, int64_t rows, int64_t cols) {
    const TensorView* t = ckpt_.Find(name);
    if (t == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("tensor \"", name, "\" not found in checkpoint ", ckpt_.dir().string()));
    }
    if (cols != kVector && (t->dtype == TensorDType::kI8 || t->dtype == TensorDType::kU8)) {
      return Quantized(*t, rows, cols);
    }
    if (t->dtype != TensorDType::kF32 && t->dtype != TensorDType::kBF16 &&
        t->dtype != TensorDType::kF16) {
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported dtype ", TensorDTypeName(t->dtype), " for tensor ", name,
                       " in ", t->file, " (expected F32, BF16 or F16",
                       cols != kVector ? ", or I8/U8 codes with a _scale tensor" : "", ")"));
    }
    const std::vector<int64_t> want =
        cols == kVector ? std::vector<int64_t>{rows} : std::vector<int64_t>{rows, cols};
    if (t->shape != want) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " in ", t->file,
                                                     " has shape ", ShapeString(t->shape),
                                                     ", expected ", ShapeString(want)));
    }
    used_.insert(name);
    TensorSlice s;
    s.tensor = t;
    s.row_begin = 0;
    s.rows = rows;
    s.cols = cols == kVector ? 1 : cols;
    return s;
  }

  // A matrix `xlstm quantize` stored: codes in `t` (I8 [rows, cols] for int8, U8 [rows,
  // Q4RowBytes(cols)] for q4) and scales in `<name>_scale` (F32 [rows] / F16 [rows, groups]).
  absl::StatusOr<TensorSlice> Quantized(const TensorView& t, int64_t rows, int64_t cols) {
    const bool q4 = t.dtype == TensorDType::kU8;
    const kernels::DType quant = q4 ? kernels::DType::kQ4 : kernels::DType::kI8;
    const std::vector<int64_t> want{rows, q4 ? kernels::Q4RowBytes(cols) : cols};
    if (t.shape != want) {
      return absl::InvalidArgumentError(
          absl::StrCat("quantized (", kernels::DTypeName(quant), ") tensor ", t.name, " in ",
                       t.file, " has shape ", ShapeString(t.shape), ", expected ",
                       ShapeString(want)));
    }
    const std::string scale_name = t.name + "_scale";
    const TensorView* sc = ckpt_.Find(scale_name);
    const TensorDType scale_dtype = q4 ? TensorDType::kF16 : TensorDType::kF32;
    const std::vector<int64_t> scale_shape =
        q4 ? std::vector<int64_t>{rows, kernels::Q4Groups(cols)} : std::vector<int64_t>{rows};
    if (sc == nullptr) {
      return absl::NotFoundError(absl::StrCat("tensor \"", scale_name, "\" (the scales of the ",
                                              "quantized ", t.name, ") not found in checkpoint ",
                                              ckpt_.dir().string()));
    }
    if (sc->dtype != scale_dtype || sc->shape != scale_shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", scale_name, " in ", sc->file, " is ", TensorDTypeName(sc->dtype), " ",
          ShapeString(sc->shape), ", expected ", TensorDTypeName(scale_dtype), " ",
          ShapeString(scale_shape)));
    }
    used_.insert(t.name);
    used_.insert(scale_name);
    TensorSlice s;
    s.tensor = &t;
    s.rows = rows;
    s.cols = cols;
    s.quant = quant;
    s.scale = sc;
    return s;
  }

  // A float tensor of any rank that must have exactly `shape`, as a flat vector slice
  // (rows = element count, cols = 1): headwise weights, conv kernels, the sLSTM's kernel.
  absl::StatusOr<TensorSlice> Shaped(const std::string& name, const std::vector<int64_t>& shape) {
    const TensorView* t = ckpt_.Find(name);
    if (t == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("tensor \"", name, "\" not found in checkpoint ", ckpt_.dir().string()));
    }
    if (t->dtype != TensorDType::kF32 && t->dtype != TensorDType::kBF16 &&
        t->dtype != TensorDType::kF16) {
      return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", TensorDTypeName(t->dtype),
                                                     " for tensor ", name, " in ", t->file,
                                                     " (expected F32, BF16 or F16)"));
    }
    if (t->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " in ", t->file,
                                                     " has shape ", ShapeString(t->shape),
                                                     ", expected ", ShapeString(shape)));
    }
    used_.insert(name);
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    TensorSlice s;
    s.tensor = t;
    s.rows = n;
    s.cols = 1;
    return s;
  }

  // `name` holds several logical tensors stacked by rows (fused checkpoints): returns one
  // slice per entry of `rows`, in order.
  absl::StatusOr<std::vector<TensorSlice>> Split(const std::string& name,
                                                 const std::vector<int64_t>& rows, int64_t cols) {
    int64_t total = 0;
    for (int64_t r : rows) total += r;
    XLSTMD_ASSIGN_OR_RETURN(const TensorSlice whole, Whole(name, total, cols));
    std::vector<TensorSlice> parts;
    int64_t at = 0;
    for (int64_t r : rows) {
      TensorSlice s = whole;
      s.row_begin = at;
      s.rows = r;
      parts.push_back(s);
      at += r;
    }
    return parts;
  }

  // Everything in the checkpoint must have been used: a leftover usually means a config that
  // does not match the weights (wrong num_blocks, use_bias, add_out_norm, ...).
  absl::Status CheckAllUsed() const {
    std::vector<std::string> extra;
    for (const std::string& name : ckpt_.Names()) {
      if (used_.count(name) == 0) extra.push_back(name);
    }
    if (extra.empty()) return absl::OkStatus();
    const size_t shown = std::min(extra.size(), kMaxExtraNamesShown);
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", ckpt_.dir().string(), " has ", extra.size(),
                     " tensor(s) that are not part of the model: ",
                     absl::StrJoin(extra.begin(), extra.begin() + shown, ", "),
                     extra.size() > shown ? ", ..." : ""));
  }

 private:
  const Checkpoint& ckpt_;
  std::set<std::string> used_;
};

}  // namespace xlstmd::core::checkpoint_internal

#endif  // XLSTMD_CORE_MODEL_CHECKPOINT_INTERNAL_H_
