// Which refusals are about capacity (come back later: the same request can succeed) rather
// than about the request itself (a prompt over the limit never fits). Both are
// RESOURCE_EXHAUSTED on gRPC; the web transport must tell them apart (429 with Retry-After
// vs 400), and it decides from this payload, never from message text.
#ifndef XLSTMD_CORE_BASE_RETRY_H_
#define XLSTMD_CORE_BASE_RETRY_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace xlstmd::base {

inline constexpr absl::string_view kCapacityPayloadUrl = "type.xlstmd.dev/capacity";

// `status` marked as a capacity refusal.
inline absl::Status CapacityError(absl::Status status) {
  status.SetPayload(kCapacityPayloadUrl, absl::Cord("retry"));
  return status;
}
inline absl::Status CapacityError(absl::string_view message) {
  return CapacityError(absl::ResourceExhaustedError(message));
}

inline bool IsCapacityError(const absl::Status& status) {
  return status.GetPayload(kCapacityPayloadUrl).has_value();
}

}  // namespace xlstmd::base

#endif  // XLSTMD_CORE_BASE_RETRY_H_
