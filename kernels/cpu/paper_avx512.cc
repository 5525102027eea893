// The portable paper-family loops (paper_portable.inc) compiled for the Avx512 ISA setting.
// Entered only after run-time dispatch; everything but the entry points has internal linkage.
#include <cstdint>

namespace xlstmd::kernels::cpu {
namespace {
#include "kernels/cpu/paper_portable.inc"
}  // namespace

void HeadwiseNarrowAvx512(const float* x, int64_t ldx, int64_t rows, const float* w,
                          int64_t blocks, int64_t out, int64_t in, const float* b, float alpha,
                          float* y, int64_t ldy) {
  HeadwiseNarrowPortable(x, ldx, rows, w, blocks, out, in, b, alpha, y, ldy);
}

void ConvSeqAvx512(const float* x, int64_t ldx, int64_t len, const float* w, int64_t ldw,
                const float* b, float* win, int64_t ldwin, int64_t ks, int64_t n, float* y,
                int64_t ldy) {
  ConvSeqPortable(x, ldx, len, w, ldw, b, win, ldwin, ks, n, y, ldy);
}

}  // namespace xlstmd::kernels::cpu
