// The ISA-specific inner loops of the roofline measurements (roofline.h). Each lives in its
// own *_avx512.cc file, compiled with AVX-512 flags: call only after
// __builtin_cpu_supports("avx512f") returned true. Thread-safe (pure functions).
#ifndef XLSTMD_TOOLS_ROOFLINE_KERNELS_H_
#define XLSTMD_TOOLS_ROOFLINE_KERNELS_H_

#include <cstddef>
#include <cstdint>

namespace xlstmd::tools {

// Reads [base, base + floats) as 4 interleaved streams (the range cut in 4 contiguous parts,
// walked side by side, 2 cache lines per stream per iteration) with 64-byte loads; returns
// the sum so the reads cannot be elided. `base` 64-byte aligned, `floats` a multiple of 128.
float ReadStreamsAvx512(const float* base, size_t floats);

// Runs `iterations` x 12 independent 16-lane vfmadd231ps (12 * 16 * 2 flops per iteration)
// on register-resident accumulators; returns a checksum.
float FmaLoopAvx512(int64_t iterations);

}  // namespace xlstmd::tools

#endif  // XLSTMD_TOOLS_ROOFLINE_KERNELS_H_
