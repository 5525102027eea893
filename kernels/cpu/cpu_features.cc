#include "kernels/cpu/cpu_features.h"

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
  f.amx_bf16 = __builtin_cpu_supports("amx-bf16");
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
