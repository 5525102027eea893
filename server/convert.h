// The one place where the wire contract (xlstmd.v1 protobuf, grpc::Status) meets core's plain
// types (core::TurnRequest, core::TurnEvent, absl::Status). Everything here is a pure
// function of its arguments; any thread.
//
// Status codes pass through unchanged (absl and gRPC share the canonical code numbers);
// the message is kept as is, so what core says is what the client reads.
#ifndef XLSTMD_SERVER_CONVERT_H_
#define XLSTMD_SERVER_CONVERT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/engine/engine.h"
#include "core/engine/turn_stream.h"
#include "grpcpp/support/status.h"
#include "xlstmd/v1/chat.pb.h"

namespace xlstmd::server {

namespace v1 = ::xlstmd::v1;

// The gRPC status for `status`. A field error (base::FieldError) carries a google.rpc
// BadRequest, a capacity refusal (base::CapacityError) an ErrorInfo with its reason and a
// RetryInfo, in grpc-status-details-bin (the RPC interceptor adds grpc-retry-pushback-ms).
grpc::Status ToGrpcStatus(const absl::Status& status);
inline constexpr absl::string_view kErrorDomain = "xlstmd.dev";
// How long a client should wait before retrying after a capacity refusal for `reason`.
int64_t RetryDelayMs(absl::string_view reason);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Session ids are opaque to clients but always short and URL-safe, so anything else is
// malformed (INVALID_ARGUMENT naming `field`) rather than merely unknown (NOT_FOUND, which
// only the engine can tell). Empty is INVALID_ARGUMENT "<field> is required".
inline constexpr size_t kMaxSessionIdBytes = 128;
absl::Status ValidateSessionId(absl::string_view id, absl::string_view field = "session_id");

// The wire's "0 = off" conventions resolved: top_p 0 -> 1 and repetition_penalty 0 -> 1.
// seed 0 and max_tokens 0 stay 0 (the engine draws a seed / applies its default). Range
// checks are the engine's (core::ValidateSamplingConfig).
core::SamplingConfig ToSamplingConfig(const v1::SamplingParams& params);

// A Chat request as an engine turn for tenant `owner`. INVALID_ARGUMENT for a malformed
// session id, a missing input or an empty message.
absl::StatusOr<core::TurnRequest> ToTurnRequest(const v1::ChatRequest& request, std::string owner);

// One page of `owner`'s sessions, in id order after `page_token` (the last id of the previous
// page, so it stays valid while sessions come and go). `page_size` 0 = kDefaultPageSize,
// capped at kMaxPageSize; negative or a malformed token: INVALID_ARGUMENT. Shared by the
// gRPC ListSessions and the web port's GET /v1/sessions.
inline constexpr int32_t kDefaultPageSize = 100;
inline constexpr int32_t kMaxPageSize = 1000;
absl::StatusOr<v1::ListSessionsResponse> ListSessionsPage(const core::Engine& engine,
                                                          const std::string& owner,
                                                          int32_t page_size,
                                                          const std::string& page_token);

v1::FinishReason ToProto(core::FinishReason reason);
void ToProto(const core::TurnEvent& event, v1::ChatEvent* out);
void ToProto(const core::SessionInfo& info, v1::Session* out);
// `model_name` is what ModelInfo.model reports (the model directory's name).
void ToProto(const core::XlstmModel& model, const std::string& model_name, v1::ModelInfo* out);

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_CONVERT_H_
