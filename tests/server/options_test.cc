// xlstmd options: every flag, its environment twin, precedence (flag > env > default),
// durations, renamed flags and the one-line errors for bad values (FlagSet itself:
// tests/core/flags_test.cc).
#include "server/options.h"

#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::server {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using xlstmd::testing::StatusIs;

struct ParseResult {
  base::ParseOutcome outcome;
  ServerOptions options;
  std::string out;
  std::string err;
};

ParseResult Parse(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  args.insert(args.begin(), "xlstmd");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  base::EnvLookup lookup = [env](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  ParseResult r;
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  r.outcome = ParseServerOptions(static_cast<int>(argv.size()), argv.data(), lookup, &r.options);
  r.err = ::testing::internal::GetCapturedStderr();
  r.out = ::testing::internal::GetCapturedStdout();
  return r;
}

TEST(ServerOptionsTest, DefaultsMatchTheDocumentedValues) {
  const ParseResult r = Parse({});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  const ServerOptions& o = r.options;
  EXPECT_EQ(o.model_dir, "");
  EXPECT_EQ(o.tokenizer_file, "");
  EXPECT_EQ(o.listen, "0.0.0.0:50051");
  EXPECT_EQ(o.threads, 0);
  EXPECT_EQ(o.weight_dtype, "auto");
  EXPECT_EQ(o.lm_head_dtype, "auto");
  EXPECT_EQ(o.cuda_math, "exact");
  EXPECT_EQ(o.backend, "auto");
  // Sizes by backend (engine_sizing_test.cc): --slots auto, the others 0.
  EXPECT_EQ(o.slots_text, "auto");
  EXPECT_EQ(o.slots, 0);
  EXPECT_EQ(o.max_batch, 0);
  EXPECT_EQ(o.prefill_budget, 0);
  EXPECT_EQ(o.prefill_piece, 0);
  EXPECT_EQ(o.queue_depth, 256);
  EXPECT_EQ(o.max_prompt_tokens, 8192);
  EXPECT_EQ(o.max_new_tokens, 16384);
  EXPECT_EQ(o.default_max_tokens, 512);
  EXPECT_EQ(o.max_sessions, 10000);
  EXPECT_EQ(o.idle_ttl_s, 0);
  EXPECT_EQ(o.max_turn_s, 600);
  EXPECT_EQ(o.grace_period_s, 30);
  EXPECT_EQ(o.api_keys_file, "");
  EXPECT_EQ(o.max_message_bytes, 4 << 20);
  EXPECT_EQ(o.max_streams_per_connection, 100);
  EXPECT_EQ(o.grpc_memory_mb, 1024);
  EXPECT_EQ(o.max_connection_idle_s, 600);
  EXPECT_EQ(o.max_connection_age_s, 0);
  EXPECT_EQ(o.stream_buffer, 64);
  EXPECT_EQ(o.log_level, "info");
  EXPECT_EQ(o.log_format, "text");
  EXPECT_FALSE(o.log_prompts);
  EXPECT_EQ(o.http_listen, "");  // off: no fixed port for daemons sharing a host to fight over
  EXPECT_EQ(o.state_dir, "");
  EXPECT_EQ(o.durability, "none");  // no state dir: nothing to be durable on
  EXPECT_EQ(o.host_state_bytes, int64_t{4} << 30);
  EXPECT_EQ(o.disk_state_bytes, 0);
  EXPECT_EQ(o.io_threads, 2);
  EXPECT_EQ(o.flush_timeout_s, 60);
  EXPECT_EQ(r.err, "");
  const core::EngineOptions e = o.ToEngineOptions();
  EXPECT_EQ(e.state_dir, "");
  EXPECT_EQ(e.durability, core::EngineOptions::Durability::kNone);
  EXPECT_EQ(e.host_state_bytes, int64_t{4} << 30);
  EXPECT_EQ(e.pinned_state_bytes, int64_t{4} << 30);
  EXPECT_EQ(e.disk_state_bytes, 0);
  EXPECT_EQ(e.io_threads, 2);

  const ServerOptions d = DefaultServerOptions();
  EXPECT_EQ(d.listen, o.listen);
  EXPECT_EQ(d.slots, o.slots);
  EXPECT_EQ(d.weight_dtype, o.weight_dtype);
}

TEST(ServerOptionsTest, EveryFlagIsParsed) {
  const ParseResult r = Parse({"--model",
                               "/m",
                               "--tokenizer=/t.json",
                               "--listen",
                               "127.0.0.1:0",
                               "--threads",
                               "3",
                               "--weight-dtype",
                               "f32",
                               "--lm-head-dtype",
                               "bf16",
                               "--cuda-math",
                               "bf16",
                               "--backend",
                               "cpu",
                               "--slots",
                               "8",
                               "--max-batch",
                               "4",
                               "--prefill-budget",
                               "256",
                               "--prefill-piece",
                               "64",
                               "--queue-depth",
                               "9",
                               "--max-prompt-tokens",
                               "100",
                               "--max-tokens-limit",
                               "50",
                               "--default-max-tokens",
                               "20",
                               "--max-sessions",
                               "7",
                               "--idle-ttl",
                               "1m",
                               "--max-turn-time",
                               "5s",
                               "--stalled-stream-timeout",
                               "12s",
                               "--grace-period",
                               "2s",
                               "--api-keys-file",
                               "/keys",
                               "--max-streams-per-connection",
                               "7",
                               "--grpc-memory-mb",
                               "64",
                               "--max-connection-idle",
                               "30s",
                               "--max-connection-age",
                               "1h",
                               "--max-message-bytes",
                               "65536",
                               "--stream-buffer",
                               "2",
                               "--log-level",
                               "debug",
                               "--http-listen",
                               "127.0.0.1:0",
                               "--log-format",
                               "json",
                               "--log-prompts"});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  const ServerOptions& o = r.options;
  EXPECT_EQ(o.model_dir, "/m");
  EXPECT_EQ(o.tokenizer_file, "/t.json");
  EXPECT_EQ(o.listen, "127.0.0.1:0");
  EXPECT_EQ(o.threads, 3);
  EXPECT_EQ(o.weight_dtype, "f32");
  EXPECT_EQ(o.lm_head_dtype, "bf16");
  EXPECT_EQ(o.cuda_math, "bf16");
  EXPECT_EQ(o.backend, "cpu");
  EXPECT_EQ(o.api_keys_file, "/keys");
  EXPECT_EQ(o.grace_period_s, 2);
  EXPECT_EQ(o.max_message_bytes, 65536);
  EXPECT_EQ(o.max_streams_per_connection, 7);
  EXPECT_EQ(o.grpc_memory_mb, 64);
  EXPECT_EQ(o.max_connection_idle_s, 30);
  EXPECT_EQ(o.max_connection_age_s, 3600);
  EXPECT_EQ(o.log_level, "debug");
  EXPECT_EQ(o.http_listen, "127.0.0.1:0");
  EXPECT_EQ(o.log_format, "json");
  EXPECT_TRUE(o.log_prompts);

  const core::EngineOptions e = o.ToEngineOptions();
  EXPECT_EQ(e.resident_slots, 8);
  EXPECT_EQ(e.max_batch, 4);
  EXPECT_EQ(e.prefill_token_budget, 256);
  EXPECT_EQ(e.prefill_piece, 64);
  EXPECT_EQ(e.queue_depth, 9);
  EXPECT_EQ(e.max_prompt_tokens, 100);
  EXPECT_EQ(e.sampling.max_tokens, 50);
  EXPECT_EQ(e.sampling.default_max_tokens, 20);
  EXPECT_EQ(e.max_sessions, 7);
  EXPECT_EQ(e.idle_ttl_ms, 60000);
  EXPECT_EQ(e.max_turn_ms, 5000);
  EXPECT_EQ(e.stalled_stream_ms, 12000);
  EXPECT_EQ(e.stream_buffer_events, 2);
}

TEST(ServerOptionsTest, StateTierFlagsMapIntoEngineOptions) {
  const ParseResult r = Parse({"--state-dir", "/var/lib/xlstmd", "--durability", "sync",
                               "--host-state-bytes", "1048576", "--disk-state-bytes", "1073741824",
                               "--io-threads", "5", "--flush-timeout", "7s",
                               "--keep-turn-checkpoints", "4", "--pinned-state-bytes", "0"});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  const ServerOptions& o = r.options;
  EXPECT_EQ(o.state_dir, "/var/lib/xlstmd");
  EXPECT_EQ(o.durability, "sync");
  EXPECT_EQ(o.flush_timeout_s, 7);
  const core::EngineOptions e = o.ToEngineOptions();
  EXPECT_EQ(e.state_dir, "/var/lib/xlstmd");
  EXPECT_EQ(e.durability, core::EngineOptions::Durability::kSync);
  EXPECT_EQ(e.host_state_bytes, 1048576);
  EXPECT_EQ(e.disk_state_bytes, 1073741824);
  EXPECT_EQ(e.pinned_state_bytes, 0);
  EXPECT_EQ(e.io_threads, 5);
  EXPECT_EQ(e.keep_turn_checkpoints, 4);
}

TEST(ServerOptionsTest, DurabilityDefaultsToAsyncWithAStateDirAndNoneWithout) {
  ParseResult r = Parse({"--state-dir", "/s"});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.durability, "async");
  EXPECT_EQ(r.options.ToEngineOptions().durability, core::EngineOptions::Durability::kAsync);

  r = Parse({}, {{"XLSTMD_STATE_DIR", "/s"}});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.durability, "async") << "the environment's state dir counts too";

  r = Parse({"--state-dir", "/s", "--durability", "none"});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.ToEngineOptions().durability, core::EngineOptions::Durability::kNone);

  r = Parse({"--durability", "none"});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.durability, "none");

  // DefaultServerOptions leaves the choice open; ToEngineOptions applies the same rule.
  ServerOptions d = DefaultServerOptions();
  EXPECT_EQ(d.ToEngineOptions().durability, core::EngineOptions::Durability::kNone);
  d.state_dir = "/s";
  EXPECT_EQ(d.ToEngineOptions().durability, core::EngineOptions::Durability::kAsync);
}

TEST(ServerOptionsTest, DurabilityWithoutAStateDirIsAClearError) {
  for (const char* mode : {"async", "sync"}) {
    ParseResult r = Parse({"--durability", mode});
    EXPECT_EQ(r.outcome, base::ParseOutcome::kError) << mode;
    EXPECT_THAT(r.err, StartsWith("xlstmd: error: --durability "));
    EXPECT_THAT(r.err, HasSubstr("needs --state-dir"));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;

    r = Parse({}, {{"XLSTMD_DURABILITY", mode}});
    EXPECT_EQ(r.outcome, base::ParseOutcome::kError) << mode;
    EXPECT_THAT(r.err, HasSubstr("needs --state-dir"));
  }
  const ParseResult r = Parse({"--disk-state-bytes", "100"});
  EXPECT_EQ(r.outcome, base::ParseOutcome::kError);
  EXPECT_THAT(r.err, HasSubstr("--disk-state-bytes needs --state-dir"));
}

TEST(ServerOptionsTest, EnvironmentTwinsApplyWhenNoFlagIsGiven) {
  const ParseResult r = Parse({}, {{"XLSTMD_SLOTS", "12"},
                                   {"XLSTMD_MODEL", "/env/model"},
                                   {"XLSTMD_WEIGHT_DTYPE", "q4"},
                                   {"XLSTMD_LM_HEAD_DTYPE", "int8"},
                                   {"XLSTMD_MAX_PROMPT_TOKENS", "77"},
                                   {"XLSTMD_GRACE_PERIOD", "0"}});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.slots, 12);
  EXPECT_EQ(r.options.model_dir, "/env/model");
  EXPECT_EQ(r.options.weight_dtype, "q4");
  EXPECT_EQ(r.options.lm_head_dtype, "int8");
  EXPECT_EQ(r.options.max_prompt_tokens, 77);
  EXPECT_EQ(r.options.grace_period_s, 0);
}

// A misspelled variable would silently do nothing: it is listed (main logs a warning), while
// flag twins and the variables other programs read are not.
TEST(ServerOptionsTest, UnknownEnvironmentVariablesAreListed) {
  ::setenv("XLSTMD_MAX_SESIONS", "5", 1);
  ::setenv("XLSTMD_QUEUE_DEPTH", "3", 1);
  ::setenv("XLSTMD_GRACE_PERIOD_S", "3", 1);  // an old name
  ::setenv("XLSTMD_API_KEY", "k", 1);
  const ParseResult r = Parse({});
  for (const char* v : {"XLSTMD_MAX_SESIONS", "XLSTMD_QUEUE_DEPTH", "XLSTMD_GRACE_PERIOD_S",
                        "XLSTMD_API_KEY"}) {
    ::unsetenv(v);
  }
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_THAT(r.options.unknown_env, ::testing::Contains("XLSTMD_MAX_SESIONS"));
  for (const char* known : {"XLSTMD_QUEUE_DEPTH", "XLSTMD_GRACE_PERIOD_S", "XLSTMD_API_KEY",
                            "XLSTMD_CPU_ISA"}) {
    EXPECT_THAT(r.options.unknown_env, ::testing::Not(::testing::Contains(known))) << known;
  }
}

TEST(ServerOptionsTest, FlagBeatsEnvironmentBeatsDefault) {
  const ParseResult r =
      Parse({"--slots", "5"}, {{"XLSTMD_SLOTS", "12"}, {"XLSTMD_QUEUE_DEPTH", "3"}});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.slots, 5);        // flag
  EXPECT_EQ(r.options.queue_depth, 3);  // env
  EXPECT_EQ(r.options.max_batch, 0);    // default (by backend)
}

TEST(ServerOptionsTest, ShadowedOrEmptyEnvironmentValuesAreNotRead) {
  // A bad variable does not matter when the flag overrides it, and empty means unset.
  const ParseResult r = Parse({"--slots", "5"}, {{"XLSTMD_SLOTS", "lots"}, {"XLSTMD_LISTEN", ""}});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.slots, 5);
  EXPECT_EQ(r.options.listen, "0.0.0.0:50051");
}

TEST(ServerOptionsTest, BadEnvironmentValueIsOneLineNamingTheVariable) {
  for (const auto& [var, value] :
       std::vector<std::pair<std::string, std::string>>{{"XLSTMD_SLOTS", "lots"},
                                                        {"XLSTMD_SLOTS", "0"},
                                                        {"XLSTMD_WEIGHT_DTYPE", "f16"},
                                                        {"XLSTMD_LISTEN", "nowhere"},
                                                        {"XLSTMD_LOG_LEVEL", "loud"},
                                                        {"XLSTMD_HTTP_LISTEN", "9090"},
                                                        {"XLSTMD_LOG_FORMAT", "xml"},
                                                        {"XLSTMD_LOG_PROMPTS", "yes"}}) {
    const ParseResult r = Parse({}, {{var, value}});
    EXPECT_EQ(r.outcome, base::ParseOutcome::kError) << var;
    EXPECT_THAT(r.err, StartsWith("xlstmd: error: ")) << var;
    EXPECT_THAT(r.err, HasSubstr(var == "XLSTMD_LISTEN"        ? "--listen"
                                 : var == "XLSTMD_HTTP_LISTEN" ? "--http-listen"
                                                               : var));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST(ServerOptionsTest, BadFlagsAreOneLineErrors) {
  const std::vector<std::vector<std::string>> cases = {
      {"--slots", "abc"},
      {"--slots", "-1"},
      {"--max-batch", "-1"},
      {"--slots", "0"},
      {"--slots", "2000000"},
      {"--weight-dtype", "f64"},
      {"--cuda-math", "tf32"},  // never TF32, and never silently
      {"--listen", "50051"},
      {"--listen", "host:99999"},
      {"--listen", "::1:80"},
      {"--listen", "host:"},
      {"--http-listen", "9090"},
      {"--http-listen", "[::1:9090"},
      {"--log-format", "xml"},
      {"--log-prompts=maybe"},
      {"--no-such-flag"},
      {"--slots"},
      {"positional"},
      {"--default-max-tokens", "100", "--max-tokens-limit", "10"},
      {"--prefill-piece", "1024", "--prefill-budget", "512"},
      {"--durability", "always"},
      {"--tls-cert", "/c.pem"},
      {"--tls-key", "/k.pem"},
      {"--tls-client-ca", "/ca.pem"},
      {"--host-state-bytes", "-1"},
      {"--host-state-bytes", "4G"},  // plain bytes only
      {"--pinned-state-bytes", "-1"},
      {"--disk-state-bytes", "-5", "--state-dir", "/s"},
      {"--io-threads", "0"},
      {"--flush-timeout", "-1s"},
      {"--flush-timeout", "1500ms"},  // whole seconds only
      {"--flush-timeout", "2 s"},
      {"--flush-timeout", "2d"},
      {"--idle-ttl-s", "10m"},  // the old name counts bare seconds
      {"--redis-timeout", "5ms"},  // below its 10ms minimum
      {"--grace-period-s", "1", "--grace-period", "2s"},
  };
  for (const auto& args : cases) {
    const ParseResult r = Parse(args);
    EXPECT_EQ(r.outcome, base::ParseOutcome::kError) << args[0];
    EXPECT_THAT(r.err, StartsWith("xlstmd: error: ")) << args[0];
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST(ServerOptionsTest, HelpListsEveryFlagWithItsEnvTwinAndDefault) {
  const ParseResult r = Parse({"--help"});
  EXPECT_EQ(r.outcome, base::ParseOutcome::kHelp);
  EXPECT_THAT(r.out, StartsWith("usage: xlstmd [flags]"));
  for (const char* flag : {"model",
                           "tokenizer",
                           "listen",
                           "threads",
                           "weight-dtype",
                           "lm-head-dtype",
                           "cuda-math",
                           "slots",
                           "max-batch",
                           "prefill-budget",
                           "prefill-piece",
                           "queue-depth",
                           "max-prompt-tokens",
                           "max-tokens-limit",
                           "stalled-stream-timeout",
                           "default-max-tokens",
                           "max-sessions",
                           "idle-ttl",
                           "max-turn-time",
                           "grace-period",
                           "api-keys-file",
                           "max-message-bytes",
                           "max-streams-per-connection",
                           "grpc-memory-mb",
                           "max-connection-idle",
                           "max-connection-age",
                           "web-heartbeat",
                           "redis-timeout",
                           "stream-buffer",
                           "state-dir",
                           "durability",
                           "host-state-bytes",
                           "pinned-state-bytes",
                           "disk-state-bytes",
                           "io-threads",
                           "flush-timeout",
                           "log-level",
                           "log-format",
                           "log-prompts",
                           "http-listen"}) {
    EXPECT_THAT(r.out, HasSubstr(std::string("--") + flag + " ")) << flag;
    std::string env = std::string("XLSTMD_") + flag;
    for (char& c : env) c = c == '-' ? '_' : static_cast<char>(std::toupper(c));
    EXPECT_THAT(r.out, HasSubstr("env " + env)) << flag;
  }
  EXPECT_THAT(r.out, HasSubstr("default 0.0.0.0:50051"));
  EXPECT_THAT(r.out, HasSubstr("--listen HOST:PORT"));
  // Durations show their unit; old names stay out of the usage.
  EXPECT_THAT(r.out, HasSubstr("--max-turn-time DURATION"));
  EXPECT_THAT(r.out, HasSubstr("(default 10m; env XLSTMD_MAX_TURN_TIME)"));
  EXPECT_THAT(r.out, HasSubstr("(default 2s; env XLSTMD_REDIS_TIMEOUT)"));
  for (const char* old : {"--idle-ttl-s", "--max-new-tokens", "--api-keys ", "--redis-timeout-ms",
                          "--grace-period-s", "--max-turn-s"}) {
    EXPECT_THAT(r.out, ::testing::Not(HasSubstr(old))) << old;
  }
}

TEST(ServerOptionsTest, DurationsTakeUnits) {
  const ParseResult r = Parse({"--idle-ttl", "1h30m", "--max-turn-time", "90s", "--redis-timeout",
                               "1.5s", "--grace-period", "0", "--flush-timeout", "2m"});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.idle_ttl_s, 5400);
  EXPECT_EQ(r.options.max_turn_s, 90);
  EXPECT_EQ(r.options.redis_timeout_ms, 1500);
  EXPECT_EQ(r.options.grace_period_s, 0);
  EXPECT_EQ(r.options.flush_timeout_s, 120);
  EXPECT_EQ(r.err, "");
}

TEST(ServerOptionsTest, BareNumberDurationIsSecondsWithAWarning) {
  const ParseResult r = Parse({"--max-turn-time", "45"});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.max_turn_s, 45);
  EXPECT_THAT(r.err, HasSubstr("xlstmd: warning: --max-turn-time: a bare number (45) is read as "
                               "seconds"));
  EXPECT_THAT(r.err, HasSubstr("write 45s"));
}

TEST(ServerOptionsTest, OldFlagNamesStillWorkForOneReleaseWithAWarning) {
  const ParseResult r =
      Parse({"--idle-ttl-s", "60", "--max-turn-s", "5", "--stalled-stream-s", "12",
             "--grace-period-s", "2", "--flush-timeout-s", "7", "--redis-timeout-ms", "300",
             "--web-heartbeat-s", "3", "--max-connection-idle-s", "30", "--max-connection-age-s",
             "40", "--api-keys", "/keys", "--max-new-tokens", "999"});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  const ServerOptions& o = r.options;
  EXPECT_EQ(o.idle_ttl_s, 60);
  EXPECT_EQ(o.max_turn_s, 5);
  EXPECT_EQ(o.stalled_stream_s, 12);
  EXPECT_EQ(o.grace_period_s, 2);
  EXPECT_EQ(o.flush_timeout_s, 7);
  EXPECT_EQ(o.redis_timeout_ms, 300);
  EXPECT_EQ(o.web_heartbeat_s, 3);
  EXPECT_EQ(o.max_connection_idle_s, 30);
  EXPECT_EQ(o.max_connection_age_s, 40);
  EXPECT_EQ(o.api_keys_file, "/keys");
  EXPECT_EQ(o.max_new_tokens, 999);
  EXPECT_THAT(r.err, HasSubstr("xlstmd: warning: --idle-ttl-s is renamed --idle-ttl; the old name "
                               "will be removed in the next release"));
  EXPECT_THAT(r.err, HasSubstr("--api-keys is renamed --api-keys-file"));
  EXPECT_THAT(r.err, HasSubstr("--max-new-tokens is renamed --max-tokens-limit"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 11) << r.err;
}

TEST(ServerOptionsTest, OldEnvironmentNamesStillWorkButTheNewOneWins) {
  ParseResult r = Parse({}, {{"XLSTMD_IDLE_TTL_S", "60"}, {"XLSTMD_API_KEYS", "/k"}});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.idle_ttl_s, 60);
  EXPECT_EQ(r.options.api_keys_file, "/k");
  EXPECT_THAT(r.err, HasSubstr("environment variable XLSTMD_IDLE_TTL_S is renamed "
                               "XLSTMD_IDLE_TTL"));

  r = Parse({}, {{"XLSTMD_IDLE_TTL_S", "60"}, {"XLSTMD_IDLE_TTL", "2m"}});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.idle_ttl_s, 120);
  EXPECT_EQ(r.err, "") << "a shadowed old variable is not read";

  r = Parse({"--idle-ttl", "5s"}, {{"XLSTMD_IDLE_TTL_S", "junk"}});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.idle_ttl_s, 5);
}

TEST(ParseHostPortTest, AcceptsHostsAndBracketedIpv6) {
  absl::StatusOr<HostPort> hp = ParseHostPort("0.0.0.0:50051");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "0.0.0.0");
  EXPECT_EQ(hp->port, 50051);
  hp = ParseHostPort("[::1]:0");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "[::1]");
  EXPECT_EQ(hp->port, 0);
  hp = ParseHostPort("localhost:65535");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "localhost");
}

TEST(ParseHostPortTest, RejectsMalformedAddresses) {
  for (const char* bad : {"", ":80", "host", "host:", "host:x", "host:-1", "host:65536", "host:+80",
                          "::1:80", "[]:80", "host:123456"}) {
    EXPECT_THAT(ParseHostPort(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

TEST(ServerOptionsTest, WebFlags) {
  ParseResult r = Parse({});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk);
  EXPECT_EQ(r.options.web_listen, "");  // off by default
  EXPECT_EQ(r.options.web_threads, 256);
  EXPECT_EQ(r.options.web_max_streams, 128);
  EXPECT_EQ(r.options.web_heartbeat_s, 15);
  EXPECT_FALSE(r.options.no_web_ui);
  r = Parse({"--web-listen", "127.0.0.1:0", "--web-cors-origins",
             "https://a.example.com, http://localhost:3000", "--no-web-ui"},
            {{"XLSTMD_WEB_MAX_STREAMS", "7"}});
  ASSERT_EQ(r.outcome, base::ParseOutcome::kOk) << r.err;
  EXPECT_EQ(r.options.web_max_streams, 7);
  EXPECT_TRUE(r.options.no_web_ui);
  for (const char* bad : {"*", "null", "a.example.com", "https://a.example.com/"}) {
    r = Parse({"--web-cors-origins", bad});
    EXPECT_EQ(r.outcome, base::ParseOutcome::kError) << bad;
    EXPECT_THAT(r.err, HasSubstr("--web-cors-origins")) << bad;
  }
  r = Parse({"--web-listen", "8080"});
  EXPECT_EQ(r.outcome, base::ParseOutcome::kError);
  EXPECT_THAT(r.err, StartsWith("xlstmd: error: --web-listen: "));
  r = Parse({"--web-listen", "0.0.0.0:8080", "--http-listen", "0.0.0.0:8080"});
  EXPECT_EQ(r.outcome, base::ParseOutcome::kError);
  EXPECT_THAT(r.err, HasSubstr("must be different"));
}

}  // namespace
}  // namespace xlstmd::server
