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

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_MLSTM_CPU_H_
