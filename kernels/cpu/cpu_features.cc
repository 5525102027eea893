#include "kernels/cpu/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace xlstmd::kernels::cpu {

CpuFeatures DetectCpuFeatures() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  f.avx512_bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16");
  // CPUID.(EAX=7,ECX=0):EDX[22]. Read directly: clang 14 has no "amx-bf16" feature name
  // for __builtin_cpu_supports (the sanitizer builds use clang).
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  f.amx_bf16 = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) != 0 && (edx & (1u << 22)) != 0;
#endif
  return f;
}

bool IsaCap(Isa* cap) {
  const char* v = std::getenv("XLSTMD_CPU_ISA");
  if (v == nullptr) return false;
  for (Isa each : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (std::strcmp(v, IsaName(each)) == 0) {
      *cap = each;
      return true;
    }
  }
  return false;
}

Isa SelectIsa() {
  const CpuFeatures f = DetectCpuFeatures();
  Isa best = f.avx512 ? Isa::kAvx512 : (f.avx2_fma ? Isa::kAvx2 : Isa::kScalar);
  Isa cap;
  if (IsaCap(&cap) && static_cast<int>(cap) < static_cast<int>(best)) best = cap;
  return best;
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kScalar:
      return "scalar";
  }
  return "unknown";
}

}  // namespace xlstmd::kernels::cpu
