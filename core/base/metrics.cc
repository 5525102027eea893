#include "core/base/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/check.h"
#include "core/base/utf8.h"

namespace xlstmd::base {
namespace {

constexpr char kOverflowValue[] = "_overflow";

bool IsNameStart(char c, bool allow_colon) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
}
bool IsNameChar(char c, bool allow_colon) {
  return IsNameStart(c, allow_colon) || (c >= '0' && c <= '9');
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// `{a="x",b="y"}` for the series' labels plus an optional extra one (a histogram's `le`);
// "" when there are none.
std::string LabelSet(const std::vector<std::string>& names, const LabelValues& values,
                     std::string_view extra_name = {}, std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    absl::StrAppend(&out, names[i], "=\"", EscapeLabelValue(values[i]), "\"");
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out += ',';
    out.append(extra_name).append("=\"").append(extra_value).append("\"");
  }
  out += '}';
  return out;
}

void AppendSample(std::string* out, std::string_view name, std::string_view suffix,
                  const std::string& labels, double value) {
  out->append(name).append(suffix).append(labels).append(" ");
  out->append(FormatMetricValue(value)).append("\n");
}

}  // namespace

// ---------------- helpers ----------------

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == 0) return "0";  // never "-0"
  // Counts print as plain integers while doubles hold them exactly (to 2^53).
  if (std::abs(value) <= 9007199254740992.0 && std::trunc(value) == value) {
    return std::to_string(static_cast<int64_t>(value));
  }
  // Shortest round trip in %g style: "0.0005", not the shorter "5e-04", for bucket bounds.
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::general);
  return std::string(buf, res.ptr);
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

bool IsValidMetricName(std::string_view name) {
  if (name.empty() || !IsNameStart(name[0], true)) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return IsNameChar(c, true); });
}

bool IsValidLabelName(std::string_view name) {
  if (name.empty() || !IsNameStart(name[0], false)) return false;
  if (name.substr(0, 2) == "__") return false;  // reserved for Prometheus itself
  return std::all_of(name.begin(), name.end(), [](char c) { return IsNameChar(c, false); });
}

// ---------------- series ----------------

void Counter::Add(double delta) {
  if (!(delta >= 0)) return;  // also drops NaN
  value_.fetch_add(delta, std::memory_order_relaxed);
}

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(*bounds), buckets_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  // First bound >= value: `le` is inclusive. Past the last bound: the +Inf bucket.
  const size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) -
                                       bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = running;
  }
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

// ---------------- families ----------------

FamilyBase::FamilyBase(std::string name, std::string help, MetricType type,
                       std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {
  XLSTMD_CHECK(IsValidMetricName(name_));
  std::set<std::string> seen;
  for (const std::string& l : label_names_) {
    XLSTMD_CHECK(IsValidLabelName(l));
    XLSTMD_CHECK(seen.insert(l).second);
    XLSTMD_CHECK(!(type_ == MetricType::kHistogram && l == "le"));
  }
}

LabelValues FamilyBase::Sanitize(const LabelValues& values) const {
  XLSTMD_CHECK(values.size() == label_names_.size());
  LabelValues out;
  out.reserve(values.size());
  for (const std::string& v : values) out.push_back(core::Utf8Lossy(v));
  return out;
}

void FamilyBase::RenderHeader(std::string* out) const {
  absl::StrAppend(out, "# HELP ", name_, " ", EscapeHelp(help_), "\n");
  absl::StrAppend(out, "# TYPE ", name_, " ", TypeName(type_), "\n");
}

template <typename T>
T& Family<T>::With(const LabelValues& values) {
  LabelValues key = Sanitize(values);
  absl::MutexLock lock(&mu_);
  auto it = series_.find(key);
  if (it != series_.end()) return *it->second;
  if (series_.size() >= kMaxSeriesPerFamily) {
    key.assign(label_names_.size(), kOverflowValue);
    it = series_.find(key);
    if (it != series_.end()) return *it->second;
  }
  std::unique_ptr<T> series;
  if constexpr (std::is_same_v<T, Histogram>) {
    series = std::make_unique<Histogram>(&bounds_);
  } else {
    series = std::make_unique<T>();
  }
  T& ref = *series;
  series_.emplace(std::move(key), std::move(series));
  return ref;
}

template <typename T>
void Family<T>::Render(std::string* out) const {
  absl::MutexLock lock(&mu_);
  if (series_.empty()) return;
  RenderHeader(out);
  for (const auto& [values, series] : series_) {
    if constexpr (std::is_same_v<T, Histogram>) {
      const Histogram::Snapshot s = series->Read();
      for (size_t i = 0; i < bounds_.size(); ++i) {
        AppendSample(out, name_, "_bucket",
                     LabelSet(label_names_, values, "le", FormatMetricValue(bounds_[i])),
                     static_cast<double>(s.cumulative[i]));
      }
      AppendSample(out, name_, "_bucket", LabelSet(label_names_, values, "le", "+Inf"),
                   static_cast<double>(s.count));
      const std::string labels = LabelSet(label_names_, values);
      AppendSample(out, name_, "_sum", labels, s.sum);
      AppendSample(out, name_, "_count", labels, static_cast<double>(s.count));
    } else {
      AppendSample(out, name_, "", LabelSet(label_names_, values), series->value());
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---------------- registry ----------------

void MetricsRegistry::RegisterBase(std::unique_ptr<FamilyBase> family) {
  absl::MutexLock lock(&mu_);
  for (const auto& f : families_) XLSTMD_CHECK(f->name() != family->name());
  families_.push_back(std::move(family));
}

CounterFamily& MetricsRegistry::AddCounter(std::string name, std::string help,
                                           std::vector<std::string> label_names) {
  return Register(std::make_unique<CounterFamily>(std::move(name), std::move(help),
                                                  MetricType::kCounter, std::move(label_names)));
}

GaugeFamily& MetricsRegistry::AddGauge(std::string name, std::string help,
                                       std::vector<std::string> label_names) {
  return Register(std::make_unique<GaugeFamily>(std::move(name), std::move(help),
                                                MetricType::kGauge, std::move(label_names)));
}

HistogramFamily& MetricsRegistry::AddHistogram(std::string name, std::string help,
                                               std::vector<std::string> label_names,
                                               std::vector<double> bounds) {
  XLSTMD_CHECK(!bounds.empty());
  for (size_t i = 0; i < bounds.size(); ++i) {
    XLSTMD_CHECK(std::isfinite(bounds[i]));
    XLSTMD_CHECK(i == 0 || bounds[i - 1] < bounds[i]);
  }
  return Register(std::make_unique<HistogramFamily>(std::move(name), std::move(help),
                                                    MetricType::kHistogram, std::move(label_names),
                                                    std::move(bounds)));
}

std::string MetricsRegistry::Render() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& f : families_) f->Render(&out);
  return out;
}

}  // namespace xlstmd::base
