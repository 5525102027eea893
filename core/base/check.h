// XLSTMD_CHECK: for invariants that "should never happen" (programming errors), never for
// request data or files, which get an absl::Status instead (STYLE.md rule 3). A failed check
// logs the condition and location to stderr and aborts.
#ifndef XLSTMD_CORE_BASE_CHECK_H_
#define XLSTMD_CORE_BASE_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define XLSTMD_CHECK(cond)                                                         \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                \
    }                                                                              \
  } while (false)

#ifdef NDEBUG
#define XLSTMD_DCHECK(cond) \
  do {                      \
  } while (false)
#else
#define XLSTMD_DCHECK(cond) XLSTMD_CHECK(cond)
#endif

#endif  // XLSTMD_CORE_BASE_CHECK_H_
