#include "tests/testing/golden.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace xlstmd::testing {

// XLSTMD_SHARED_DIR in the environment wins over the configure-time path, so a bundle of the
// test binaries (scripts/gpu-check.sh) finds the goldens it carries.
std::filesystem::path SharedDir() {
  const char* env = std::getenv("XLSTMD_SHARED_DIR");
  if (env != nullptr && *env != '\0') return std::filesystem::path(env);
  return std::filesystem::path(XLSTMD_SHARED_DIR);
}

std::filesystem::path GoldenDir(const std::string& model) {
  return SharedDir() / "golden" / model;
}

std::vector<float> GoldenModel::F32(const std::string& name) const {
  const core::TensorView* t = tensors->Find(name);
  if (t == nullptr || t->dtype != core::TensorDType::kF32) {
    ADD_FAILURE() << "golden tensor " << name << " missing or not F32 in " << model;
    return {};
  }
  std::vector<float> out(static_cast<size_t>(t->NumElements()));
  std::memcpy(out.data(), t->data, out.size() * sizeof(float));
  return out;
}

absl::StatusOr<GoldenModel> LoadGolden(const std::string& model) {
  const std::filesystem::path dir = GoldenDir(model);
  std::ifstream in(dir / "golden.json");
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", (dir / "golden.json").string()));
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError("golden.json is not JSON");
  GoldenModel g;
  g.model = model;
  for (const auto& s : j.at("sequences")) {
    GoldenSequence seq;
    seq.name = s.at("name").get<std::string>();
    seq.tokens = s.at("token_ids").get<std::vector<int32_t>>();
    if (!s.at("split").is_null()) seq.split = s.at("split").get<int64_t>();
    g.sequences.push_back(std::move(seq));
  }
  g.logits_atol = j.at("suggested_tolerance").at("logits_atol").get<double>();
  g.logits_rtol = j.at("suggested_tolerance").at("logits_rtol").get<double>();
  g.greedy_prompt = j.at("greedy").at("prompt_ids").get<std::vector<int32_t>>();
  g.greedy_generated = j.at("greedy").at("generated_ids").get<std::vector<int32_t>>();
  if (j.contains("bf16_compute_drift")) {
    for (const auto& [key, value] : j.at("bf16_compute_drift").at("values").items()) {
      if (value.is_number()) g.bf16_compute_drift[key] = value.get<double>();
    }
  }
  auto st = core::SafetensorsFile::Open(dir / "golden.safetensors");
  if (!st.ok()) return st.status();
  g.tensors = std::move(*st);
  return g;
}

double WorstViolation(const std::vector<float>& a, const std::vector<float>& b, double atol,
                      double rtol) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= atol + rtol * std::fabs(b[i]))) worst = std::max(worst, std::isnan(d) ? INFINITY : d);
  }
  return worst;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    worst = std::max(worst, std::isnan(d) ? INFINITY : d);
  }
  return worst;
}

double MaxAbs(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

}  // namespace xlstmd::testing
