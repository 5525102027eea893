#include "server/options.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <utility>

#include "core/model/weight_format.h"
#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace xlstmd::server {
namespace {

constexpr int64_t kI32Max = std::numeric_limits<int32_t>::max();

// Each helper writes the default and registers the flag in one statement, so a name, its
// default and its help can never drift apart.
void Str(base::FlagSet* f, std::string* dst, const char* name, const char* hint, const char* def,
         const char* help) {
  *dst = def;
  f->String(name, dst, help);
  f->SetValueHint(name, hint);
}
void Num(base::FlagSet* f, int64_t* dst, const char* name, int64_t def, int64_t min, int64_t max,
         const char* help) {
  *dst = def;
  f->Int(name, dst, min, max, help);
}
// A duration in whole seconds; `old` is the flag's name from before durations took units
// (it counted bare seconds), kept as a hidden alias for one release.
void Seconds(base::FlagSet* f, int64_t* dst, const char* name, const char* old, int64_t def,
             int64_t min, int64_t max, const char* help) {
  *dst = def;
  f->Duration(name, dst, base::FlagSet::Unit::kSeconds, min, max, help);
  f->Renamed(old, name, "s");
}

}  // namespace

void DeclareServerFlags(ServerOptions* o, base::FlagSet* f, base::EnvLookup env) {
  f->set_program("xlstmd");
  f->EnableEnvTwins(kEnvPrefix, std::move(env));

  Str(f, &o->model_dir, "model", "DIR", "",
      "model directory (config.json + safetensors); default: the bundled demo model "
      "models/demo (trained by tools/train)");
  Str(f, &o->tokenizer_file, "tokenizer", "FILE", "",
      "tokenizer.json to use; default: the model directory's tokenizer.json, else the byte "
      "tokenizer");
  Str(f, &o->backend, "backend", "NAME", "auto", "compute backend: auto, cpu, cuda, cuda:N");
  o->weight_dtype = "auto";
  f->Choice("weight-dtype", &o->weight_dtype, core::WeightDTypeChoices(),
            "storage of the projection matrices: f32, bf16, or quantized at load (int8: a scale "
            "per row; q4: 4-bit, a scale per 32 weights; docs/runtime.md has their quality); auto "
            "= f32 for an all-F32 checkpoint, bf16 otherwise, or as a quantized checkpoint "
            "stores them (as xlstm generate)");
  o->lm_head_dtype = "auto";
  f->Choice("lm-head-dtype", &o->lm_head_dtype, core::WeightDTypeChoices(),
            "storage of the LM head; auto = as --weight-dtype (for a quantized checkpoint: as "
            "stored)");
  o->cuda_math = "exact";
  f->Choice("cuda-math", &o->cuda_math, {"exact", "bf16"},
            "numerics of the CUDA backend's projections: exact = bf16/f32 weights read exactly, "
            "f32 activations and accumulation (meets the golden tolerances); bf16 = bf16 weights "
            "and bf16-rounded activations with f32 accumulation (NX-AI's GPU numerics, faster "
            "prefill, logits drift by up to ~0.2-2.7 on the golden models). Refused with "
            "--backend cpu; with auto on a CPU it computes exactly and warns");
  Num(f, &o->threads, "threads", 0, 0, 1024, "backend worker threads; 0 = one per core");

  Str(f, &o->listen, "listen", "HOST:PORT", "0.0.0.0:50051",
      "gRPC listen address HOST:PORT; port 0 picks a free port");
  Num(f, &o->max_message_bytes, "max-message-bytes", 4 << 20, 1024, kI32Max,
      "largest gRPC request accepted, in bytes (larger ones get RESOURCE_EXHAUSTED)");
  Num(f, &o->max_streams_per_connection, "max-streams-per-connection", 100, 1, kI32Max,
      "calls one gRPC connection may hold open, advertised to clients as HTTP/2 "
      "MAX_CONCURRENT_STREAMS");
  Num(f, &o->max_streams, "max-streams", 10000, 1, kI32Max,
      "streaming calls (Chat, ExportSession, ImportSession, health Watch) open at once over "
      "all connections; beyond: RESOURCE_EXHAUSTED at once");
  Num(f, &o->max_health_watchers, "max-health-watchers", 1000, 1, kI32Max,
      "grpc.health.v1 Watch streams open at once (they also count in --max-streams); "
      "beyond: RESOURCE_EXHAUSTED");
  Num(f, &o->grpc_memory_mb, "grpc-memory-mb", 1024, 16, 1 << 20,
      "memory gRPC may use for connections and buffers (its resource quota); past it, new "
      "calls are refused rather than the process growing");
  Seconds(f, &o->max_connection_idle_s, "max-connection-idle", "max-connection-idle-s", 600, 0,
          int64_t{1} << 30,
      "close a connection with no calls for this long (a GOAWAY; clients reconnect); 0 = "
      "never");
  Seconds(f, &o->max_connection_age_s, "max-connection-age", "max-connection-age-s", 0, 0,
          int64_t{1} << 30,
      "close connections older than this (after a grace as long as --max-turn-time, at "
      "least 30 s, for their calls), so clients spread over new replicas; 0 = never");
  Str(f, &o->api_keys_file, "api-keys-file", "FILE", "",
      "API keys file, one '<tenant> <key>' per line (docs/server.md); clients send one with "
      "xlstm --api-key; unset = no authentication, one anonymous tenant");
  f->Renamed("api-keys", "api-keys-file");

  Str(f, &o->tls_cert, "tls-cert", "FILE", "",
      "PEM certificate chain: serve gRPC and HTTP over TLS (with --tls-key); without TLS, API "
      "keys and conversations travel in clear");
  Str(f, &o->tls_key, "tls-key", "FILE", "", "PEM private key of --tls-cert");
  Str(f, &o->tls_client_ca, "tls-client-ca", "FILE", "",
      "PEM CA bundle: require client certificates it signed (mutual TLS; needs --tls-cert)");
  Str(f, &o->http_listen, "http-listen", "HOST:PORT", "",
      "HTTP address for /metrics (Prometheus), /healthz and /readyz; port 0 picks a free "
      "port; unset = no HTTP listener");
  Str(f, &o->web_listen, "web-listen", "HOST:PORT", "",
      "web address for the OpenAI-compatible API, the session API over SSE and the chat page "
      "(docs/web.md); port 0 picks a free port; unset = off");
  Num(f, &o->web_threads, "web-threads", 256, 2, 1 << 16,
      "web connections open at once, one thread each; one more is answered 503 at once");
  Num(f, &o->web_max_streams, "web-max-streams", 128, 1, 1 << 16,
      "streamed web replies open at once; one more is answered 429 with Retry-After at once");
  Num(f, &o->web_max_body_bytes, "web-max-body-bytes", 4 << 20, 1024, kI32Max,
      "largest web request body, in bytes (larger: 413)");
  Str(f, &o->web_cors_origins, "web-cors-origins", "ORIGINS", "",
      "comma-separated origins (https://app.example.com) whose pages may call the web API; "
      "unset = same-origin only; '*' is refused");
  Seconds(f, &o->web_heartbeat_s, "web-heartbeat", "web-heartbeat-s", 15, 1, 3600,
          "time between ': ping' comments on an idle SSE stream (keeps proxies from closing "
      "it, and finds clients that left while their turn waits)");
  f->Bool("no-web-ui", &o->no_web_ui, "do not serve the chat page at / on the web port");

  Str(f, &o->slots_text, "slots", "N|auto", "auto",
      "resident session state slots (backend memory); auto: 64 on the CPU, on a GPU as many "
      "as fit in 90% of the memory left after the weights and forward buffers");
  Num(f, &o->max_batch, "max-batch", 0, 0, 1 << 16,
      "turns running at once; 0 = by backend (cpu 64, cuda 256)");
  Num(f, &o->prefill_budget, "prefill-budget", 0, 0, kI32Max,
      "prompt tokens prefilled per scheduler iteration; 0 = by backend (cpu 512, cuda 4096)");
  Num(f, &o->prefill_piece, "prefill-piece", 0, 0, kI32Max,
      "prompts are prefilled in pieces of this many tokens; 0 = by backend (cpu 128, cuda "
      "512)");
  Num(f, &o->queue_depth, "queue-depth", 256, 1, kI32Max,
      "turns waiting for a slot before RESOURCE_EXHAUSTED");
  Num(f, &o->tenant_max_running, "tenant-max-running", 0, 0, kI32Max,
      "turns one tenant (API-key owner) may run at once; 0 = no quota (admission is fair "
      "across tenants either way)");
  Num(f, &o->tenant_max_queued, "tenant-max-queued", 0, 0, kI32Max,
      "turns one tenant may have waiting; beyond: RESOURCE_EXHAUSTED; 0 = no quota");
  Num(f, &o->snapshot_bytes_in_flight, "snapshot-bytes-in-flight", int64_t{2} << 30, 1,
      std::numeric_limits<int64_t>::max(),
      "snapshot bytes ImportSession and ExportSession calls may hold together; a call that "
      "would pass it is RESOURCE_EXHAUSTED at once (one call may always proceed alone)");
  Num(f, &o->tenant_snapshot_bytes, "tenant-snapshot-bytes", 0, 0,
      std::numeric_limits<int64_t>::max(),
      "snapshot bytes one tenant's ImportSession and ExportSession calls may hold together "
      "(within --snapshot-bytes-in-flight); beyond: RESOURCE_EXHAUSTED at once; 0 = no quota");
  Num(f, &o->tenant_max_sessions, "tenant-max-sessions", 0, 0, kI32Max,
      "sessions one tenant may hold (creates, forks, imports beyond: RESOURCE_EXHAUSTED); "
      "0 = no quota");
  Num(f, &o->max_prompt_tokens, "max-prompt-tokens", 8192, 1, kI32Max,
      "input tokens per turn (template and BOS included)");
  Num(f, &o->max_new_tokens, "max-tokens-limit", 16384, 1, kI32Max,
      "largest max_tokens (xlstm --max-tokens) a request may ask for; beyond: "
      "RESOURCE_EXHAUSTED");
  f->Renamed("max-new-tokens", "max-tokens-limit");
  Num(f, &o->default_max_tokens, "default-max-tokens", 512, 1, kI32Max,
      "max_tokens of a request that leaves it at 0");
  Num(f, &o->max_sessions, "max-sessions", 10000, 1, kI32Max, "sessions held at once");
  Seconds(f, &o->idle_ttl_s, "idle-ttl", "idle-ttl-s", 0, 0, int64_t{1} << 40,
          "delete sessions idle longer than this; 0 = never");
  Seconds(f, &o->max_turn_s, "max-turn-time", "max-turn-s", 600, 0, int64_t{1} << 30,
      "a turn running longer (queue time included) is rolled back with DEADLINE_EXCEEDED; "
      "0 = no limit");
  Num(f, &o->stream_buffer, "stream-buffer", 64, 1, 1 << 20,
      "events buffered per turn for a slow reader before the turn pauses");
  Seconds(f, &o->stalled_stream_s, "stalled-stream-timeout", "stalled-stream-s", 30, 0,
          int64_t{1} << 30,
      "a turn whose client has not read its reply for this long (its stream buffer full) is "
      "rolled back with RESOURCE_EXHAUSTED and releases its slot; 0 = never");

  Str(f, &o->state_dir, "state-dir", "DIR", "",
      "disk tier: directory of session snapshots (created if missing), indexed at start so "
      "sessions survive a restart; unset = no disk tier");
  // No default value in the flag itself: the effective default depends on --state-dir.
  o->durability = "";
  f->Choice("durability", &o->durability, {"none", "async", "sync"},
            "when committed states reach the disk tier: none = only when spilled or at "
            "shutdown, async = after every turn in the background, sync = before the turn's "
            "`finished` is sent; default async with --state-dir, else none");
  Num(f, &o->host_state_bytes, "host-state-bytes", int64_t{4} << 30, 0, int64_t{1} << 50,
      "bytes of idle session states kept in host RAM; beyond it they spill to --state-dir "
      "(without one, the session count is capped to fit)");
  Num(f, &o->pinned_state_bytes, "pinned-state-bytes", int64_t{4} << 30, 0, int64_t{1} << 50,
      "page-locked host memory for state copies on a GPU (host-tier states, commits, "
      "exports): one DMA each instead of the driver's staged copy; beyond it copies use "
      "pageable memory; 0 = never pin; no effect on the CPU");
  Num(f, &o->disk_state_bytes, "disk-state-bytes", 0, 0, int64_t{1} << 60,
      "bytes of snapshots the disk tier may hold (new sessions are refused beyond it); "
      "0 = unlimited");
  Num(f, &o->io_threads, "io-threads", 2, 1, 64, "threads writing and reading snapshots");
  Str(f, &o->redis_url, "redis-url", "URL", "",
      "shared Redis tier, redis://[[user]:password@]host[:port][/db] or unix:///path: every "
      "commit is stored there (version-checked) before it is acknowledged, so daemons serving "
      "the same model continue each other's sessions (docs/redis-tier.md); unset = none");
  o->redis_timeout_ms = 2000;
  f->Duration("redis-timeout", &o->redis_timeout_ms, base::FlagSet::Unit::kMilliseconds, 10,
              600000, "connect and per-I/O timeout of Redis calls");
  f->Renamed("redis-timeout-ms", "redis-timeout", "ms");
  Num(f, &o->keep_turn_checkpoints, "keep-turn-checkpoints", 0, 0, 1024,
      "earlier committed versions kept per session for RewindSession (host RAM, counted in "
      "--host-state-bytes and dropped first under pressure); 0 = rewind off");

  o->drain_delay_ms = 0;
  f->Duration("drain-delay", &o->drain_delay_ms, base::FlagSet::Unit::kMilliseconds, 0,
              3600 * 1000,
              "on SIGTERM/SIGINT, how long to keep serving after health turns NOT_SERVING and "
              "/readyz 503, so load balancers that poll them stop routing here first (e.g. "
              "readiness period x failure threshold); the Helm chart's preStop sleep does this "
              "on Kubernetes; 0 = refuse new turns at once");
  Seconds(f, &o->grace_period_s, "grace-period", "grace-period-s", 30, 0, 86400,
          "on SIGTERM/SIGINT, how long running turns may take to finish before they are "
          "cancelled");
  Seconds(f, &o->flush_timeout_s, "flush-timeout", "flush-timeout-s", 60, 0, 86400,
          "on SIGTERM/SIGINT, after the turns: how long writing every committed state to "
          "--state-dir may take");
  o->log_level = "info";
  f->Choice("log-level", &o->log_level, {"trace", "debug", "info", "warn", "error", "off"},
            "log verbosity (stderr)");
  o->log_format = "text";
  f->Choice("log-format", &o->log_format, {"text", "json"},
            "log line format on stderr: text, or json (one JSON object per line)");
  o->log_prompts = false;
  f->Bool("log-prompts", &o->log_prompts,
          "put each turn's prompt and reply text in its log line (off: they may hold personal "
          "data)");
}

ServerOptions DefaultServerOptions() {
  ServerOptions o;
  base::FlagSet flags("", "");
  DeclareServerFlags(&o, &flags, [](const std::string&) { return std::nullopt; });
  return o;
}

core::EngineOptions ServerOptions::ToEngineOptions() const {
  core::EngineOptions e;
  e.resident_slots = static_cast<int32_t>(slots);
  e.max_batch = static_cast<int32_t>(max_batch);
  e.prefill_token_budget = static_cast<int32_t>(prefill_budget);
  e.prefill_piece = static_cast<int32_t>(prefill_piece);
  e.queue_depth = static_cast<int32_t>(queue_depth);
  e.tenant_max_running = static_cast<int32_t>(tenant_max_running);
  e.tenant_max_queued = static_cast<int32_t>(tenant_max_queued);
  e.tenant_max_sessions = static_cast<int32_t>(tenant_max_sessions);
  e.tenant_quotas = tenant_quotas;
  e.max_prompt_tokens = static_cast<int32_t>(max_prompt_tokens);
  e.max_sessions = static_cast<int32_t>(max_sessions);
  e.idle_ttl_ms = idle_ttl_s * 1000;
  e.max_turn_ms = max_turn_s * 1000;
  e.stalled_stream_ms = stalled_stream_s * 1000;
  e.stream_buffer_events = static_cast<int32_t>(stream_buffer);
  e.sampling.max_tokens = static_cast<int32_t>(max_new_tokens);
  e.sampling.default_max_tokens = static_cast<int32_t>(default_max_tokens);
  e.state_dir = state_dir;
  const std::string d = ResolvedDurability();
  e.durability = d == "sync"    ? core::EngineOptions::Durability::kSync
                 : d == "async" ? core::EngineOptions::Durability::kAsync
                                : core::EngineOptions::Durability::kNone;
  e.host_state_bytes = host_state_bytes;
  e.disk_state_bytes = disk_state_bytes;
  e.pinned_state_bytes = pinned_state_bytes;
  e.io_threads = static_cast<int32_t>(io_threads);
  e.keep_turn_checkpoints = static_cast<int32_t>(keep_turn_checkpoints);
  e.redis_url = redis_url;
  e.redis_timeout_ms = redis_timeout_ms;
  e.redis_connections = static_cast<int32_t>(std::max<int64_t>(2, io_threads));
  return e;
}

std::string ServerOptions::ResolvedDurability() const {
  if (!durability.empty()) return durability;
  return state_dir.empty() ? "none" : "async";
}

absl::StatusOr<HostPort> ParseHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "' is not HOST:PORT (e.g. 0.0.0.0:50051, [::]:50051)"));
  }
  HostPort hp;
  hp.host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  int p = -1;
  if (port.empty() || port.size() > 5 || !absl::SimpleAtoi(port, &p) || p < 0 || p > 65535 ||
      port.find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "': port '", port, "' is not a number in [0, 65535]"));
  }
  // A bare IPv6 address needs brackets, or its last group would read as the port.
  const bool bracketed = hp.host.front() == '[' && hp.host.back() == ']';
  if (!bracketed && hp.host.find_first_of(":[]") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "': write IPv6 hosts in brackets, e.g. [::1]:50051"));
  }
  if (bracketed && hp.host.size() < 3) {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "': empty host"));
  }
  hp.port = p;
  return hp;
}

base::ParseOutcome ParseServerOptions(int argc, char** argv, const base::EnvLookup& env,
                                      ServerOptions* out) {
  ServerOptions o;
  base::FlagSet flags("",
                      "xlstmd: serves an xLSTM language model as a streaming chat over gRPC.\n"
                      "--version prints the version, git commit, build type and backends.");
  DeclareServerFlags(&o, &flags, env);
  const base::ParseOutcome outcome = flags.Parse(argc, argv);
  if (outcome != base::ParseOutcome::kOk) return outcome;
  // Variables of this prefix that other programs read, not flags.
  static constexpr const char* kOtherVars[] = {"XLSTMD_API_KEY", "XLSTMD_CPU_ISA",
                                               "XLSTMD_REQUIRE_GPU", "XLSTMD_REDIS_SERVER",
                                               "XLSTMD_SHARED_DIR"};
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string var(*e, std::strcspn(*e, "="));
    if (!absl::StartsWith(var, kEnvPrefix) || flags.IsEnvTwin(var) ||
        std::find(std::begin(kOtherVars), std::end(kOtherVars), var) != std::end(kOtherVars)) {
      continue;
    }
    o.unknown_env.push_back(var);
  }

  // Checks that involve more than one option, or a format FlagSet does not know.
  if (absl::StatusOr<HostPort> hp = ParseHostPort(o.listen); !hp.ok()) {
    flags.PrintError(absl::StrCat("--listen: ", hp.status().message()));
    return base::ParseOutcome::kError;
  }
  if (!o.http_listen.empty()) {
    if (absl::StatusOr<HostPort> hp = ParseHostPort(o.http_listen); !hp.ok()) {
      flags.PrintError(absl::StrCat("--http-listen: ", hp.status().message()));
      return base::ParseOutcome::kError;
    }
  }
  if (!o.web_listen.empty()) {
    if (absl::StatusOr<HostPort> hp = ParseHostPort(o.web_listen); !hp.ok()) {
      flags.PrintError(absl::StrCat("--web-listen: ", hp.status().message()));
      return base::ParseOutcome::kError;
    }
    if (!o.http_listen.empty() && o.http_listen == o.web_listen &&
        !absl::EndsWith(o.web_listen, ":0")) {
      flags.PrintError("--web-listen and --http-listen must be different addresses");
      return base::ParseOutcome::kError;
    }
  }
  for (absl::string_view origin : absl::StrSplit(o.web_cors_origins, ',', absl::SkipEmpty())) {
    origin = absl::StripAsciiWhitespace(origin);
    if (origin == "*" || origin == "null" ||
        !(absl::StartsWith(origin, "http://") || absl::StartsWith(origin, "https://")) ||
        absl::EndsWith(origin, "/")) {
      flags.PrintError(absl::StrCat("--web-cors-origins: '", origin,
                                    "' is not an origin like https://app.example.com ('*' is "
                                    "never allowed: the API carries keys and conversations)"));
      return base::ParseOutcome::kError;
    }
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    flags.PrintError("--tls-cert and --tls-key go together (give both, or neither for "
                     "plaintext)");
    return base::ParseOutcome::kError;
  }
  if (!o.tls_client_ca.empty() && o.tls_cert.empty()) {
    flags.PrintError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)");
    return base::ParseOutcome::kError;
  }
  if (o.default_max_tokens > o.max_new_tokens) {
    flags.PrintError(absl::StrCat("--default-max-tokens (", o.default_max_tokens,
                                  ") must not exceed --max-tokens-limit (", o.max_new_tokens, ")"));
    return base::ParseOutcome::kError;
  }
  if (o.slots_text == "auto") {
    o.slots = 0;
  } else if (!absl::SimpleAtoi(o.slots_text, &o.slots) || o.slots < 1 || o.slots > (1 << 20)) {
    const bool env = flags.Source("slots") == base::FlagSource::kEnvironment;
    flags.PrintError(absl::StrCat(env ? "XLSTMD_SLOTS" : "--slots", ": '", o.slots_text,
                                  "' is neither auto nor a number of slots in [1, 1048576]"));
    return base::ParseOutcome::kError;
  }
  // 0 = by backend (engine_sizing.h); given both, they must agree now.
  if (o.prefill_budget != 0 && o.prefill_piece != 0 && o.prefill_budget < o.prefill_piece) {
    flags.PrintError(absl::StrCat("--prefill-budget (", o.prefill_budget,
                                  ") must be at least --prefill-piece (", o.prefill_piece, ")"));
    return base::ParseOutcome::kError;
  }
  // Durability is a promise about the disk tier; without one it could only be broken.
  if (o.state_dir.empty() && (o.durability == "async" || o.durability == "sync")) {
    flags.PrintError(absl::StrCat("--durability ", o.durability,
                                  " needs --state-dir DIR (there is no disk tier to make "
                                  "turns durable on); set one, or use --durability none"));
    return base::ParseOutcome::kError;
  }
  if (o.state_dir.empty() && o.disk_state_bytes != 0) {
    flags.PrintError("--disk-state-bytes needs --state-dir DIR (there is no disk tier to limit)");
    return base::ParseOutcome::kError;
  }
  o.durability = o.ResolvedDurability();
  *out = std::move(o);
  return base::ParseOutcome::kOk;
}

}  // namespace xlstmd::server
