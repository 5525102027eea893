// The operator's weight-format choice (`--weight-dtype`, `--lm-head-dtype` of xlstmd and the
// xlstm tool), resolved against a checkpoint into backend and load options. One function, so
// the daemon and the tool serve a model identically for the same flags.
//
// --weight-dtype: auto | f32 | bf16 | int8 | q4. auto keeps the checkpoint's precision
// (NativeStorageDType: f32 for an all-f32 checkpoint, else bf16) or, for a checkpoint that
// `xlstm quantize` wrote, its stored format. int8/q4 quantize the projection matrices at load
// (kernels/quant.h); the embedding and the norms stay float.
// --lm-head-dtype: auto (= --weight-dtype; for a quantized checkpoint, as stored) or one of
// the same five. A quantized checkpoint is served as stored: a choice that contradicts it is
// INVALID_ARGUMENT naming the flag.
#ifndef XLSTMD_CORE_MODEL_WEIGHT_FORMAT_H_
#define XLSTMD_CORE_MODEL_WEIGHT_FORMAT_H_

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/xlstm_model.h"
#include "kernels/op_params.h"

namespace xlstmd::core {

struct WeightFormat {
  kernels::DType float_dtype = kernels::DType::kBF16;  // BackendOptions::weight_dtype
  kernels::DType matrix_dtype = kernels::DType::kBF16;
  kernels::DType lm_head_dtype = kernels::DType::kBF16;
  bool prequantized = false;  // the checkpoint stores quantized matrices

  // Load options carrying matrix_dtype / lm_head_dtype.
  LoadOptions ToLoadOptions(int conversion_threads) const;
};

// The values both flags accept.
const std::vector<std::string>& WeightDTypeChoices();
// Parses one of WeightDTypeChoices() other than "auto".
absl::StatusOr<kernels::DType> ParseWeightDType(const std::string& name);

absl::StatusOr<WeightFormat> ResolveWeightFormat(const std::filesystem::path& dir,
                                                 const std::string& weight_dtype,
                                                 const std::string& lm_head_dtype);

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_WEIGHT_FORMAT_H_
