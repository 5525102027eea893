// The portable mLSTM loops (mlstm_portable.inc) compiled with AVX2 + FMA flags, for the AVX2
// ISA setting. Entered only after run-time dispatch picked AVX2: everything but the two entry
// points has internal linkage (tests/layering/check_isa_objects.py checks).
#include <algorithm>
#include <cstdint>

#include "kernels/cpu/mlstm_cpu.h"

namespace xlstmd::kernels::cpu {
namespace {
#include "kernels/cpu/mlstm_portable.inc"
}  // namespace

float StepCoreAvx2(const float* q, const float* k, const float* v, float fa, float ia, float* C,
                   float* n, float* h, const MlstmDims& d) {
  return StepCorePortable(q, k, v, fa, ia, C, n, h, d);
}

void MatAccAvx2(const float* a, int64_t lda, int64_t rows, int64_t kdim, const float* b,
                int64_t ldb, int64_t n, float* out, int64_t ldo, float* row_acc) {
  MatAccPortable(a, lda, rows, kdim, b, ldb, n, out, ldo, row_acc);
}

}  // namespace xlstmd::kernels::cpu
