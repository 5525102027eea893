// Hardware limits for the bench roofline, measured with the tool's own loops (never with the
// project's GEMM, which is what the roofline judges): DRAM read bandwidth and the FMA compute
// peak, both on `threads` threads. Also the roofline verdict for a unit of work.
//
// Thread-compatible free functions; each spawns and joins its own threads.
#ifndef XLSTMD_TOOLS_ROOFLINE_H_
#define XLSTMD_TOOLS_ROOFLINE_H_

#include <cstddef>
#include <string>

namespace xlstmd::tools {

// Best-of-`passes` GB/s (1e9 bytes/s) reading a `buffer_bytes` buffer (first touched by the
// reading threads), each thread walking 4 interleaved streams of its own share. The buffer
// must dwarf the last-level cache (300 MiB on the target machine) to measure DRAM.
double MeasureDramReadGbps(int threads, size_t buffer_bytes, int passes);

struct FmaPeak {
  std::string isa;  // "avx512_fma", "avx2_fma" or "scalar"
  double gflops = 0;
};
// Best of a few ~0.2 s runs of a register-resident FMA loop on every thread, with the widest
// vectors the kernels use (`kernel_isa`, the backend's Isa(): "avx512", "avx2", "scalar";
// XLSTMD_CPU_ISA caps it) and the CPU has, so a capped run is judged against its own peak.
FmaPeak MeasureFmaPeak(int threads, const std::string& kernel_isa);

// The work of one model invocation.
struct Work {
  double bytes = 0;  // DRAM bytes that must move
  double flops = 0;
};

struct Roofline {
  std::string bound;         // "memory" or "compute"
  double limit_seconds = 0;  // time the bound's limit implies for the work
};
// Memory-bound when the work's bytes/flop exceed the machine balance (gbps / gflops).
Roofline Judge(const Work& work, double dram_gbps, double peak_gflops);

}  // namespace xlstmd::tools

#endif  // XLSTMD_TOOLS_ROOFLINE_H_
