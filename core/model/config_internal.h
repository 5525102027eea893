// Internals of config parsing shared by config.cc (family A) and config_paper.cc (family B).
// Not for use outside core/model.
#ifndef XLSTMD_CORE_MODEL_CONFIG_INTERNAL_H_
#define XLSTMD_CORE_MODEL_CONFIG_INTERNAL_H_

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/base/json_file.h"
#include "core/base/status_macros.h"
#include "core/model/config.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core::config_internal {

// Upper bounds that keep every derived product far from int64 overflow and reject files that
// are clearly not an xLSTM config. Token ids are int32 on the wire, hence the vocab bound.
inline constexpr int64_t kMaxVocab = std::numeric_limits<int32_t>::max();
inline constexpr int64_t kMaxDim = int64_t{1} << 20;
inline constexpr int64_t kMaxBlocks = 4096;
inline constexpr double kMaxFactor = 64.0;

// Typed, presence-aware access to the fields of one config object. Every error names the
// source file and the field.
class FieldReader {
 public:
  FieldReader(const nlohmann::json& obj, const std::string& source) : obj_(obj), source_(source) {}

  absl::Status Error(const std::string& field, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field \"", field, "\" ", what));
  }

  // nullptr when absent. JSON null counts as absent: HF configs write null for "unset".
  const nlohmann::json* Get(const std::string& field) const {
    auto it = obj_.find(field);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  bool IsNull(const std::string& field) const {
    auto it = obj_.find(field);
    return it != obj_.end() && it->is_null();
  }

  // Leaves *out unchanged when the field is absent and not required.
  absl::Status Int(const std::string& field, bool required, int64_t* out) const {
    const nlohmann::json* v = Get(field);
    if (v == nullptr) return required ? Error(field, "is missing") : absl::OkStatus();
    if (v->is_number_unsigned()) {
      const uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Error(field, absl::StrCat("is out of range: ", u));
      }
      *out = static_cast<int64_t>(u);
      return absl::OkStatus();
    }
    if (v->is_number_integer()) {
      *out = v->get<int64_t>();
      return absl::OkStatus();
    }
    return Error(field, absl::StrCat("must be an integer, got ", JsonTypeName(*v)));
  }

  absl::Status Double(const std::string& field, double* out) const {
    const nlohmann::json* v = Get(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) {
      return Error(field, absl::StrCat("must be a number, got ", JsonTypeName(*v)));
    }
    const double d = v->get<double>();
    if (!std::isfinite(d)) return Error(field, "must be finite");
    *out = d;
    return absl::OkStatus();
  }

  absl::Status Float(const std::string& field, float* out) const {
    double d = *out;
    XLSTMD_RETURN_IF_ERROR(Double(field, &d));
    if (std::fabs(d) > std::numeric_limits<float>::max()) {
      return Error(field, absl::StrCat("does not fit a float: ", d));
    }
    *out = static_cast<float>(d);
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& field, bool* out) const {
    const nlohmann::json* v = Get(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) {
      return Error(field, absl::StrCat("must be true or false, got ", JsonTypeName(*v)));
    }
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(const std::string& field, std::string* out) const {
    const nlohmann::json* v = Get(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) {
      return Error(field, absl::StrCat("must be a string, got ", JsonTypeName(*v)));
    }
    *out = v->get_ref<const std::string&>();
    return absl::OkStatus();
  }

  // Reads whichever of `name` / `alias` is present (at least one must be); when both are,
  // they must agree, since HF configs carry both spellings and a disagreement means the file
  // was edited inconsistently.
  absl::Status IntWithAlias(const std::string& name, const std::string& alias, int64_t* out) const {
    const bool has_name = Get(name) != nullptr;
    const bool has_alias = Get(alias) != nullptr;
    if (!has_name && !has_alias) {
      return absl::InvalidArgumentError(
          absl::StrCat(source_, ": field \"", name, "\" (or \"", alias, "\") is missing"));
    }
    int64_t a = 0, b = 0;
    if (has_name) XLSTMD_RETURN_IF_ERROR(Int(name, true, &a));
    if (has_alias) XLSTMD_RETURN_IF_ERROR(Int(alias, true, &b));
    if (has_name && has_alias && a != b) {
      return Error(name, absl::StrCat("is ", a, " but \"", alias, "\" is ", b));
    }
    *out = has_name ? a : b;
    return absl::OkStatus();
  }

  // Range checks, phrased as "field must be ..., got ...".
  absl::Status InRange(const std::string& field, int64_t v, int64_t lo, int64_t hi) const {
    if (v < lo || v > hi) {
      return Error(field, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
    }
    return absl::OkStatus();
  }
  absl::Status Positive(const std::string& field, double v, double hi) const {
    if (!(v > 0.0) || v > hi) {
      return Error(field, absl::StrCat("must be in (0, ", hi, "], got ", v));
    }
    return absl::OkStatus();
  }

 private:
  const nlohmann::json& obj_;
  const std::string& source_;
};


// Fills the family-B fields of *c from the parsed config (xlstm-spec.md 4.1).
absl::Status ReadPaperConfig(const nlohmann::json& doc, const std::string& source, ModelConfig* c);

}  // namespace xlstmd::core::config_internal

#endif  // XLSTMD_CORE_MODEL_CONFIG_INTERNAL_H_
