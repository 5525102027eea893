#include "tools/tool_model.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/progress_bar.h"
#include "core/base/status_macros.h"
#include "kernels/backend_registry.h"
#include "core/model/checkpoint.h"
#include "core/model/weight_format.h"
#include "tools/commands.h"

namespace xlstmd::tools {
void WeightFlags::Declare(base::FlagSet& flags) {
  flags.Choice("weight-dtype", &weight_dtype, core::WeightDTypeChoices(),
               "storage of the projection matrices: f32, bf16, or quantized at load (int8, q4); "
               "auto = f32 for an all-F32 checkpoint, bf16 otherwise, or as a quantized "
               "checkpoint stores them (as xlstmd)");
  flags.Choice("lm-head-dtype", &lm_head_dtype, core::WeightDTypeChoices(),
               "storage of the LM head; auto = as --weight-dtype");
  flags.Choice("cuda-math", &cuda_math, {"exact", "bf16"},
               "CUDA projections: exact (f32 activations, the golden tolerances) or bf16 "
               "(bf16 weights and activations, f32 accumulation; as xlstmd)");
}

absl::StatusOr<ToolModel> LoadToolModel(const std::string& dir, const WeightFlags& weights,
                                        int threads, const std::string& backend) {
  XLSTMD_ASSIGN_OR_RETURN(
      const core::WeightFormat format,
      core::ResolveWeightFormat(dir, weights.weight_dtype, weights.lm_head_dtype));
  kernels::BackendOptions options;
  options.threads = threads;
  options.weight_dtype = format.float_dtype;
  XLSTMD_ASSIGN_OR_RETURN(options.math, kernels::ParseMathMode(weights.cuda_math));
  ToolModel m;
  XLSTMD_ASSIGN_OR_RETURN(m.backend, kernels::CreateBackend(backend, options));
  if (m.backend->Math() != options.math) {
    std::fprintf(stderr, "note: --cuda-math %s does not apply to backend %s; it computes %s\n",
                 kernels::MathModeName(options.math), m.backend->Name().c_str(),
                 kernels::MathModeName(m.backend->Math()));
  }
  core::LoadOptions lo = format.ToLoadOptions(threads);
  base::ProgressBar bar("loading weights");  // on a terminal only
  lo.progress = [&bar](const core::LoadProgress& p) { bar.Update(p.bytes_done, p.bytes_total); };
  XLSTMD_ASSIGN_OR_RETURN(m.model, core::XlstmModel::Load(dir, m.backend.get(), lo));
  return m;
}

std::string CheckTokens(const std::vector<int64_t>& tokens, int64_t vocab) {
  for (int64_t t : tokens) {
    if (t < 0 || t >= vocab) {
      return absl::StrCat("--tokens: token ", t, " is out of range [0, ", vocab - 1, "]");
    }
  }
  return "";
}

std::vector<int32_t> ToInt32(const std::vector<int64_t>& v) {
  return std::vector<int32_t>(v.begin(), v.end());
}

int ReportRuntimeError(const std::string& command, const absl::Status& status) {
  std::string text = status.ToString();
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::fprintf(stderr, "xlstm %s: error: %s\n", command.c_str(), text.c_str());
  return kExitRuntime;
}

int32_t ArgMax(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (row[i] > row[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

std::vector<int32_t> RandomTokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (int32_t& t : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    t = static_cast<int32_t>(x % static_cast<uint64_t>(vocab));
  }
  return out;
}

}  // namespace xlstmd::tools
