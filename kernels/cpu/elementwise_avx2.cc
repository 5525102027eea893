// The pointwise row loops of vmath.h (vector exp/tanh/sigmoid) compiled for AVX2 + FMA.
//
// Compiled with AVX2 + FMA flags and only entered after run-time dispatch: everything except
// the entry points is in an anonymous namespace (see kernels/CMakeLists.txt).

#include <cstdint>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/vmath.h"

namespace xlstmd::kernels::cpu {

XLSTMD_VMATH_ENTRY_POINTS(Avx2, Avx2Vec)

}  // namespace xlstmd::kernels::cpu
