// ServerOptions: every knob of the `xlstmd` daemon, declared once (name, default, range, help)
// in options.cc's DeclareServerFlags, each with an `XLSTMD_*` environment twin (flag name
// upper-cased, dashes to underscores). Precedence: command-line flag > environment > default.
//
// ParseServerOptions is the only way to build one from user input; the result is an
// immutable value passed by const& to the rest of the daemon. Plain data, any thread.
#ifndef XLSTMD_SERVER_OPTIONS_H_
#define XLSTMD_SERVER_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/flags.h"
#include "core/engine/engine.h"

namespace xlstmd::server {

inline constexpr char kEnvPrefix[] = "XLSTMD_";

struct ServerOptions {
  // Model and tokenizer. `model_dir` "" = the bundled default model (ResolveModelDir).
  std::string model_dir;
  std::string tokenizer_file;  // "" = the model dir's tokenizer.json, else bytes
  std::string backend;         // auto | cpu | cuda
  std::string weight_dtype;    // auto | f32 | bf16 | int8 | q4 (core/model/weight_format.h)
  std::string lm_head_dtype;   // auto | f32 | bf16 | int8 | q4
  std::string cuda_math;       // exact | bf16 (kernels::MathMode); bf16 needs a CUDA backend
  int64_t threads = 0;         // backend worker threads; 0 = one per core

  // Transport.
  std::string listen;  // HOST:PORT; port 0 picks a free port
  int64_t max_message_bytes = 0;
  int64_t max_streams_per_connection = 0;
  int64_t grpc_memory_mb = 0;
  int64_t max_streams = 0;          // streaming calls open at once, all connections
  int64_t max_health_watchers = 0;  // grpc.health.v1 Watch streams open at once
  int64_t max_connection_idle_s = 0;
  int64_t max_connection_age_s = 0;
  std::string api_keys_file;  // "" = no authentication, one anonymous tenant
  // HTTP listener for /metrics, /healthz, /readyz: HOST:PORT, port 0 picks a free port;
  // "" = off (the default, so several daemons on one host never collide on a fixed port).
  std::string http_listen;
  // Web listener (OpenAI-compatible API, session API over SSE, chat page; docs/web.md):
  // HOST:PORT, port 0 picks a free port; "" = off. Separate from http_listen so probes and
  // scrapes never wait behind chat streams.
  std::string web_listen;
  int64_t web_threads = 0;      // connections open at once (one thread each)
  int64_t web_max_streams = 0;  // streamed replies open at once; beyond: 429
  int64_t web_max_body_bytes = 0;
  std::string web_cors_origins;  // comma-separated; "" = same-origin only
  int64_t web_heartbeat_s = 0;
  bool no_web_ui = false;
  // TLS on the gRPC port and the HTTP listener: PEM files; "" = plaintext (server/tls.h).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;  // set: clients must present a certificate it signed (mTLS)

  // Engine (core::EngineOptions).
  // 0 = by backend, resolved once the backend is known (engine_sizing.h).
  std::string slots_text;  // --slots as given: "auto" or N
  int64_t slots = 0;       // 0 = auto
  int64_t max_batch = 0;
  int64_t prefill_budget = 0;
  int64_t prefill_piece = 0;
  int64_t tenant_max_running = 0;  // 0 = no quota
  int64_t tenant_max_queued = 0;
  int64_t tenant_max_sessions = 0;
  int64_t snapshot_bytes_in_flight = 0;  // imports + exports together (byte_budget.h)
  int64_t tenant_snapshot_bytes = 0;     // the same per tenant; 0 = no quota
  core::TenantQuotas tenant_quotas;  // from the API-key file (set by main, not a flag)
  int64_t queue_depth = 0;
  int64_t max_prompt_tokens = 0;
  int64_t max_new_tokens = 0;
  int64_t default_max_tokens = 0;
  int64_t max_sessions = 0;
  int64_t idle_ttl_s = 0;
  int64_t max_turn_s = 0;
  int64_t stalled_stream_s = 0;
  int64_t stream_buffer = 0;

  // State tiers (core::EngineOptions' state_dir, durability, budgets; docs/server.md).
  std::string state_dir;  // "" = no disk tier: sessions live in slots and host RAM only
  // none | async | sync after ParseServerOptions. "" (the declared default) means "async
  // with a state dir, else none"; ResolvedDurability applies that rule.
  std::string durability;
  int64_t host_state_bytes = 0;
  int64_t disk_state_bytes = 0;  // 0 = unlimited
  int64_t pinned_state_bytes = 0;
  int64_t io_threads = 0;
  int64_t keep_turn_checkpoints = 0;
  std::string redis_url;
  int64_t redis_timeout_ms = 2000;

  // Operations.
  int64_t drain_delay_ms = 0;
  // XLSTMD_* environment variables that are no flag's twin (a misspelling has no effect
  // otherwise); main logs a warning for each.
  std::vector<std::string> unknown_env;
  int64_t grace_period_s = 0;
  // Drain: how long writing every committed state to the disk tier may take.
  int64_t flush_timeout_s = 0;
  std::string log_level;
  std::string log_format;    // text | json
  bool log_prompts = false;  // per-turn log lines carry the prompt and reply text

  // `durability` with the default rule applied: none, async or sync.
  std::string ResolvedDurability() const;

  // The option values as core::Engine wants them.
  core::EngineOptions ToEngineOptions() const;
};

// Declares every option on `flags` with its default written into `options` (the single
// declaration of names, defaults, ranges and help), and turns on the environment twins.
void DeclareServerFlags(ServerOptions* options, base::FlagSet* flags,
                        base::EnvLookup env = base::GetEnv);

// The defaults, as DeclareServerFlags writes them.
ServerOptions DefaultServerOptions();

// Parses argv (argv[0] is the program) and the environment. kHelp after printing usage to
// stdout, kError after printing one `xlstmd: error: ...` line to stderr.
base::ParseOutcome ParseServerOptions(int argc, char** argv, const base::EnvLookup& env,
                                      ServerOptions* out);

// HOST:PORT split ("[::1]:80" -> "::1"/"[::1]", 80). INVALID_ARGUMENT when malformed.
struct HostPort {
  std::string host;  // as written, brackets kept for IPv6
  int port = 0;
};
absl::StatusOr<HostPort> ParseHostPort(const std::string& address);

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_OPTIONS_H_
