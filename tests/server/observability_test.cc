// ServerMetrics (what each observation does to the exposition) and the logging helpers
// (structured lines, JSON validity, session id hashing).
#include <chrono>
#include <memory>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/logging.h"
#include "server/metrics.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace xlstmd::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

core::TurnEvent Delta(std::chrono::steady_clock::time_point at, int32_t id) {
  core::TurnEvent e;
  e.kind = core::TurnEvent::Kind::kDelta;
  e.token_ids = {id};
  e.pushed_at = at;
  return e;
}

TEST(ServerMetricsTest, TurnEventsFeedTokenAndLatencyMetrics) {
  ServerMetrics m;
  ServerMetrics::TurnTracker tracker;
  const auto t0 = std::chrono::steady_clock::now();
  core::TurnEvent started;
  started.kind = core::TurnEvent::Kind::kStarted;
  started.input_ids = {1, 2, 3};
  m.OnTurnEvent(started, &tracker);
  for (int i = 0; i < 4; ++i)
    m.OnTurnEvent(Delta(t0 + std::chrono::milliseconds(2 * i), i), &tracker);
  core::TurnEvent fin;
  fin.kind = core::TurnEvent::Kind::kFinished;
  fin.finish_reason = core::FinishReason::kMaxTokens;
  fin.usage.prompt_tokens = 3;
  fin.usage.completion_tokens = 4;
  fin.usage.history_tokens = 40;
  fin.usage.first_token_ms = 20;
  fin.usage.total_ms = 30;
  m.OnTurnEvent(fin, &tracker);

  const std::string text = m.Render(nullptr);
  EXPECT_THAT(text, HasSubstr("xlstmd_generated_tokens_total 4\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_prompt_tokens_total 3\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_prefill_tokens_avoided_total 40\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_turns_total{finish_reason=\"max_tokens\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_turns_total{finish_reason=\"stop_token\"} 0\n"));
  // Three gaps of 2 ms between four tokens.
  EXPECT_THAT(text, HasSubstr("xlstmd_inter_token_latency_seconds_count 3\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_inter_token_latency_seconds_bucket{le=\"0.0025\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_time_to_first_token_seconds_bucket{le=\"0.025\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_time_to_first_token_seconds_sum 0.02\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_turn_duration_seconds_count 1\n"));
}

TEST(ServerMetricsTest, RpcOutcomesHaveBoundedLabels) {
  ServerMetrics m;
  m.OnRpcDone("/xlstmd.v1.ChatService/Chat", 0);
  m.OnRpcDone("/xlstmd.v1.ChatService/Chat", 5);
  m.OnRpcDone("/xlstmd.v1.ChatService/GetSession", 5);
  m.OnRpcDone("/made.up.Service/Method", 12);
  m.OnRpcDone("/xlstmd.v1.ChatService/Chat", 99);
  const std::string text = m.Render(nullptr);
  EXPECT_THAT(text, HasSubstr("xlstmd_requests_total{method=\"xlstmd.v1.ChatService/Chat\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_requests_total{method=\"other\"} 1\n"));
  // Every service method is listed from the start, at 0.
  EXPECT_THAT(text,
              HasSubstr("xlstmd_requests_total{method=\"xlstmd.v1.ChatService/ForkSession\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_requests_failed_total{method=\"xlstmd.v1.ChatService/"
                              "Chat\",code=\"NOT_FOUND\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_requests_failed_total{method=\"other\",code="
                              "\"UNIMPLEMENTED\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("code=\"UNKNOWN\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("made.up")));
}

TEST(ServerMetricsTest, EngineHooksAndHttpRequests) {
  ServerMetrics m;
  core::EngineObserver* o = m.engine_observer();
  o->OnDecodeStep(3, 0.004);
  o->OnDecodeStep(1, 0.002);
  o->OnRestore(core::StateTier::kDisk, 0.01);
  o->OnRestore(core::StateTier::kResident, 0.00001);
  o->OnSpill(core::StateTier::kHost);
  o->OnEviction(core::EvictionReason::kSlotPressure);
  o->OnEviction(core::EvictionReason::kIdleTtl);
  m.OnHttpRequest("/metrics", 200);
  m.OnHttpRequest("/whatever/random", 404);
  const std::string text = m.Render(nullptr);
  EXPECT_THAT(text, HasSubstr("xlstmd_decode_step_duration_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_decode_batch_size_bucket{le=\"2\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_decode_batch_size_sum 4\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_state_restores_total{tier=\"disk\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_state_restores_total{tier=\"resident\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_state_restore_duration_seconds_count{tier=\"disk\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_state_spills_total{tier=\"host\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_evictions_total{reason=\"slot_pressure\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_evictions_total{reason=\"idle_ttl\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_evictions_total{reason=\"host_budget\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_http_requests_total{path=\"/metrics\",status=\"200\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_http_requests_total{path=\"other\",status=\"404\"} 1\n"));
}

TEST(ServerMetricsTest, BuildAndModelInfo) {
  ServerMetrics m;
  EXPECT_THAT(m.Render(nullptr), HasSubstr("xlstmd_build_info{version=\""));
  EXPECT_THAT(m.Render(nullptr), Not(HasSubstr("xlstmd_model_info")));  // not loaded yet
  ModelInfoLabels info{"default", "xlstm", "256", "4", "4", "257", "bf16", "cpu", "bf16"};
  m.SetModelInfo(info, 133376);
  const std::string text = m.Render(nullptr);
  EXPECT_THAT(text, HasSubstr("xlstmd_model_info{model=\"default\",family=\"xlstm\","
                              "embedding_dim=\"256\",num_blocks=\"4\",num_heads=\"4\","
                              "vocab_size=\"257\",weight_dtype=\"bf16\",backend=\"cpu\",lm_head_dtype=\"bf16\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("xlstmd_state_bytes_per_session 133376\n"));
}

TEST(ServerMetricsTest, EveryMetricIsPrefixedAndDocumentedByHelp) {
  ServerMetrics m;
  std::istringstream in(m.Render(nullptr));
  std::string line, last_help;
  int families = 0;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) {
      ++families;
      EXPECT_THAT(line, ::testing::StartsWith("# HELP xlstmd_"));
      EXPECT_GT(line.size(), std::string("# HELP xlstmd_x ").size() + 10) << line;
    } else if (line[0] != '#') {
      EXPECT_THAT(line, ::testing::StartsWith("xlstmd_"));
    }
  }
  EXPECT_GT(families, 20);
}

// ---------------- logging ----------------

TEST(LoggingTest, JsonQuoteEscapesEverythingJsonNeeds) {
  const std::string nasty = "q\"b\\n\nt\tc\x01\x1f del\x7f bad\xff end";
  const std::string quoted = JsonQuote(nasty);
  const nlohmann::json parsed = nlohmann::json::parse(quoted);  // throws if invalid
  EXPECT_EQ(parsed.get<std::string>(), "q\"b\\n\nt\tc\x01\x1f del\x7f bad\xEF\xBF\xBD end");
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
}

TEST(LoggingTest, TextValuesAreQuotedOnlyWhenNeededAndNeverSpanLines) {
  LogLine line("turn");
  line.Add("session", "3f9c1e6d2b7a4c58")
      .Add("request_id", "a b\"c\nd=e")
      .Add("empty", "")
      .Add("n", uint64_t{12})
      .AddMs("ttft_ms", 12.345)
      .Add("ok", true);
  EXPECT_EQ(line.Text(),
            "turn session=3f9c1e6d2b7a4c58 request_id=\"a b\\\"c\\nd=e\" empty=\"\" n=12 "
            "ttft_ms=12.3 ok=true");
}

TEST(LoggingTest, JsonMembersFormAnObject) {
  LogLine line("turn");
  line.Add("session", "abc").Add("tokens_in", 5).AddMs("ttft_ms", 1.25).Add("prompt", "hi\n\"x\"");
  const nlohmann::json j = nlohmann::json::parse("{" + line.JsonMembers() + "}");
  EXPECT_EQ(j["msg"], "turn");
  EXPECT_EQ(j["session"], "abc");
  EXPECT_EQ(j["tokens_in"], 5);
  EXPECT_DOUBLE_EQ(j["ttft_ms"].get<double>(), 1.2);  // one decimal (1.25 rounds to even)
  EXPECT_EQ(j["prompt"], "hi\n\"x\"");
}

TEST(LoggingTest, AddMsNeverWritesNonFiniteNumbers) {
  LogLine line("x");
  line.AddMs("a", std::numeric_limits<double>::infinity()).AddMs("b", std::nan(""));
  EXPECT_NO_THROW(nlohmann::json::parse("{" + line.JsonMembers() + "}"));
}

// The JSON formatter on a real spdlog logger: plain and structured lines are both one valid
// JSON object per line.
TEST(LoggingTest, JsonFormatterWritesOneObjectPerLine) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto logger = std::make_shared<spdlog::logger>("json-test", sink);
  logger->set_formatter(NewLogFormatter(LogFormat::kJson));
  logger->set_level(spdlog::level::info);
  const std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  spdlog::info("plain \"quoted\" {} with\nnewline", 42);
  LogLine("turn").Add("session", "abc").Add("code", "OK").Log(spdlog::level::info);
  LogLine("hidden").Log(spdlog::level::debug);  // below the level: nothing
  spdlog::set_default_logger(previous);

  std::istringstream in(out.str());
  std::string line;
  std::vector<nlohmann::json> lines;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 2u) << out.str();
  EXPECT_EQ(lines[0]["level"], "info");
  EXPECT_EQ(lines[0]["msg"], "plain \"quoted\" 42 with\nnewline");
  EXPECT_THAT(lines[0]["ts"].get<std::string>(),
              ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{12}Z"));
  EXPECT_EQ(lines[1]["msg"], "turn");
  EXPECT_EQ(lines[1]["session"], "abc");
  EXPECT_EQ(lines[1]["code"], "OK");
}

TEST(LoggingTest, TextFormatterShowsTheLogfmtLine) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto logger = std::make_shared<spdlog::logger>("text-test", sink);
  logger->set_formatter(NewLogFormatter(LogFormat::kText));
  const std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  LogLine("turn").Add("session", "abc").Add("request_id", "x y").Log(spdlog::level::info);
  spdlog::set_default_logger(previous);
  EXPECT_THAT(out.str(),
              ::testing::MatchesRegex("[0-9T:.-]+ info turn session=abc request_id=\"x y\"\n"));
}

TEST(LoggingTest, LevelsAreNamedAsLogLevelTakesThem) {
  for (LogFormat format : {LogFormat::kText, LogFormat::kJson}) {
    std::ostringstream out;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    auto logger = std::make_shared<spdlog::logger>("level-test", sink);
    logger->set_formatter(NewLogFormatter(format));
    logger->warn("w");
    logger->error("e");
    const std::string text = out.str();
    // --log-level warn: the lines say "warn", never spdlog's "warning".
    EXPECT_THAT(text, HasSubstr(format == LogFormat::kJson ? "\"level\":\"warn\"" : " warn w"));
    EXPECT_THAT(text, HasSubstr(format == LogFormat::kJson ? "\"level\":\"error\"" : " error e"));
    EXPECT_THAT(text, Not(HasSubstr("warning")));
  }
}

TEST(LoggingTest, SessionIdHashIsAStableSha256Prefix) {
  EXPECT_EQ(HashSessionId("abc"), "ba7816bf8f01cfea");  // SHA-256("abc") = ba7816bf8f01cfea...
  EXPECT_EQ(HashSessionId("abc"), HashSessionId("abc"));
  EXPECT_NE(HashSessionId("abc"), HashSessionId("abd"));
  EXPECT_EQ(HashSessionId("").size(), 16u);
}

}  // namespace
}  // namespace xlstmd::server
