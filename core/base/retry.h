// Which refusals are about capacity (come back later: the same request can succeed) rather
// than about the request itself (a prompt over the limit never fits), and which request field
// an INVALID_ARGUMENT is about. Both travel as absl::Status payloads, so core/ stays free of
// any transport: gRPC turns them into google.rpc error details (RetryInfo, ErrorInfo,
// BadRequest) and the grpc-retry-pushback-ms trailer; the web transport into 429 with
// Retry-After vs 400. Transports decide from these payloads, never from message text.
#ifndef XLSTMD_CORE_BASE_RETRY_H_
#define XLSTMD_CORE_BASE_RETRY_H_

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace xlstmd::base {

inline constexpr absl::string_view kCapacityPayloadUrl = "type.xlstmd.dev/capacity";
inline constexpr absl::string_view kFieldPayloadUrl = "type.xlstmd.dev/field";

// Why a capacity refusal happened; the names are the ErrorInfo reasons clients see and the
// `reason` label of xlstmd_requests_shed_total.
inline constexpr absl::string_view kShedQueueFull = "QUEUE_FULL";
inline constexpr absl::string_view kShedTenantQueue = "TENANT_QUEUE_QUOTA";
inline constexpr absl::string_view kShedMaxSessions = "MAX_SESSIONS";
inline constexpr absl::string_view kShedTenantSessions = "TENANT_SESSION_QUOTA";
inline constexpr absl::string_view kShedStateCapacity = "STATE_CAPACITY";
inline constexpr absl::string_view kShedStreams = "MAX_STREAMS";
inline constexpr absl::string_view kShedSnapshotBytes = "SNAPSHOT_BYTES";
inline constexpr absl::string_view kShedTenantSnapshotBytes = "TENANT_SNAPSHOT_QUOTA";

// `status` (RESOURCE_EXHAUSTED) marked as a capacity refusal for `reason` (one of above).
inline absl::Status CapacityError(absl::Status status, absl::string_view reason) {
  status.SetPayload(kCapacityPayloadUrl, absl::Cord(reason));
  return status;
}
inline absl::Status CapacityError(absl::string_view message, absl::string_view reason) {
  return CapacityError(absl::ResourceExhaustedError(message), reason);
}

inline bool IsCapacityError(const absl::Status& status) {
  return status.GetPayload(kCapacityPayloadUrl).has_value();
}
// The reason a capacity refusal carries; empty for any other status.
inline std::string CapacityReason(const absl::Status& status) {
  const auto p = status.GetPayload(kCapacityPayloadUrl);
  return p.has_value() ? std::string(*p) : std::string();
}

// INVALID_ARGUMENT about request field `field` (a dotted path such as "sampling.max_tokens").
inline absl::Status FieldError(absl::string_view field, absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kFieldPayloadUrl, absl::Cord(field));
  return status;
}
// The field an error names; empty when it names none.
inline std::string ErrorField(const absl::Status& status) {
  const auto p = status.GetPayload(kFieldPayloadUrl);
  return p.has_value() ? std::string(*p) : std::string();
}

}  // namespace xlstmd::base

#endif  // XLSTMD_CORE_BASE_RETRY_H_
