// Unpredictable bytes from the kernel (getrandom): session ids, sampling seeds.
#ifndef XLSTMD_CORE_BASE_RANDOM_H_
#define XLSTMD_CORE_BASE_RANDOM_H_

#include <cstddef>
#include <cstdint>

namespace xlstmd::base {

// Fills dst[0, n). Aborts if the kernel has no getrandom (Linux < 3.17): nothing sensible to
// fall back to for ids that must not be guessable.
void RandomBytes(void* dst, size_t n);

// A random non-zero 64-bit value (0 means "no seed" in sampling configs).
uint64_t RandomNonZeroU64();

}  // namespace xlstmd::base

#endif  // XLSTMD_CORE_BASE_RANDOM_H_
