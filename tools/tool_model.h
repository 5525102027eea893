// Shared plumbing of the model-running subcommands (score, generate, bench): backend + model
// loading with the tool's dtype and thread flags, token-list checks, and error reporting.
#ifndef XLSTMD_TOOLS_TOOL_MODEL_H_
#define XLSTMD_TOOLS_TOOL_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/base/flags.h"
#include "core/model/xlstm_model.h"
#include "kernels/backend.h"

namespace xlstmd::tools {

// --weight-dtype and --lm-head-dtype, as xlstmd takes them (core/model/weight_format.h).
struct WeightFlags {
  std::string weight_dtype = "auto";
  std::string lm_head_dtype = "auto";
  std::string cuda_math = "exact";     // kernels::MathMode name
  void Declare(base::FlagSet& flags);  // adds the three flags
};

// Owns the backend and the model; the model is declared last so it is destroyed first.
struct ToolModel {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<core::XlstmModel> model;
};

// `threads` <= 0 means one per core. `backend`: a registry name (kernels/backend_registry.h).
absl::StatusOr<ToolModel> LoadToolModel(const std::string& dir, const WeightFlags& weights,
                                        int threads, const std::string& backend = "cpu");

// "" when every token is in [0, vocab), else an error message naming the flag.
std::string CheckTokens(const std::vector<int64_t>& tokens, int64_t vocab);
std::vector<int32_t> ToInt32(const std::vector<int64_t>& v);

// Prints `xlstm <cmd>: error: <status>` (one line) and returns kExitRuntime.
int ReportRuntimeError(const std::string& command, const absl::Status& status);

// Index of the largest value; ties go to the lowest index.
int32_t ArgMax(const float* row, int64_t n);

// Deterministic pseudo-random token ids in [0, vocab) (xorshift64 from `seed`).
std::vector<int32_t> RandomTokens(int64_t n, int64_t vocab, uint64_t seed);

}  // namespace xlstmd::tools

#endif  // XLSTMD_TOOLS_TOOL_MODEL_H_
