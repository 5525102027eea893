// The gRPC services of xlstmd.v1 on the callback API: ChatService and ModelService, both
// thin adapters over core::Engine (validation and conversion in convert.h, the work in the
// engine).
//
// ChatService methods are registered raw (ByteBuffer in and out) so the daemon parses
// requests itself: protobuf rejects a proto3 string holding invalid UTF-8 during parsing,
// which the generated handlers would report as INTERNAL with no message; here it is
// INVALID_ARGUMENT saying so.
//
// Every call authenticates first (AIP-211), then needs the engine: until the model is
// loaded calls get UNAVAILABLE "model loading". The services hold no state of their own
// beyond a pointer to the ServingState, which must outlive the gRPC server.
#ifndef XLSTMD_SERVER_SERVICES_H_
#define XLSTMD_SERVER_SERVICES_H_

#include <atomic>
#include <string>

#include "core/engine/engine.h"
#include "server/api_keys.h"
#include "server/byte_budget.h"
#include "server/metrics.h"
#include "xlstmd/v1/chat.grpc.pb.h"

namespace xlstmd::server {

// How calls are observed: metrics (null = none, e.g. in tests) and the per-turn log line.
struct Observability {
  ServerMetrics* metrics = nullptr;  // not owned; outlives the gRPC server
  bool log_turns = true;             // one log line per Chat call
  bool log_prompts = false;          // ... with the prompt and reply text
};

// What the services share: the authenticator, observability and, once loaded, the engine.
// SetEngine is called once, before the health status flips to SERVING; readers may run on
// any thread.
class ServingState {
 public:
  explicit ServingState(Authenticator auth, Observability obs = {},
                        uint64_t snapshot_bytes_in_flight = uint64_t{2} << 30,
                        uint64_t max_streams = 10000, uint64_t tenant_snapshot_bytes = 0,
                        std::map<std::string, uint64_t> tenant_snapshot_overrides = {})
      : auth_(std::move(auth)),
        obs_(obs),
        snapshot_budget_(snapshot_bytes_in_flight),
        streams_(max_streams),
        tenant_snapshot_budget_(tenant_snapshot_bytes, std::move(tenant_snapshot_overrides)) {}
  ServingState(const ServingState&) = delete;
  ServingState& operator=(const ServingState&) = delete;

  const Authenticator& auth() const { return auth_; }
  const Observability& observability() const { return obs_; }
  // Set when a drain begins (readiness off); never cleared.
  void set_draining() { draining_.store(true, std::memory_order_release); }
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  // Set after --drain-delay, when new work is refused (the engine's BeginDrain for gRPC;
  // the web listener checks this); never cleared.
  void set_refusing() { refusing_.store(true, std::memory_order_release); }
  bool refusing() const { return refusing_.load(std::memory_order_acquire); }
  // nullptr until SetEngine. The engine must outlive every call (the server shuts down
  // before the engine is destroyed).
  core::Engine* engine() const { return engine_.load(std::memory_order_acquire); }
  // `model_name` is ModelInfo.model. Publishes the engine with release order, so the name
  // written first is visible to every thread that sees the engine.
  void SetEngine(core::Engine* engine, std::string model_name, bool random_weights) {
    model_name_ = std::move(model_name);
    random_weights_ = random_weights;
    engine_.store(engine, std::memory_order_release);
  }
  const std::string& model_name() const { return model_name_; }
  bool random_weights() const { return random_weights_; }
  // Snapshot bytes held by ImportSession / ExportSession calls (--snapshot-bytes-in-flight).
  ByteBudget* snapshot_budget() const { return &snapshot_budget_; }
  // What an import or export is charged against: the shared budget and its tenant's quota.
  SnapshotBudgets snapshot_budgets() const {
    return {&snapshot_budget_, &tenant_snapshot_budget_};
  }
  // Streaming calls open now (--max-streams): a budget of one unit per call.
  ByteBudget* streams() const { return &streams_; }

 private:
  const Authenticator auth_;
  const Observability obs_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> refusing_{false};
  std::string model_name_;
  bool random_weights_ = false;
  std::atomic<core::Engine*> engine_{nullptr};
  mutable ByteBudget snapshot_budget_;
  mutable ByteBudget streams_;
  mutable TenantByteBudget tenant_snapshot_budget_;
};

using RawChatService = v1::ChatService::WithRawCallbackMethod_CreateSession<
    v1::ChatService::WithRawCallbackMethod_Chat<v1::ChatService::WithRawCallbackMethod_GetSession<
        v1::ChatService::WithRawCallbackMethod_ListSessions<
            v1::ChatService::WithRawCallbackMethod_ForkSession<
                v1::ChatService::WithRawCallbackMethod_DeleteSession<
                    v1::ChatService::WithRawCallbackMethod_ExportSession<
                        v1::ChatService::WithRawCallbackMethod_ImportSession<
                            v1::ChatService::WithRawCallbackMethod_RewindSession<
                                v1::ChatService::Service>>>>>>>>>;

class ChatServiceImpl final : public RawChatService {
 public:
  explicit ChatServiceImpl(const ServingState* state) : state_(state) {}

  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* ctx,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Chat(grpc::CallbackServerContext* ctx,
                                                   const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* ctx,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ForkSession(grpc::CallbackServerContext* ctx,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* ctx,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RewindSession(grpc::CallbackServerContext* ctx,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  // Snapshot streams (snapshot_reactors.h).
  grpc::ServerWriteReactor<grpc::ByteBuffer>* ExportSession(
      grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* ImportSession(grpc::CallbackServerContext* ctx,
                                                           grpc::ByteBuffer* response) override;

 private:
  const ServingState* state_;
};

class ModelServiceImpl final : public v1::ModelService::CallbackService {
 public:
  explicit ModelServiceImpl(const ServingState* state) : state_(state) {}

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  const ServingState* state_;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_SERVICES_H_
