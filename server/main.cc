// `xlstmd`: the daemon. Startup order (RELIABILITY.md): parse options, start listening
// (health NOT_SERVING), load the model, serve; on SIGTERM/SIGINT drain and exit 0 (3 when the
// drain's flush to --state-dir did not write every session).
// Exit codes: 0 after a clean stop (or --help), 2 when options, the API keys file, the
// model or the listen address are unusable (one error line on stderr), 3 when the drain's
// flush did not write every session.
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "kernels/backend.h"
#include "kernels/backend_registry.h"
#include "server/api_keys.h"
#include "server/build_info.h"
#include "server/logging.h"
#include "server/model_loader.h"
#include "server/options.h"
#include "server/server.h"
#include "server/signals.h"
#include "spdlog/spdlog.h"

namespace xlstmd::server {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitStartup = 2;
// The drain's flush to --state-dir did not write every session (docs/server.md).
constexpr int kExitFlushIncomplete = 3;

// One line, whatever the status message holds.
std::string OneLine(const absl::Status& s) {
  return absl::StrReplaceAll(s.ToString(), {{"\n", " "}, {"\r", " "}});
}

int StartupFailure(const std::string& what, const absl::Status& s) {
  spdlog::error("xlstmd: {}: {}", what, OneLine(s));
  return kExitStartup;
}

const char* SignalName(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }

// Every gRPC connection, HTTP client and snapshot write takes a descriptor. The soft limit is
// often 1024 (or lower) under a much higher hard limit: idle connections then exhausted it
// and durable writes failed with "Too many open files". Raise it to the hard limit.
void RaiseOpenFileLimit() {
  struct rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) return;
  const rlim_t before = lim.rlim_cur;
  lim.rlim_cur = lim.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    spdlog::warn("could not raise the open-file limit from {}: {}", before, std::strerror(errno));
    return;
  }
  spdlog::info("open-file limit raised from {} to the hard limit {}", before, lim.rlim_cur);
}

int Main(int argc, char** argv) {
  // Before anything can start a thread.
  ShutdownSignals signals;

  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--version") == 0) {
      std::printf("xlstmd %s (commit %s, %s build, backends: %s)\n", kBuildVersion, kBuildCommit,
                  kBuildType, absl::StrJoin(kernels::CompiledBackends(), ", ").c_str());
      return kExitOk;
    }
  }
  ServerOptions options;
  switch (ParseServerOptions(argc, argv, base::GetEnv, &options)) {
    case base::ParseOutcome::kHelp:
      return kExitOk;
    case base::ParseOutcome::kError:
      return kExitStartup;
    case base::ParseOutcome::kOk:
      break;
  }
  SetUpLogging(options.log_level, ParseLogFormat(options.log_format));
  for (const std::string& var : options.unknown_env) {
    spdlog::warn("environment variable {} is not an xlstmd setting (misspelled?); it is ignored",
                 var);
  }
  RaiseOpenFileLimit();

  Authenticator auth;
  if (!options.api_keys_file.empty()) {
    std::vector<std::string> warnings;
    absl::StatusOr<ApiKeys> keys = ApiKeys::LoadFile(options.api_keys_file, &warnings);
    if (!keys.ok()) return StartupFailure("--api-keys-file", keys.status());
    for (const std::string& w : warnings) spdlog::warn("{}", w);
    spdlog::info("authentication on: {} API key(s), quotas for {} tenant(s)", keys->size(),
                 keys->quotas().size());
    options.tenant_quotas = keys->quotas();
    auth = Authenticator(*std::move(keys));
  }

  std::error_code ec;
  const std::filesystem::path cwd = std::filesystem::current_path(ec);
  absl::StatusOr<std::filesystem::path> model_dir =
      ResolveModelDir(options.model_dir, SelfExePath(), cwd);
  if (!model_dir.ok()) return StartupFailure("--model", model_dir.status());

  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options, std::move(auth));
  // The message names the address (and, for the HTTP listener, the flag).
  if (!server.ok()) return StartupFailure("cannot start serving", server.status());
  const std::string http = (*server)->http_address().empty() ? "none" : (*server)->http_address();
  const std::string web = (*server)->web_address().empty() ? "none" : (*server)->web_address();
  spdlog::info("listening on {} (http {}, web {}); loading model {}", (*server)->listen_address(),
               http, web, model_dir->string());

  const auto load_start = std::chrono::steady_clock::now();
  absl::StatusOr<LoadedModel> model = LoadModel(options, *model_dir, (*server)->engine_observer());
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  // LoadModel's message names the part that failed (model, backend, tokenizer, chat
  // template, --state-dir): a locked state directory is not a model problem.
  if (!model.ok()) return StartupFailure("cannot start", model.status());

  if (signals.count() == 0) {
    const core::XlstmModel& m = model->engine->model();
    const bool random = model->random_weights;
    if (random) {
      spdlog::warn("model {} has random weights (written by `xlstm mkmodel`): replies are noise; "
                   "serve a trained model, e.g. the bundled models/demo (no --model)",
                   model_dir->string());
    }
    // (The engine has logged what it found in the state dir.)
    // Fields are only ever appended: scripts parse `listen=(\S+)` and the others by name.
    const std::string line = fmt::format(
        "xlstmd serving model={} family={} backend={} isa={} weight_dtype={} "
        "state_bytes_per_session={} slots={} listen={} state_dir={} durability={} http={} "
        "redis={} lm_head_dtype={} weight_bytes={} backend_why={} max_batch={} web={} "
        "load_s={:.2f} random_weights={} cuda_math={}",
        model_dir->string(), m.config().model_type, m.backend().Name(), m.backend().Isa(),
        kernels::DTypeName(m.matrix_dtype()), m.state_bytes_per_session(),
        model->engine_options.resident_slots,
        (*server)->listen_address(), options.state_dir.empty() ? "none" : options.state_dir,
        options.durability, http, options.redis_url.empty() ? "none" : "on",
        kernels::DTypeName(m.lm_head_dtype()), m.weight_bytes(), model->backend_why,
        model->engine_options.max_batch, web, load_s, random ? "true" : "false",
        kernels::MathModeName(m.backend().Math()));
    if (!model->sizing_note.empty()) spdlog::info("--slots {}", model->sizing_note);
    (*server)->Serve(*std::move(model));
    spdlog::info("{}", line);
    const int sig = signals.WaitFirst();
    spdlog::info("{}: draining (grace period {} s; send it again to skip the wait)",
                 SignalName(sig), options.grace_period_s);
  } else {
    spdlog::info("shutdown requested while loading; not serving");
  }

  const Server::DrainReport report = (*server)->Drain(
      absl::Seconds(options.grace_period_s), [&] { return signals.count() >= 2; },
      absl::Seconds(options.flush_timeout_s), absl::Milliseconds(options.drain_delay_ms));
  if (!report.turns_finished) {
    spdlog::warn("grace period over: running turns were cancelled and rolled back");
  }
  int exit_code = kExitOk;
  if (report.flush_ran && !options.state_dir.empty()) {
    const double ms = absl::ToDoubleMilliseconds(report.flush_time);
    if (report.flush_complete()) {
      spdlog::info("flushed to {}: {} snapshot(s) written in {:.1f} ms", options.state_dir,
                   report.snapshots_written, ms);
    } else {
      // What is on disk is still consistent (whole snapshots only): a restart resumes those
      // sessions at their last durable version. The exit code tells a supervisor that turns
      // acknowledged under --durability async/none may be lost.
      spdlog::error(
          "flush to {} incomplete after {:.1f} ms: {} session(s) not written ({} written, {} "
          "failed, {} still in flight{}); they resume at their last durable version",
          options.state_dir, ms, report.sessions_not_written(), report.snapshots_written,
          report.snapshot_write_failures, report.writes_in_flight,
          report.flushed
              ? ""
              : fmt::format(" when --flush-timeout {}s passed", options.flush_timeout_s));
      exit_code = kExitFlushIncomplete;
    }
  }
  // A model loaded but never served (a signal during loading) still runs an engine that reports
  // to the server's metrics: it must go first.
  model = absl::CancelledError("shut down");
  server->reset();
  spdlog::info("xlstmd stopped{}", exit_code == kExitOk ? "" : " (exit 3: flush incomplete)");
  TearDownLogging();
  return exit_code;
}

}  // namespace
}  // namespace xlstmd::server

int main(int argc, char** argv) { return xlstmd::server::Main(argc, argv); }
