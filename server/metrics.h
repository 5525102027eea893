// ServerMetrics: every metric the daemon exports, declared once (names, help, labels,
// buckets) in metrics.cc, and the places that feed them. docs/observability.md lists them.
//
// Three sources feed the registry:
//  - per-turn observations from the Chat stream (ChatReactor calls OnTurnEvent for each event
//    it pops), and per-RPC outcomes (the gRPC interceptor calls OnRpcDone);
//  - the engine's own work, through the core::EngineObserver that engine_observer() returns
//    (pass it in EngineOptions::observer; it must outlive the engine);
//  - gauges copied from core::Engine::stats() at scrape time (Render), so a scrape costs the
//    same with 10 or 10,000 sessions.
//
// Label values come from closed sets (finish reasons, tiers, eviction reasons, gRPC codes,
// known method names); never from requests (a session id, a tenant).
//
// Threading: every method is thread-safe. Updates are lock-free atomics on series resolved
// once; only a failed RPC and an HTTP request look their series up (one family lock).
#ifndef XLSTMD_SERVER_METRICS_H_
#define XLSTMD_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/synchronization/mutex.h"
#include "core/base/metrics.h"
#include "core/engine/engine.h"
#include "core/engine/engine_observer.h"
#include "core/engine/turn_stream.h"

namespace xlstmd::server {

// What the model info gauge reports (labels of xlstmd_model_info).
struct ModelInfoLabels {
  std::string model;  // directory name
  std::string family;
  std::string embedding_dim;
  std::string num_blocks;
  std::string num_heads;
  std::string vocab_size;
  std::string weight_dtype;  // the projections' storage: f32, bf16, int8, q4
  std::string backend;
  std::string lm_head_dtype;
};

// A series looked up in its family on first use, then cached. The cache is an atomic
// pointer: a race only repeats the (idempotent) lookup.
template <typename T>
class LazySeries {
 public:
  LazySeries() = default;
  LazySeries& operator=(std::function<T*()> lookup) {
    lookup_ = std::move(lookup);
    return *this;
  }
  T* Resolve() {
    T* s = series_.load(std::memory_order_acquire);
    if (s == nullptr) {
      s = lookup_();
      series_.store(s, std::memory_order_release);
    }
    return s;
  }

 private:
  std::function<T*()> lookup_;
  std::atomic<T*> series_{nullptr};
};

class ServerMetrics {
 public:
  ServerMetrics();
  ~ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The hooks to hand to the engine (EngineOptions::observer).
  core::EngineObserver* engine_observer();

  // Per-turn state the stream consumer keeps between events (ChatReactor owns one per call).
  struct TurnTracker {
    std::optional<std::chrono::steady_clock::time_point> last_delta_at;
  };
  // One event popped from a turn's stream: deltas count generated tokens and inter-token
  // latency; `finished` records the turn's usage, finish reason and avoided prefill.
  void OnTurnEvent(const core::TurnEvent& event, TurnTracker* tracker);

  // An RPC ended with gRPC status `code` (a grpc::StatusCode value). `method` is the full
  // gRPC method name ("/xlstmd.v1.ChatService/Chat"); unknown ones count as "other".
  void OnRpcDone(std::string_view method, int code);
  // A call (gRPC or web) refused for capacity, by the refusal's reason (base/retry.h).
  void OnShed(std::string_view reason);

  // An HTTP request to the ops listener was answered with `status`.
  void OnHttpRequest(std::string_view path, int status);
  // The web listener (web_server.h): one request by route (a closed set, never a path with
  // an id in it) and status; streamed replies open now; streams whose client went away.
  void OnWebRequest(std::string_view route, int status);
  void OnWebStreamOpen(int delta) { web_open_streams_->Add(delta); }
  void OnWebDisconnect() { web_disconnects_->Increment(); }

  // Sets xlstmd_model_info (once the model is loaded).
  void SetModelInfo(const ModelInfoLabels& info, int64_t state_bytes_per_session);

  // The exposition (text format 0.0.4), with the engine's current stats copied in first
  // (`engine` may be null before the model is loaded).
  // `snapshot_bytes_in_flight`: the shared import/export budget's use (byte_budget.h).
  std::string Render(const core::Engine* engine, uint64_t snapshot_bytes_in_flight = 0);

  // Names for label values (exposed for tests and logs).
  static const char* FinishReasonName(core::FinishReason reason);
  static const char* GrpcCodeName(int code);

 private:
  class EngineHooks;

  base::MetricsRegistry registry_;
  // Families whose series are picked at run time.
  base::CounterFamily* requests_;
  std::array<LazySeries<base::Counter>, 14> requests_by_method_;  // known methods + "other"
  base::CounterFamily* requests_failed_;
  base::CounterFamily* requests_shed_;
  base::CounterFamily* http_requests_;
  base::CounterFamily* web_requests_;
  base::Gauge* web_open_streams_;
  base::Counter* web_disconnects_;
  base::GaugeFamily* model_info_;
  base::GaugeFamily* tier_sessions_;
  base::GaugeFamily* tier_bytes_;

  // Series updated per token or per turn, resolved once.
  base::Histogram* ttft_;
  base::Histogram* itl_;
  base::Histogram* turn_duration_;
  base::Histogram* queue_time_;
  base::Histogram* prefill_time_;
  base::Counter* prompt_tokens_;
  base::Counter* generated_tokens_;
  base::Counter* prefill_tokens_avoided_;
  std::array<base::Counter*, 4> turns_by_reason_{};  // indexed by core::FinishReason

  // Scrape-time copies of engine stats.
  base::Gauge* queue_depth_;
  base::Gauge* snapshot_bytes_in_flight_;
  base::Gauge* running_turns_;
  base::Gauge* sessions_;
  base::Gauge* state_bytes_per_session_;
  base::Counter* snapshot_writes_;
  base::Counter* snapshot_write_failures_;
  base::Counter* redis_writes_;
  base::Counter* redis_conflicts_;
  base::Counter* redis_failures_;
  base::Gauge* pinned_state_bytes_;
  base::Counter* pinned_state_fallbacks_;
  // Scrapes copy engine counters into the registry: two at once could write an older copy
  // after a newer one, and a counter must never go down.
  absl::Mutex render_mu_;
  base::Counter* quarantined_;
  base::Gauge* resident_memory_;

  std::unique_ptr<EngineHooks> hooks_;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_METRICS_H_
