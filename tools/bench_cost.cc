#include "tools/bench_cost.h"

#include <algorithm>

#include "kernels/backend.h"

namespace xlstmd::tools {

ModelCost ComputeModelCost(const core::XlstmModel& model) {
  const core::ModelConfig& c = model.config();
  const double e = static_cast<double>(c.embedding_dim);
  const double qk = static_cast<double>(c.qk_dim()), v = static_cast<double>(c.v_dim());
  const double f = static_cast<double>(c.ffn_dim()), nh = static_cast<double>(c.num_heads);
  const double vocab = static_cast<double>(c.vocab_size);
  const double dqk = static_cast<double>(c.dqk()), dv = static_cast<double>(c.dv());
  const double blocks = static_cast<double>(c.num_blocks);
  const double per_block = 2 * qk * e + 2 * v * e + 2 * nh * e + e * v + 3 * f * e;
  ModelCost cost;
  cost.matrix_params = blocks * per_block + vocab * e;
  cost.lm_head_params = vocab * e;
  // The matrices as stored (quantized ones included), less the embedding table, which a step
  // reads one row per token of.
  const double embedding_bytes = static_cast<double>(model.embedding_bytes());
  cost.weight_read_bytes =
      std::max(0.0, static_cast<double>(model.weight_bytes()) - embedding_bytes);
  cost.embedding_row_bytes = embedding_bytes / vocab;
  cost.state_bytes = static_cast<double>(model.state_bytes_per_session());
  // Step: C = f C + i k v^T (3 flops/element), h = C^T q (2), n update and q.n (~5 per dqk).
  cost.step_cell_flops = blocks * nh * (5 * dqk * dv + 5 * dqk);
  // Chunkwise: causal Q K^T and (.)V inside a chunk (~L/2 * 2 * (dqk + dv) per token), and
  // the inter-chunk q.C plus the chunk's K^T V state update (2 * 2 * dqk * dv per token).
  cost.chunk_cell_flops_base = blocks * nh * (dqk + dv);
  cost.chunk_cell_flops_fixed = blocks * nh * 4 * dqk * dv;
  return cost;
}

Work DecodeStepWork(const ModelCost& cost, int64_t batch) {
  const double b = static_cast<double>(batch);
  Work w;
  w.bytes = cost.weight_read_bytes + b * cost.embedding_row_bytes + 2 * b * cost.state_bytes;
  w.flops = b * (2 * cost.matrix_params + cost.step_cell_flops);
  return w;
}

Work PrefillWork(const ModelCost& cost, int64_t prompt_len, int64_t chunk) {
  const double p = static_cast<double>(prompt_len);
  const double l = static_cast<double>(std::min(chunk, prompt_len));
  Work w;
  w.bytes = cost.weight_read_bytes + p * cost.embedding_row_bytes + 2 * cost.state_bytes;
  const double body_params = cost.matrix_params - cost.lm_head_params;
  w.flops = p * (2 * body_params + l * cost.chunk_cell_flops_base + cost.chunk_cell_flops_fixed) +
            2 * cost.lm_head_params;
  return w;
}

}  // namespace xlstmd::tools
