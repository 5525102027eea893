// The one place where xlstmd's metrics are declared. docs/observability.md mirrors this file:
// change both together.
#include "server/metrics.h"

#include "core/base/retry.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "server/build_info.h"

namespace xlstmd::server {
namespace {

using base::LabelValues;

// Latency buckets, in seconds. Wide enough for a 7B model on a CPU (seconds per token) and a
// small one on a GPU (sub-millisecond steps).
const std::vector<double> kTtftBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                          1,     2.5,  5,     10,   30,  60};
const std::vector<double> kTokenLatencyBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                  0.05,   0.1,   0.25,   0.5,   1,    2.5};
const std::vector<double> kTurnBuckets = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                          5,    10,    30,   60,  120,  300, 600};
const std::vector<double> kWaitBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
const std::vector<double> kRestoreBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                             0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
const std::vector<double> kBatchBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

// gRPC methods that get their own label value; anything else is "other", so a client
// probing random method names cannot grow the label set.
constexpr const char* kKnownMethods[] = {
    "/xlstmd.v1.ChatService/CreateSession",
    "/xlstmd.v1.ChatService/Chat",
    "/xlstmd.v1.ChatService/GetSession",
    "/xlstmd.v1.ChatService/ListSessions",
    "/xlstmd.v1.ChatService/ForkSession",
    "/xlstmd.v1.ChatService/DeleteSession",
    "/xlstmd.v1.ChatService/ExportSession",
    "/xlstmd.v1.ChatService/ImportSession",
    "/xlstmd.v1.ChatService/RewindSession",
    "/xlstmd.v1.ModelService/GetModelInfo",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
};

// Index into kKnownMethods, or std::size(kKnownMethods) for "other".
size_t MethodIndex(std::string_view method) {
  for (size_t i = 0; i < std::size(kKnownMethods); ++i) {
    if (method == kKnownMethods[i]) return i;
  }
  return std::size(kKnownMethods);
}

std::string MethodLabel(size_t index) {
  if (index >= std::size(kKnownMethods)) return "other";
  return std::string(kKnownMethods[index] + 1);  // without the leading '/'
}

std::string PathLabel(std::string_view path) {
  for (const char* known : {"/metrics", "/healthz", "/readyz"}) {
    if (path == known) return std::string(path);
  }
  return "other";
}

double Seconds(double ms) { return ms / 1000.0; }

// Resident set size from /proc (Linux); -1 when unreadable.
double ResidentMemoryBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  unsigned long long size = 0, resident = 0;
  const int n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (n != 2) return -1;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

}  // namespace

// The engine's hooks: plain atomic updates on series resolved at construction.
class ServerMetrics::EngineHooks final : public core::EngineObserver {
 public:
  explicit EngineHooks(base::MetricsRegistry& r) {
    base::HistogramFamily& step = r.AddHistogram(
        "xlstmd_decode_step_duration_seconds",
        "Time of one batched decode step of the model (all decoding turns advance one token).", {},
        kTokenLatencyBuckets);
    step_ = &step.Get();
    base::HistogramFamily& batch = r.AddHistogram(
        "xlstmd_decode_batch_size", "Turns in each batched decode step.", {}, kBatchBuckets);
    batch_ = &batch.Get();
    base::CounterFamily& restores = r.AddCounter(
        "xlstmd_state_restores_total",
        "Turn starts by the tier their session's committed state was loaded from (resident = "
        "already in a slot; host = host RAM; disk = snapshot file; redis = Redis tier).",
        {"tier"});
    base::HistogramFamily& restore_time = r.AddHistogram(
        "xlstmd_state_restore_duration_seconds",
        "Time to load a session's committed state into a turn's slot, by source tier.", {"tier"},
        kRestoreBuckets);
    base::CounterFamily& spills = r.AddCounter(
        "xlstmd_state_spills_total",
        "Committed states moved out of a faster tier, by the tier that then holds them.", {"tier"});
    base::CounterFamily& evictions = r.AddCounter(
        "xlstmd_evictions_total",
        "Committed states evicted, by reason (slot_pressure: a turn needed the slot; "
        "host_budget: host RAM over --host-state-bytes; idle_ttl: session deleted after "
        "--idle-ttl).",
        {"reason"});
    // Every tier gets its series up front (so dashboards see zeros) except redis, which
    // appears with the first state that reaches it: most deployments have no Redis tier.
    for (core::StateTier t : {core::StateTier::kResident, core::StateTier::kHost,
                              core::StateTier::kDisk, core::StateTier::kRedis}) {
      const LabelValues tier = {core::StateTierName(t)};
      const size_t i = static_cast<size_t>(t);
      restores_[i] = [&restores, tier] { return &restores.With(tier); };
      restore_time_[i] = [&restore_time, tier] { return &restore_time.With(tier); };
      spills_[i] = [&spills, tier] { return &spills.With(tier); };
    }
    for (core::StateTier t :
         {core::StateTier::kResident, core::StateTier::kHost, core::StateTier::kDisk}) {
      const size_t i = static_cast<size_t>(t);
      restores_[i].Resolve();
      restore_time_[i].Resolve();
      if (t != core::StateTier::kResident) spills_[i].Resolve();  // nothing spills *to* a slot
    }
    for (core::EvictionReason e :
         {core::EvictionReason::kSlotPressure, core::EvictionReason::kHostBudget,
          core::EvictionReason::kIdleTtl}) {
      evictions_[static_cast<size_t>(e)] = &evictions.With({core::EvictionReasonName(e)});
    }
    nan_logits_ = &r.AddCounter("xlstmd_nan_logits_total",
                                "Turns rolled back with INTERNAL because the model's logits "
                                "held a NaN (a broken checkpoint or kernel; alert on any).",
                                {})
                       .Get();
  }

  void OnDecodeStep(int32_t batch_size, double seconds) override {
    step_->Observe(seconds);
    batch_->Observe(batch_size);
  }
  void OnRestore(core::StateTier from, double seconds) override {
    const size_t i = static_cast<size_t>(from);
    if (i >= restores_.size()) return;
    restores_[i].Resolve()->Increment();
    restore_time_[i].Resolve()->Observe(seconds);
  }
  void OnSpill(core::StateTier to) override {
    const size_t i = static_cast<size_t>(to);
    if (i < spills_.size()) spills_[i].Resolve()->Increment();
  }
  void OnEviction(core::EvictionReason reason) override {
    const size_t i = static_cast<size_t>(reason);
    if (i < evictions_.size()) evictions_[i]->Increment();
  }
  void OnNaNLogits() override { nan_logits_->Increment(); }

 private:
  base::Histogram* step_;
  base::Histogram* batch_;
  std::array<LazySeries<base::Counter>, 4> restores_{};
  std::array<LazySeries<base::Histogram>, 4> restore_time_{};
  std::array<LazySeries<base::Counter>, 4> spills_{};
  std::array<base::Counter*, 3> evictions_{};
  base::Counter* nan_logits_;
};

ServerMetrics::ServerMetrics() {
  base::MetricsRegistry& r = registry_;

  // ---- build and model ----
  r.AddGauge("xlstmd_build_info", "Always 1; labels name the build.", {"version", "commit"})
      .With({kBuildVersion, kBuildCommit})
      .Set(1);
  r.AddGauge("xlstmd_process_start_time_seconds", "Start time of the process, Unix seconds.")
      .Get()
      .Set(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
               .count());
  resident_memory_ = &r.AddGauge("xlstmd_process_resident_memory_bytes",
                                 "Resident memory of the process (weights, states, buffers).")
                          .Get();
  model_info_ =
      &r.AddGauge("xlstmd_model_info", "Always 1 once the model is loaded; labels describe it.",
                  {"model", "family", "embedding_dim", "num_blocks", "num_heads", "vocab_size",
                   "weight_dtype", "backend", "lm_head_dtype"});
  state_bytes_per_session_ =
      &r.AddGauge("xlstmd_state_bytes_per_session",
                  "Bytes of one session's recurrent state (fixed by the model).")
           .Get();

  // ---- turns ----
  ttft_ = &r.AddHistogram("xlstmd_time_to_first_token_seconds",
                          "Committed turns: request accepted -> first token generated.", {},
                          kTtftBuckets)
               .Get();
  itl_ = &r.AddHistogram("xlstmd_inter_token_latency_seconds",
                         "Time between consecutive generated tokens of a turn, as the engine "
                         "produced them.",
                         {}, kTokenLatencyBuckets)
              .Get();
  turn_duration_ =
      &r.AddHistogram("xlstmd_turn_duration_seconds",
                      "Committed turns: request accepted -> committed.", {}, kTurnBuckets)
           .Get();
  queue_time_ = &r.AddHistogram("xlstmd_queue_time_seconds",
                                "Committed turns: request accepted -> admitted into a slot.", {},
                                kWaitBuckets)
                     .Get();
  prefill_time_ = &r.AddHistogram("xlstmd_prefill_time_seconds",
                                  "Committed turns: admitted -> prompt processed (state restore "
                                  "included).",
                                  {}, kWaitBuckets)
                       .Get();
  prompt_tokens_ = &r.AddCounter("xlstmd_prompt_tokens_total",
                                 "Input tokens of committed turns (template and BOS included).")
                        .Get();
  generated_tokens_ = &r.AddCounter("xlstmd_generated_tokens_total",
                                    "Generated tokens streamed to clients (every turn, "
                                    "committed or not).")
                           .Get();
  prefill_tokens_avoided_ =
      &r.AddCounter("xlstmd_prefill_tokens_avoided_total",
                    "History tokens a stateless server would have processed again: each "
                    "committed turn's session token count before the turn, summed.")
           .Get();
  base::CounterFamily& turns =
      r.AddCounter("xlstmd_turns_total", "Committed turns by finish reason.", {"finish_reason"});
  for (core::FinishReason f : {core::FinishReason::kStopToken, core::FinishReason::kStopString,
                               core::FinishReason::kMaxTokens}) {
    turns_by_reason_[static_cast<size_t>(f)] = &turns.With({FinishReasonName(f)});
  }

  // ---- requests ----
  requests_ = &r.AddCounter("xlstmd_requests_total", "gRPC calls finished, by method.", {"method"});
  requests_failed_ = &r.AddCounter("xlstmd_requests_failed_total",
                                   "gRPC calls finished with a status other than OK, by method "
                                   "and status code.",
                                   {"method", "code"});
  requests_shed_ = &r.AddCounter(
      "xlstmd_requests_shed_total",
      "Calls refused with RESOURCE_EXHAUSTED for capacity (gRPC and web), by reason: "
      "QUEUE_FULL, TENANT_QUEUE_QUOTA, MAX_SESSIONS, TENANT_SESSION_QUOTA, STATE_CAPACITY, "
      "MAX_STREAMS, SNAPSHOT_BYTES, TENANT_SNAPSHOT_QUOTA.",
      {"reason"});
  for (absl::string_view reason :
       {base::kShedQueueFull, base::kShedTenantQueue, base::kShedMaxSessions,
        base::kShedTenantSessions, base::kShedStateCapacity, base::kShedStreams,
        base::kShedSnapshotBytes, base::kShedTenantSnapshotBytes}) {
    requests_shed_->With({std::string(reason)});
  }
  // The service's own methods are listed at 0 from the start; health and reflection appear
  // with their first call.
  static_assert(std::tuple_size_v<decltype(requests_by_method_)> == std::size(kKnownMethods) + 1);
  for (size_t i = 0; i <= std::size(kKnownMethods); ++i) {
    const std::string label = MethodLabel(i);
    requests_by_method_[i] = [this, label] { return &requests_->With({label}); };
    if (label.find("xlstmd.v1") != std::string::npos) requests_by_method_[i].Resolve();
  }
  http_requests_ =
      &r.AddCounter("xlstmd_http_requests_total",
                    "Requests to the HTTP listener, by path and status.", {"path", "status"});
  web_requests_ = &r.AddCounter("xlstmd_web_requests_total",
                                "Requests to the web listener, by route and HTTP status.",
                                {"route", "status"});
  web_open_streams_ = &r.AddGauge("xlstmd_web_open_streams",
                                  "Streamed (SSE) replies open on the web listener.")
                           .Get();
  web_disconnects_ = &r.AddCounter("xlstmd_web_disconnects_total",
                                   "Streamed web replies whose client went away before the "
                                   "end (their turns were cancelled and rolled back).")
                          .Get();

  // ---- scheduler and sessions (copied from the engine at scrape time) ----
  queue_depth_ = &r.AddGauge("xlstmd_queue_depth", "Turns waiting for a slot.").Get();
  snapshot_bytes_in_flight_ =
      &r.AddGauge("xlstmd_snapshot_bytes_in_flight",
                  "Snapshot bytes held by ImportSession and ExportSession calls "
                  "(--snapshot-bytes-in-flight caps it).")
           .Get();
  running_turns_ =
      &r.AddGauge("xlstmd_running_turns", "Turns admitted (restoring, prefilling, decoding).")
           .Get();
  sessions_ = &r.AddGauge("xlstmd_sessions", "Sessions held by the server.").Get();
  tier_sessions_ = &r.AddGauge(
      "xlstmd_tier_sessions",
      "Sessions whose committed state a tier holds (a session may be in several: the disk "
      "tier keeps durable copies of resident and host states).",
      {"tier"});
  tier_bytes_ = &r.AddGauge("xlstmd_tier_state_bytes",
                            "Bytes of session state a tier holds (host includes kept "
                            "checkpoints; disk is snapshot file bytes).",
                            {"tier"});
  pinned_state_bytes_ =
      &r.AddGauge("xlstmd_pinned_state_bytes",
                  "Page-locked host memory held for state copies (GPU backends; 0 on the CPU).")
           .Get();
  pinned_state_fallbacks_ =
      &r.AddCounter("xlstmd_pinned_state_fallbacks_total",
                    "State buffers taken from pageable memory because --pinned-state-bytes "
                    "was reached or page-locking failed (slower state moves on a GPU).")
           .Get();
  snapshot_writes_ =
      &r.AddCounter("xlstmd_snapshot_writes_total", "Snapshots written to the disk tier.").Get();
  snapshot_write_failures_ =
      &r.AddCounter("xlstmd_snapshot_write_failures_total",
                    "Snapshot writes that failed (the state stays in memory and is retried).")
           .Get();
  redis_writes_ = &r.AddCounter("xlstmd_redis_writes_total",
                                "Snapshots committed to the shared Redis tier (turns, creates, "
                                "forks, imports, rewinds).")
                       .Get();
  redis_conflicts_ = &r.AddCounter("xlstmd_redis_write_conflicts_total",
                                   "Redis writes refused by the version check: another server "
                                   "changed the session first (the turn was rolled back).")
                          .Get();
  redis_failures_ = &r.AddCounter("xlstmd_redis_failures_total",
                                  "Redis calls that failed: unreachable, timed out, or an "
                                  "unusable stored copy.")
                         .Get();
  quarantined_ = &r.AddCounter("xlstmd_snapshots_quarantined_total",
                               "Snapshots moved to quarantine/ as unusable (corrupt, truncated, "
                               "another model).")
                      .Get();

  // ---- engine internals (EngineObserver) ----
  hooks_ = std::make_unique<EngineHooks>(r);
}

ServerMetrics::~ServerMetrics() = default;

core::EngineObserver* ServerMetrics::engine_observer() { return hooks_.get(); }

const char* ServerMetrics::FinishReasonName(core::FinishReason reason) {
  switch (reason) {
    case core::FinishReason::kStopToken:
      return "stop_token";
    case core::FinishReason::kStopString:
      return "stop_string";
    case core::FinishReason::kMaxTokens:
      return "max_tokens";
    case core::FinishReason::kNone:
      break;
  }
  return "none";
}

const char* ServerMetrics::GrpcCodeName(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  if (code < 0 || code >= static_cast<int>(std::size(kNames))) return "UNKNOWN";
  return kNames[code];
}

void ServerMetrics::OnTurnEvent(const core::TurnEvent& event, TurnTracker* tracker) {
  switch (event.kind) {
    case core::TurnEvent::Kind::kStarted:
      return;
    case core::TurnEvent::Kind::kDelta:
      generated_tokens_->Add(static_cast<double>(event.token_ids.size()));
      if (tracker->last_delta_at.has_value()) {
        itl_->Observe(
            std::chrono::duration<double>(event.pushed_at - *tracker->last_delta_at).count());
      }
      tracker->last_delta_at = event.pushed_at;
      return;
    case core::TurnEvent::Kind::kFinished: {
      const core::TurnUsage& u = event.usage;
      ttft_->Observe(Seconds(u.first_token_ms));
      turn_duration_->Observe(Seconds(u.total_ms));
      queue_time_->Observe(Seconds(u.queue_ms));
      prefill_time_->Observe(Seconds(u.prefill_ms));
      prompt_tokens_->Add(u.prompt_tokens);
      prefill_tokens_avoided_->Add(static_cast<double>(u.history_tokens));
      const size_t i = static_cast<size_t>(event.finish_reason);
      if (i < turns_by_reason_.size() && turns_by_reason_[i] != nullptr) {
        turns_by_reason_[i]->Increment();
      }
      return;
    }
  }
}

void ServerMetrics::OnRpcDone(std::string_view method, int code) {
  const size_t i = MethodIndex(method);
  requests_by_method_[i].Resolve()->Increment();
  if (code != 0) requests_failed_->With({MethodLabel(i), GrpcCodeName(code)}).Increment();
}

void ServerMetrics::OnShed(std::string_view reason) {
  requests_shed_->With({std::string(reason)}).Increment();
}

void ServerMetrics::OnHttpRequest(std::string_view path, int status) {
  http_requests_->With({PathLabel(path), std::to_string(status)}).Increment();
}

void ServerMetrics::OnWebRequest(std::string_view route, int status) {
  web_requests_->With({std::string(route), std::to_string(status)}).Increment();
}

void ServerMetrics::SetModelInfo(const ModelInfoLabels& m, int64_t state_bytes_per_session) {
  model_info_
      ->With({m.model, m.family, m.embedding_dim, m.num_blocks, m.num_heads, m.vocab_size,
              m.weight_dtype, m.backend, m.lm_head_dtype})
      .Set(1);
  state_bytes_per_session_->Set(static_cast<double>(state_bytes_per_session));
}

std::string ServerMetrics::Render(const core::Engine* engine, uint64_t snapshot_bytes_in_flight) {
  absl::MutexLock lock(&render_mu_);
  resident_memory_->Set(ResidentMemoryBytes());
  snapshot_bytes_in_flight_->Set(static_cast<double>(snapshot_bytes_in_flight));
  if (engine != nullptr) {
    // One locked copy of counters the engine keeps anyway: O(1) in the number of sessions.
    const core::EngineStats s = engine->stats();
    const double per_session = state_bytes_per_session_->value();
    queue_depth_->Set(s.queued_turns);
    running_turns_->Set(s.running_turns);
    sessions_->Set(s.sessions);
    tier_sessions_->With({"resident"}).Set(s.resident_sessions);
    tier_bytes_->With({"resident"}).Set(s.resident_sessions * per_session);
    tier_sessions_->With({"host"}).Set(s.host_sessions);
    tier_bytes_->With({"host"}).Set(static_cast<double>(s.host_state_bytes));
    pinned_state_bytes_->Set(static_cast<double>(s.pinned_state_bytes));
    pinned_state_fallbacks_->Set(static_cast<double>(s.pinned_state_fallbacks));
    if (!engine->options().state_dir.empty()) {
      tier_sessions_->With({"disk"}).Set(static_cast<double>(s.disk_sessions));
      tier_bytes_->With({"disk"}).Set(static_cast<double>(s.disk_state_bytes));
      snapshot_writes_->Set(static_cast<double>(s.snapshot_writes));
      snapshot_write_failures_->Set(static_cast<double>(s.snapshot_write_failures));
      quarantined_->Set(static_cast<double>(s.quarantined_snapshots));
    }
    if (s.redis_enabled) {
      tier_sessions_->With({"redis"}).Set(static_cast<double>(s.redis_sessions));
      tier_bytes_->With({"redis"}).Set(static_cast<double>(s.redis_state_bytes));
      redis_writes_->Set(static_cast<double>(s.redis_writes));
      redis_conflicts_->Set(static_cast<double>(s.redis_write_conflicts));
      redis_failures_->Set(static_cast<double>(s.redis_failures));
    }
  }
  return registry_.Render();
}

}  // namespace xlstmd::server
