// CPU mLSTM cell: the recurrent step (decode) and the chunkwise-parallel form (prefill),
// xlstm-spec.md sections 2.1 and 2.3. Parallel over (session, head) pairs.
#ifndef XLSTMD_KERNELS_CPU_MLSTM_CPU_H_
#define XLSTMD_KERNELS_CPU_MLSTM_CPU_H_

#include "kernels/cpu/thread_pool.h"
#include "kernels/op_params.h"

namespace xlstmd::kernels::cpu {

void MlstmStep(ThreadPool& pool, const MlstmStepParams& p);
void MlstmChunkwise(ThreadPool& pool, const MlstmChunkParams& p);

}  // namespace xlstmd::kernels::cpu

#endif  // XLSTMD_KERNELS_CPU_MLSTM_CPU_H_
