// A small metrics library: counters, gauges and fixed-bucket histograms, grouped in families
// with bounded label sets, rendered in the Prometheus text exposition format 0.0.4. It knows
// nothing of HTTP or gRPC; the daemon declares its metrics in one file (server/metrics.cc)
// and serves Render() at /metrics.
//
// Costs: updating a series is a few relaxed atomic operations (no lock), so hot paths cache
// the series they update (`Family::With` takes the family's mutex once per lookup). Render
// takes each family's mutex briefly and costs O(series), never O(sessions).
//
// Declarations are code, so a malformed name, a duplicate name or non-increasing histogram
// bounds is a programming error (XLSTMD_CHECK). Label *values* may come from anywhere: they
// are escaped on output, invalid UTF-8 is replaced, and a family holds at most
// `kMaxSeriesPerFamily` series, after which new label sets share one series whose label
// values are all "_overflow" (a cardinality bug then shows up as that series, not as an
// unbounded memory leak).
//
// Threading: every method is thread-safe. Families and series live as long as the registry
// and never move, so references to them may be kept.
#ifndef XLSTMD_CORE_BASE_METRICS_H_
#define XLSTMD_CORE_BASE_METRICS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace xlstmd::base {

// The Content-Type of Render()'s output.
inline constexpr char kPrometheusTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Label values of one series, in the order of its family's label names.
using LabelValues = std::vector<std::string>;

// Only ever goes up. Add ignores negative and NaN increments.
class Counter {
 public:
  void Increment() { Add(1); }
  void Add(double delta);
  // For a counter whose source of truth is a monotonic count kept elsewhere, copied in just
  // before a scrape (e.g. the engine's snapshot write count).
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into buckets with fixed upper bounds (Prometheus `le`: a value equal
// to a bound falls into that bound's bucket) plus the implicit +Inf bucket. NaN observations
// are dropped. The count is derived from the buckets, so the +Inf bucket and `_count` of one
// scrape always agree; `_sum` may lag a concurrent observation by one.
class Histogram {
 public:
  // `bounds`: strictly increasing, finite; owned by the family, which outlives this.
  explicit Histogram(const std::vector<double>* bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;

 private:
  const std::vector<double>& bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1, not cumulative
  std::atomic<double> sum_{0};
};

enum class MetricType { kCounter, kGauge, kHistogram };

// What every family shares; the registry renders them in declaration order.
class FamilyBase {
 public:
  static constexpr size_t kMaxSeriesPerFamily = 1000;

  FamilyBase(std::string name, std::string help, MetricType type,
             std::vector<std::string> label_names);
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  const std::string& name() const { return name_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Appends this family's HELP, TYPE and sample lines; nothing when it has no series.
  virtual void Render(std::string* out) const = 0;

 protected:
  // `values` sanitized (valid UTF-8) and checked against the label names.
  LabelValues Sanitize(const LabelValues& values) const;
  void RenderHeader(std::string* out) const;

  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
};

template <typename T>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, MetricType type, std::vector<std::string> label_names,
         std::vector<double> bounds = {})
      : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
        bounds_(std::move(bounds)) {}

  // The series with these label values, created (at zero) on first use. The number of
  // values must equal the number of label names (a programming error otherwise).
  T& With(const LabelValues& values);
  // The one series of a family without labels.
  T& Get() { return With({}); }

  void Render(std::string* out) const override;

 private:
  const std::vector<double> bounds_;  // histograms only
  mutable absl::Mutex mu_;
  std::map<LabelValues, std::unique_ptr<T>> series_ ABSL_GUARDED_BY(mu_);
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Names follow Prometheus conventions: counters end in `_total`, units are base units
  // (`_seconds`, `_bytes`). A histogram may not have a label named `le`.
  CounterFamily& AddCounter(std::string name, std::string help,
                            std::vector<std::string> label_names = {});
  GaugeFamily& AddGauge(std::string name, std::string help,
                        std::vector<std::string> label_names = {});
  HistogramFamily& AddHistogram(std::string name, std::string help,
                                std::vector<std::string> label_names, std::vector<double> bounds);

  // Every family with at least one series, in declaration order, as text format 0.0.4.
  std::string Render() const;

 private:
  // Takes ownership of `family` (its name must be new) and returns it.
  template <typename F>
  F& Register(std::unique_ptr<F> family) {
    F& ref = *family;
    RegisterBase(std::move(family));
    return ref;
  }
  void RegisterBase(std::unique_ptr<FamilyBase> family);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
};

// Exposition helpers, exposed for tests.
// A sample value: shortest round-trip decimal, "+Inf", "-Inf" or "NaN".
std::string FormatMetricValue(double value);
// Label value escaping: backslash, double quote and newline.
std::string EscapeLabelValue(std::string_view value);
// HELP text escaping: backslash and newline.
std::string EscapeHelp(std::string_view help);
bool IsValidMetricName(std::string_view name);
bool IsValidLabelName(std::string_view name);

}  // namespace xlstmd::base

#endif  // XLSTMD_CORE_BASE_METRICS_H_
