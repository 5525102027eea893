#include "kernels/backend.h"

#include "absl/strings/str_cat.h"

namespace xlstmd::kernels {

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kI8:
      return 1;
    case DType::kQ4:
      return 0;  // half a byte plus scales: not an element size
  }
  return 0;  // Not a valid DType; callers treat 0 as "unknown".
}

const char* MathModeName(MathMode m) {
  return m == MathMode::kBf16 ? "bf16" : "exact";
}

absl::StatusOr<MathMode> ParseMathMode(std::string_view name) {
  if (name == "exact") return MathMode::kExact;
  if (name == "bf16") return MathMode::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("math mode \"", std::string(name), "\" is not one of exact, bf16"));
}

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kI8:
      return "int8";
    case DType::kQ4:
      return "q4";
  }
  return "unknown";
}

}  // namespace xlstmd::kernels
