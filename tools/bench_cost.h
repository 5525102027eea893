// The bench's cost model of the xLSTM-Large forward pass: DRAM bytes and FLOPs of a decode
// step and of a prefill, from the loaded model's dims, weight_bytes() and state size.
// Conventions: weights are read once per model invocation (all matrices except the
// embedding table, of which only the looked-up rows are read); the state is read and written
// once per step; FLOPs = 2 x matrix params per token plus the mLSTM cell.
#ifndef XLSTMD_TOOLS_BENCH_COST_H_
#define XLSTMD_TOOLS_BENCH_COST_H_

#include <cstdint>

#include "core/model/xlstm_model.h"
#include "tools/roofline.h"

namespace xlstmd::tools {

struct ModelCost {
  double matrix_params = 0;           // all matrices except the embedding (incl. lm_head)
  double lm_head_params = 0;          // vocab x E
  double weight_read_bytes = 0;       // weight_bytes() minus the embedding table
  double embedding_row_bytes = 0;     // one looked-up embedding row
  double state_bytes = 0;             // one session's state
  double step_cell_flops = 0;         // mLSTM cell FLOPs per token, recurrent step, all blocks
  double chunk_cell_flops_base = 0;   // per token per unit of chunk length (prefill intra-chunk)
  double chunk_cell_flops_fixed = 0;  // per token, chunkwise inter-chunk part
};

ModelCost ComputeModelCost(const core::XlstmModel& model);

// One Step over `batch` sessions.
Work DecodeStepWork(const ModelCost& cost, int64_t batch);
// One Prefill of a single `prompt_len`-token sequence with chunk size `chunk`, logits of
// the last position only.
Work PrefillWork(const ModelCost& cost, int64_t prompt_len, int64_t chunk);

}  // namespace xlstmd::tools

#endif  // XLSTMD_TOOLS_BENCH_COST_H_
