// Status propagation macros (Debian's Abseil 20220623 ships none).
//
//   XLSTMD_RETURN_IF_ERROR(expr);            // expr yields absl::Status
//   XLSTMD_ASSIGN_OR_RETURN(lhs, rexpr);     // rexpr yields absl::StatusOr<T>
//
// Both return the error status unchanged from the enclosing function, which must return
// absl::Status or absl::StatusOr<U>.
#ifndef XLSTMD_CORE_BASE_STATUS_MACROS_H_
#define XLSTMD_CORE_BASE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define XLSTMD_STATUS_CONCAT_INNER(a, b) a##b
#define XLSTMD_STATUS_CONCAT(a, b) XLSTMD_STATUS_CONCAT_INNER(a, b)

#define XLSTMD_RETURN_IF_ERROR(expr)                      \
  do {                                                    \
    const ::absl::Status xlstmd_status_ = (expr);         \
    if (!xlstmd_status_.ok()) return xlstmd_status_;      \
  } while (false)

#define XLSTMD_ASSIGN_OR_RETURN(lhs, rexpr) \
  XLSTMD_ASSIGN_OR_RETURN_IMPL(XLSTMD_STATUS_CONCAT(xlstmd_statusor_, __LINE__), lhs, rexpr)

#define XLSTMD_ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // XLSTMD_CORE_BASE_STATUS_MACROS_H_
