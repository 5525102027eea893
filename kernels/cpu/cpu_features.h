// Run-time detection of the x86 instruction sets the CPU kernels can use.
//
// The environment variable XLSTMD_CPU_ISA (avx512 | avx2 | scalar) caps the choice, so CI
// and tests can exercise the fallbacks on an AVX-512 machine. Asking for more than the CPU
// has falls back to the best available level.
#ifndef XLSTMD_KERNELS_CPU_CPU_FEATURES_H_
#define XLSTMD_KERNELS_CPU_CPU_FEATURES_H_

namespace xlstmd::kernels::cpu {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

struct CpuFeatures {
  bool avx2_fma = false;
  bool avx512 = false;       // F + BW + DQ + VL
  bool avx512_bf16 = false;  // vdpbf16ps
  bool amx_bf16 = false;
};

CpuFeatures DetectCpuFeatures();
// Best level the CPU supports, capped by XLSTMD_CPU_ISA when set.
Isa SelectIsa();
// The ISA XLSTMD_CPU_ISA names; false when it is unset or not one of IsaName's names.
bool IsaCap(Isa* cap);
const char* IsaName(Isa isa);

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_CPU_FEATURES_H_
