// Access to the team's golden vectors in ../shared/golden (path fixed at configure time).
// A missing directory or tensor is a test failure, never a skip.
#ifndef XLSTMD_TESTS_TESTING_GOLDEN_H_
#define XLSTMD_TESTS_TESTING_GOLDEN_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/safetensors.h"

namespace xlstmd::testing {

std::filesystem::path SharedDir();
std::filesystem::path GoldenDir(const std::string& model);  // SharedDir()/golden/<model>

struct GoldenSequence {
  std::string name;  // "seq_len33"
  std::vector<int32_t> tokens;
  std::optional<int64_t> split;
};

struct GoldenModel {
  std::string model;
  std::vector<GoldenSequence> sequences;
  double logits_atol = 0;
  double logits_rtol = 0;
  std::vector<int32_t> greedy_prompt;
  std::vector<int32_t> greedy_generated;
  std::unique_ptr<core::SafetensorsFile> tensors;  // golden.safetensors
  // golden.json `bf16_compute_drift`: max |logits| drift of upstream's bf16-weight,
  // bf16-activation run from the f32 goldens, by "seq_len7/full" etc.; entries upstream
  // could not produce (an error text) are absent. Empty for models without it.
  std::map<std::string, double> bf16_compute_drift;

  // A float32 tensor by name, e.g. "seq_len7/logits_full"; fails the test if absent.
  std::vector<float> F32(const std::string& name) const;
};

absl::StatusOr<GoldenModel> LoadGolden(const std::string& model);

// max |a - b| over elements where |a - b| > atol + rtol * |b|, or 0 if all are within.
double WorstViolation(const std::vector<float>& a, const std::vector<float>& b, double atol,
                      double rtol);
double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b);
double MaxAbs(const std::vector<float>& a);

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_TESTING_GOLDEN_H_
