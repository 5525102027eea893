// Status propagation macros. Debian's Abseil 20220623 ships no status_macros.h, so these two
// stand in for the usual RETURN_IF_ERROR / ASSIGN_OR_RETURN.
//
//   XLSTMD_RETURN_IF_ERROR(DoThing());                       // DoThing() -> absl::Status
//   XLSTMD_ASSIGN_OR_RETURN(std::string s, ReadThing());     // ReadThing() -> StatusOr<string>
//   XLSTMD_ASSIGN_OR_RETURN(existing_var, ReadThing());
//
// On error both return the status unchanged from the enclosing function, which must return
// absl::Status or absl::StatusOr<U>. Each expression is evaluated exactly once.
// XLSTMD_ASSIGN_OR_RETURN expands to several statements: do not use it as the lone body of an
// unbraced `if`/`for`, and `lhs` must not contain an unparenthesized comma.
#ifndef XLSTMD_CORE_BASE_STATUS_MACROS_H_
#define XLSTMD_CORE_BASE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define XLSTMD_RETURN_IF_ERROR(expr)                       \
  do {                                                     \
    ::absl::Status xlstmd_return_if_error_status = (expr); \
    if (!xlstmd_return_if_error_status.ok()) {             \
      return xlstmd_return_if_error_status;                \
    }                                                      \
  } while (false)

// Two-level concatenation so that __LINE__ is expanded before pasting; the per-line name lets
// several XLSTMD_ASSIGN_OR_RETURN share one scope.
#define XLSTMD_MACROS_CONCAT_IMPL(a, b) a##b
#define XLSTMD_MACROS_CONCAT(a, b) XLSTMD_MACROS_CONCAT_IMPL(a, b)

#define XLSTMD_ASSIGN_OR_RETURN(lhs, rexpr) \
  XLSTMD_ASSIGN_OR_RETURN_IMPL(XLSTMD_MACROS_CONCAT(xlstmd_assign_or_return_, __LINE__), lhs, rexpr)

#define XLSTMD_ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) {                                    \
    return std::move(statusor).status();                   \
  }                                                        \
  lhs = std::move(statusor).value()

#endif  // XLSTMD_CORE_BASE_STATUS_MACROS_H_
