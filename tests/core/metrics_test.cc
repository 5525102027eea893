#include "core/base/metrics.h"

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xlstmd::base {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsFormatTest, Values) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(-0.0), "0");
  EXPECT_EQ(FormatMetricValue(3), "3");
  EXPECT_EQ(FormatMetricValue(-12), "-12");
  EXPECT_EQ(FormatMetricValue(0.25), "0.25");
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");  // shortest round trip, not 0.1000000000000000055
  EXPECT_EQ(FormatMetricValue(1e21), "1e+21");
  EXPECT_EQ(FormatMetricValue(0.0005), "0.0005");  // as bucket bounds are usually written
  EXPECT_EQ(FormatMetricValue(0.00025), "0.00025");
  EXPECT_EQ(FormatMetricValue(1e-5), "1e-05");
  EXPECT_EQ(FormatMetricValue(1000000), "1000000");
  EXPECT_EQ(FormatMetricValue(1795931107.7893178), "1.7959311077893178e+09");  // as Go prints
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
  // Counts up to 2^53 print as exact integers.
  EXPECT_EQ(FormatMetricValue(9007199254740992.0), "9007199254740992");
}

TEST(MetricsFormatTest, Escaping) {
  EXPECT_EQ(EscapeLabelValue(R"(a"b\c)"
                             "\n"
                             "d"),
            R"(a\"b\\c\nd)");
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  // HELP escapes only backslash and newline; quotes stay.
  EXPECT_EQ(EscapeHelp("say \"hi\"\\\nnext"), "say \"hi\"\\\\\\nnext");
}

TEST(MetricsFormatTest, Names) {
  EXPECT_TRUE(IsValidMetricName("xlstmd_turns_total"));
  EXPECT_TRUE(IsValidMetricName("a:b_c9"));
  EXPECT_FALSE(IsValidMetricName(""));
  EXPECT_FALSE(IsValidMetricName("9abc"));
  EXPECT_FALSE(IsValidMetricName("a-b"));
  EXPECT_TRUE(IsValidLabelName("finish_reason"));
  EXPECT_FALSE(IsValidLabelName("__name__"));
  EXPECT_FALSE(IsValidLabelName("a:b"));
  EXPECT_FALSE(IsValidLabelName(""));
}

TEST(MetricsRegistryTest, CounterAndGaugeExposition) {
  MetricsRegistry r;
  CounterFamily& turns = r.AddCounter("x_turns_total", "Turns committed.", {"finish_reason"});
  GaugeFamily& depth = r.AddGauge("x_queue_depth", "Turns waiting.\nSecond line \\ here.");
  turns.With({"max_tokens"}).Add(2);
  turns.With({"stop_token"}).Increment();
  turns.With({"max_tokens"}).Increment();
  turns.With({"max_tokens"}).Add(-5);  // a counter never goes down
  turns.With({"max_tokens"}).Add(std::nan(""));
  depth.Get().Set(7);
  depth.Get().Add(-2.5);
  EXPECT_EQ(r.Render(),
            "# HELP x_turns_total Turns committed.\n"
            "# TYPE x_turns_total counter\n"
            "x_turns_total{finish_reason=\"max_tokens\"} 3\n"
            "x_turns_total{finish_reason=\"stop_token\"} 1\n"
            "# HELP x_queue_depth Turns waiting.\\nSecond line \\\\ here.\n"
            "# TYPE x_queue_depth gauge\n"
            "x_queue_depth 4.5\n");
}

TEST(MetricsRegistryTest, FamilyWithoutSeriesIsOmitted) {
  MetricsRegistry r;
  r.AddCounter("x_failed_total", "Failed.", {"code"});
  EXPECT_EQ(r.Render(), "");
}

TEST(MetricsRegistryTest, LabelValuesAreEscaped) {
  MetricsRegistry r;
  CounterFamily& c = r.AddCounter("x_total", "h", {"a", "b"});
  c.With({"quote\"back\\slash", "new\nline"}).Increment();
  c.With({std::string("bad\xff"), ""}).Increment();
  const std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("x_total{a=\"quote\\\"back\\\\slash\",b=\"new\\nline\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("x_total{a=\"bad\xEF\xBF\xBD\",b=\"\"} 1\n"));
}

TEST(MetricsRegistryTest, HistogramBucketsAreCumulativeAndInclusive) {
  MetricsRegistry r;
  HistogramFamily& h = r.AddHistogram("x_latency_seconds", "Latency.", {}, {0.1, 0.5, 1});
  Histogram& s = h.Get();
  for (double v : {0.05, 0.1, 0.3, 0.5, 0.7, 1.0, 2.0, 100.0}) s.Observe(v);
  s.Observe(std::nan(""));  // dropped
  EXPECT_EQ(r.Render(),
            "# HELP x_latency_seconds Latency.\n"
            "# TYPE x_latency_seconds histogram\n"
            "x_latency_seconds_bucket{le=\"0.1\"} 2\n"
            "x_latency_seconds_bucket{le=\"0.5\"} 4\n"
            "x_latency_seconds_bucket{le=\"1\"} 6\n"
            "x_latency_seconds_bucket{le=\"+Inf\"} 8\n"
            "x_latency_seconds_sum 104.65\n"
            "x_latency_seconds_count 8\n");
}

TEST(MetricsRegistryTest, HistogramWithLabelsPutsLeLast) {
  MetricsRegistry r;
  HistogramFamily& h = r.AddHistogram("x_restore_seconds", "R.", {"tier"}, {1});
  h.With({"disk"}).Observe(0.5);
  h.With({"host"}).Observe(3);
  const std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("x_restore_seconds_bucket{tier=\"disk\",le=\"1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("x_restore_seconds_bucket{tier=\"host\",le=\"1\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("x_restore_seconds_bucket{tier=\"host\",le=\"+Inf\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("x_restore_seconds_count{tier=\"disk\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("x_restore_seconds_sum{tier=\"host\"} 3\n"));
}

TEST(MetricsRegistryTest, SnapshotCountEqualsInfBucket) {
  std::vector<double> bounds = {1, 2};
  Histogram h(&bounds);
  h.Observe(-1);  // below every bound: the first bucket
  h.Observe(1.5);
  h.Observe(9);
  const Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(s.count, 3u);
  EXPECT_DOUBLE_EQ(s.sum, 9.5);
}

TEST(MetricsRegistryTest, CardinalityIsCapped) {
  MetricsRegistry r;
  CounterFamily& c = r.AddCounter("x_total", "h", {"id"});
  for (size_t i = 0; i < FamilyBase::kMaxSeriesPerFamily + 50; ++i) {
    c.With({std::to_string(i)}).Increment();
  }
  const std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("x_total{id=\"_overflow\"} 50\n"));
  EXPECT_THAT(text, Not(HasSubstr("id=\"1020\"")));
  // A label set seen before the cap keeps its own series.
  c.With({"3"}).Increment();
  EXPECT_THAT(r.Render(), HasSubstr("x_total{id=\"3\"} 2\n"));
}

TEST(MetricsRegistryTest, SeriesReferencesAreStable) {
  MetricsRegistry r;
  CounterFamily& c = r.AddCounter("x_total", "h", {"k"});
  Counter& first = c.With({"a"});
  for (int i = 0; i < 100; ++i) c.With({std::to_string(i)});
  EXPECT_EQ(&first, &c.With({"a"}));
}

TEST(MetricsRegistryTest, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry r;
  CounterFamily& c = r.AddCounter("x_total", "h");
  HistogramFamily& h = r.AddHistogram("x_seconds", "h", {}, {0.5});
  constexpr int kThreads = 4, kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        c.Get().Increment();
        h.Get().Observe(i % 2 == 0 ? 0.25 : 1.0);
      }
    });
  }
  // Scrapes while writers run: every one must be internally consistent.
  for (int i = 0; i < 50; ++i) {
    const Histogram::Snapshot s = h.Get().Read();
    EXPECT_EQ(s.cumulative.back(), s.count);
    EXPECT_LE(s.cumulative[0], s.count);
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.Get().value(), kThreads * kPerThread);
  const Histogram::Snapshot s = h.Get().Read();
  EXPECT_EQ(s.count, static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(s.cumulative[0], static_cast<uint64_t>(kThreads * kPerThread / 2));
  EXPECT_DOUBLE_EQ(s.sum, kThreads * kPerThread / 2 * 1.25);
}

TEST(MetricsRegistryDeathTest, DeclarationErrorsAreProgrammingErrors) {
  MetricsRegistry r;
  r.AddCounter("x_total", "h");
  EXPECT_DEATH(r.AddCounter("x_total", "again"), "check failed");
  EXPECT_DEATH(r.AddGauge("bad-name", "h"), "check failed");
  EXPECT_DEATH(r.AddGauge("x_g", "h", {"__reserved"}), "check failed");
  EXPECT_DEATH(r.AddHistogram("x_h", "h", {"le"}, {1}), "check failed");
  EXPECT_DEATH(r.AddHistogram("x_h", "h", {}, {2, 1}), "check failed");
  EXPECT_DEATH(r.AddHistogram("x_h", "h", {}, {}), "check failed");
  CounterFamily& c = r.AddCounter("y_total", "h", {"a"});
  EXPECT_DEATH(c.With({"1", "2"}), "check failed");
}

}  // namespace
}  // namespace xlstmd::base
