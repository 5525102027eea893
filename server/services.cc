#include "server/services.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/base/retry.h"
#include "server/build_info.h"
#include "server/chat_reactor.h"
#include "server/convert.h"
#include "server/grpc_post.h"
#include "server/raw_messages.h"
#include "server/snapshot_reactors.h"

namespace xlstmd::server {
namespace {

// Authenticates the call (before anything else looks at it, so an unauthenticated caller
// learns nothing) and fetches the engine.
absl::Status Enter(const ServingState& state, grpc::CallbackServerContext* ctx, std::string* tenant,
                   core::Engine** engine) {
  std::vector<absl::string_view> authorization;
  if (state.auth().enabled()) {
    const auto range = ctx->client_metadata().equal_range("authorization");
    for (auto it = range.first; it != range.second; ++it) {
      authorization.emplace_back(it->second.data(), it->second.size());
    }
  }
  absl::StatusOr<std::string> who = state.auth().Authenticate(authorization);
  if (!who.ok()) return who.status();
  *tenant = *std::move(who);
  *engine = state.engine();
  if (*engine == nullptr) {
    return absl::UnavailableError("model loading; retry shortly");
  }
  return absl::OkStatus();
}

// Envoy's ring hash routes on the x-session-id metadata (docs/deploy.md). One that names
// another session than the request would place this session's turns by the other's hash: each
// would land on a pod that restores it from Redis. The mismatch is a client bug; say so.
absl::Status CheckAffinityMetadata(const grpc::CallbackServerContext* ctx,
                                   absl::string_view session_id) {
  const auto range = ctx->client_metadata().equal_range("x-session-id");
  for (auto it = range.first; it != range.second; ++it) {
    if (absl::string_view(it->second.data(), it->second.size()) != session_id) {
      return absl::InvalidArgumentError(
          "x-session-id metadata names another session than the request's session_id (send "
          "the same id in both, or leave the metadata out)");
    }
  }
  return absl::OkStatus();
}

// Takes one of --max-streams for a streaming call; RESOURCE_EXHAUSTED when all are open.
absl::Status TakeStream(const ServingState& state, BudgetHold* hold) {
  if (hold->Take(state.streams(), 1)) return absl::OkStatus();
  return base::CapacityError(absl::StrCat("too many open streams (--max-streams ",
                                                   state.streams()->limit(), "); retry later"),
                             base::kShedStreams);
}

grpc::ServerUnaryReactor* FinishWith(grpc::ServerUnaryReactor* reactor,
                                     const absl::Status& status) {
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// The common start of a unary RPC: authenticate, fetch the engine, parse the request and,
// when it names a session, validate the id. On failure the call is finished (false).
template <typename Request>
bool BeginUnary(const ServingState& state, grpc::CallbackServerContext* ctx,
                const grpc::ByteBuffer* request, grpc::ServerUnaryReactor* reactor,
                std::string* tenant, core::Engine** engine, Request* req) {
  absl::Status s = Enter(state, ctx, tenant, engine);
  if (s.ok()) s = ParseRequest(request, req);
  if constexpr (requires { req->session_id(); }) {
    if (s.ok()) s = ValidateSessionId(req->session_id());
    if (s.ok()) s = CheckAffinityMetadata(ctx, req->session_id());
  }
  if (s.ok()) return true;
  FinishWith(reactor, s);
  return false;
}

// Completion of the engine's asynchronous session calls: they arrive on the engine thread (or
// its I/O pool), which only posts; conversion and Finish run on a gRPC thread.
std::function<void(absl::StatusOr<core::SessionInfo>)> FinishWithSession(
    grpc::ServerUnaryReactor* reactor, grpc::ByteBuffer* response) {
  return [reactor, response](absl::StatusOr<core::SessionInfo> info) {
    RunOnGrpcThread([reactor, response, info = std::move(info)] {
      if (!info.ok()) {
        reactor->Finish(ToGrpcStatus(info.status()));
        return;
      }
      v1::Session session;
      ToProto(*info, &session);
      reactor->Finish(SerializeResponse(session, response));
    });
  };
}

}  // namespace

grpc::ServerUnaryReactor* ChatServiceImpl::CreateSession(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  std::string tenant;
  core::Engine* engine = nullptr;
  v1::CreateSessionRequest req;
  if (!BeginUnary(*state_, ctx, request, reactor, &tenant, &engine, &req)) return reactor;
  engine->CreateSession(std::move(tenant), std::move(*req.mutable_system_prompt()),
                        FinishWithSession(reactor, response));
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ChatServiceImpl::Chat(grpc::CallbackServerContext* ctx,
                                                                  const grpc::ByteBuffer* request) {
  auto* reactor = new ChatReactor(ctx, &state_->observability());
  std::string tenant;
  core::Engine* engine = nullptr;
  absl::Status s = TakeStream(*state_, &reactor->stream_hold);
  if (s.ok()) s = Enter(*state_, ctx, &tenant, &engine);
  if (!s.ok()) {
    reactor->Reject(s);
    return reactor;
  }
  v1::ChatRequest req;
  if (s = ParseRequest(request, &req); s.ok()) {
    s = CheckOneofConflict(request, {v1::ChatRequest::kMessageFieldNumber,
                                     v1::ChatRequest::kTokensFieldNumber},
                           "input");
  }
  if (!s.ok()) {
    reactor->Reject(s);
    return reactor;
  }
  reactor->Describe(tenant, req);
  absl::StatusOr<core::TurnRequest> turn = ToTurnRequest(req, std::move(tenant));
  if (turn.ok()) {
    if (absl::Status a = CheckAffinityMetadata(ctx, turn->session_id); !a.ok()) turn = a;
  }
  if (!turn.ok()) {
    reactor->Reject(turn.status());
    return reactor;
  }
  // A Redis lookup before the turn (engine.h) gives up at the call's deadline.
  if (ctx->deadline() != std::chrono::system_clock::time_point::max()) {
    turn->deadline = absl::FromChrono(ctx->deadline());
  }
  absl::StatusOr<std::shared_ptr<core::TurnStream>> stream =
      engine->StartTurn(*std::move(turn), [reactor] { reactor->Wake(); });
  if (!stream.ok()) {
    reactor->Reject(stream.status());
    return reactor;
  }
  reactor->Attach(*std::move(stream));
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::GetSession(grpc::CallbackServerContext* ctx,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  std::string tenant;
  core::Engine* engine = nullptr;
  v1::GetSessionRequest req;
  if (!BeginUnary(*state_, ctx, request, reactor, &tenant, &engine, &req)) return reactor;
  // Asynchronous: with a Redis tier the lookup must not hold this gRPC thread.
  engine->LookupSession(std::move(tenant), std::move(*req.mutable_session_id()),
                        FinishWithSession(reactor, response));
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::ListSessions(grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  std::string tenant;
  core::Engine* engine = nullptr;
  v1::ListSessionsRequest req;
  if (!BeginUnary(*state_, ctx, request, reactor, &tenant, &engine, &req)) return reactor;
  absl::StatusOr<v1::ListSessionsResponse> out =
      ListSessionsPage(*engine, tenant, req.page_size(), req.page_token());
  if (!out.ok()) return FinishWith(reactor, out.status());
  reactor->Finish(SerializeResponse(*out, response));
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::ForkSession(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  std::string tenant;
  core::Engine* engine = nullptr;
  v1::ForkSessionRequest req;
  if (!BeginUnary(*state_, ctx, request, reactor, &tenant, &engine, &req)) return reactor;
  if (req.has_version()) {
    engine->ForkSessionAt(std::move(tenant), std::move(*req.mutable_session_id()), req.version(),
                          FinishWithSession(reactor, response));
    return reactor;
  }
  engine->ForkSession(std::move(tenant), std::move(*req.mutable_session_id()),
                      FinishWithSession(reactor, response));
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::RewindSession(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  std::string tenant;
  core::Engine* engine = nullptr;
  v1::RewindSessionRequest req;
  if (!BeginUnary(*state_, ctx, request, reactor, &tenant, &engine, &req)) return reactor;
  engine->RewindSession(std::move(tenant), std::move(*req.mutable_session_id()), req.version(),
                        FinishWithSession(reactor, response));
  return reactor;
}

grpc::ServerUnaryReactor* ChatServiceImpl::DeleteSession(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  std::string tenant;
  core::Engine* engine = nullptr;
  v1::DeleteSessionRequest req;
  if (!BeginUnary(*state_, ctx, request, reactor, &tenant, &engine, &req)) return reactor;
  engine->DeleteSession(std::move(tenant), std::move(*req.mutable_session_id()),
                        [reactor, response](absl::Status status) {
                          RunOnGrpcThread([reactor, response, status] {
                            if (!status.ok()) {
                              reactor->Finish(ToGrpcStatus(status));
                              return;
                            }
                            reactor->Finish(
                                SerializeResponse(v1::DeleteSessionResponse(), response));
                          });
                        });
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ChatServiceImpl::ExportSession(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) {
  auto* reactor = new ExportReactor(ctx);
  std::string tenant;
  core::Engine* engine = nullptr;
  absl::Status s = TakeStream(*state_, &reactor->stream_hold);
  if (s.ok()) s = Enter(*state_, ctx, &tenant, &engine);
  if (!s.ok()) {
    reactor->Reject(s);
    return reactor;
  }
  v1::ExportSessionRequest req;
  s = ParseRequest(request, &req);
  if (s.ok()) s = ValidateSessionId(req.session_id());
  if (s.ok()) s = CheckAffinityMetadata(ctx, req.session_id());
  if (!s.ok()) {
    reactor->Reject(s);
    return reactor;
  }
  reactor->Start(engine, std::move(tenant), std::move(*req.mutable_session_id()),
                 state_->snapshot_budgets());
  return reactor;
}

grpc::ServerReadReactor<grpc::ByteBuffer>* ChatServiceImpl::ImportSession(
    grpc::CallbackServerContext* ctx, grpc::ByteBuffer* response) {
  auto* reactor = new ImportReactor(ctx, response);
  std::string tenant;
  core::Engine* engine = nullptr;
  absl::Status s = TakeStream(*state_, &reactor->stream_hold);
  if (s.ok()) s = Enter(*state_, ctx, &tenant, &engine);
  if (!s.ok()) {
    reactor->Reject(s);
    return reactor;
  }
  reactor->Start(engine, std::move(tenant), state_->snapshot_budgets());
  return reactor;
}

grpc::ServerUnaryReactor* ModelServiceImpl::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                         const v1::GetModelInfoRequest* request,
                                                         v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  std::string tenant;
  core::Engine* engine = nullptr;
  if (absl::Status s = Enter(*state_, ctx, &tenant, &engine); !s.ok()) {
    return FinishWith(reactor, s);
  }
  ToProto(engine->model(), state_->model_name(), response);
  response->set_max_snapshot_bytes(engine->max_snapshot_bytes());
  response->set_random_weights(state_->random_weights());
  response->set_server_version(kBuildVersion);
  response->set_server_commit(kBuildCommit);
  response->set_server_build_type(kBuildType);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace xlstmd::server
