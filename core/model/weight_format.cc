#include "core/model/weight_format.h"

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/model/checkpoint.h"
#include "kernels/backend.h"

namespace xlstmd::core {
namespace {

absl::Status Contradicts(const std::string& flag, const std::string& value,
                         const std::filesystem::path& dir, const std::string& stored) {
  return absl::InvalidArgumentError(absl::StrCat(
      flag, "=", value, ": checkpoint ", dir.string(), " was quantized by xlstm quantize and ",
      "stores ", stored, "; serve it with ", flag, "=auto (or ", stored, ")"));
}

}  // namespace

LoadOptions WeightFormat::ToLoadOptions(int conversion_threads) const {
  LoadOptions o;
  o.conversion_threads = conversion_threads;
  o.matrix_dtype = matrix_dtype;
  o.lm_head_dtype = lm_head_dtype;
  return o;
}

const std::vector<std::string>& WeightDTypeChoices() {
  static const std::vector<std::string> kChoices = {"auto", "f32", "bf16", "int8", "q4"};
  return kChoices;
}

absl::StatusOr<kernels::DType> ParseWeightDType(const std::string& name) {
  if (name == "f32") return kernels::DType::kF32;
  if (name == "bf16") return kernels::DType::kBF16;
  if (name == "int8") return kernels::DType::kI8;
  if (name == "q4") return kernels::DType::kQ4;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown weight dtype \"", name, "\" (f32, bf16, int8 or q4)"));
}

absl::StatusOr<WeightFormat> ResolveWeightFormat(const std::filesystem::path& dir,
                                                 const std::string& weight_dtype,
                                                 const std::string& lm_head_dtype) {
  XLSTMD_ASSIGN_OR_RETURN(const std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(dir));
  const kernels::DType native = NativeStorageDType(*ckpt);
  const std::optional<kernels::DType> stored = CheckpointQuantization(*ckpt);
  WeightFormat f;
  f.prequantized = stored.has_value();
  if (weight_dtype == "auto") {
    f.float_dtype = native;
    f.matrix_dtype = stored.value_or(native);
  } else {
    XLSTMD_ASSIGN_OR_RETURN(const kernels::DType want, ParseWeightDType(weight_dtype));
    if (stored.has_value() && want != *stored) {
      return Contradicts("--weight-dtype", weight_dtype, dir, kernels::DTypeName(*stored));
    }
    f.float_dtype = kernels::IsQuantized(want) ? native : want;
    f.matrix_dtype = want;
  }
  // xlstm quantize may have kept the head float: then the head is served in the float dtype.
  const kernels::DType stored_head =
      stored.has_value() ? StoredQuantization(*ckpt, "lm_head.weight").value_or(f.float_dtype)
                         : f.matrix_dtype;
  if (lm_head_dtype == "auto") {
    f.lm_head_dtype = stored_head;
  } else {
    XLSTMD_ASSIGN_OR_RETURN(f.lm_head_dtype, ParseWeightDType(lm_head_dtype));
    if (stored.has_value() &&
        kernels::IsQuantized(f.lm_head_dtype) != kernels::IsQuantized(stored_head)) {
      return Contradicts("--lm-head-dtype", lm_head_dtype, dir,
                         kernels::IsQuantized(stored_head) ? kernels::DTypeName(stored_head)
                                                           : "a float LM head");
    }
  }
  return f;
}

}  // namespace xlstmd::core
