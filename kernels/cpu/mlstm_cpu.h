// CPU mLSTM cell: the recurrent step (decode) and the chunkwise-parallel form (prefill),
// xlstm-spec.md sections 2.1 and 2.3. Parallel over (session, head) pairs.
#ifndef XLSTMD_KERNELS_CPU_MLSTM_CPU_H_
#define XLSTMD_KERNELS_CPU_MLSTM_CPU_H_

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {

// `isa` selects the AVX-512 kernels or the portable ones (default: the process-wide choice).
void MlstmStep(ThreadPool& pool, const MlstmStepParams& p, Isa isa = SelectIsa());
void MlstmChunkwise(ThreadPool& pool, const MlstmChunkParams& p, Isa isa = SelectIsa());

// out[r, j] += sum_{kk < kdim} a[r, kk] * b[kk, j] for r < rows, j < n: the cell's small dense
// products, register-tiled on AVX-512. Each out element is one multiply-add chain over kk in
// order, so a row's result does not depend on `rows` (the sLSTM's batched recurrent product
// relies on that for batch invariance).
void MatAcc(Isa isa, const float* a, int64_t lda, int64_t rows, int64_t kdim, const float* b,
            int64_t ldb, int64_t n, float* out, int64_t ldo);

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_MLSTM_CPU_H_
