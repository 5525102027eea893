#include "tools/bench_cost.h"

#include <algorithm>

#include "kernels/backend.h"

namespace xlstmd::tools {

namespace {

// Family B: per mLSTM block proj_up, the gates, proj_down and the headwise q/k/v (k twice:
// unscaled for the gates, scaled for the cell); per sLSTM block the four headwise gate
// projections, the recurrent kernel and the gated FFN.
void PaperCost(const core::XlstmModel& model, ModelCost* cost) {
  const core::ModelConfig& c = model.config();
  const core::PaperConfig& p = c.paper;
  const double e = static_cast<double>(c.embedding_dim);
  double params = 0, cell = 0, chunk_base = 0, chunk_fixed = 0;
  for (bool slstm : p.slstm) {
    if (slstm) {
      const double dh = static_cast<double>(p.s_dh(c.embedding_dim));
      const double f = static_cast<double>(p.ff_dim(c.embedding_dim));
      params += 4 * e * dh + 4 * e * dh + (p.s_ffn ? 3 * f * e : 0);  // gates, kernel, FFN
      const double conv = 2 * static_cast<double>(p.s_conv) * e;
      cell += 20 * e + conv;  // pointwise gates and state update
      chunk_fixed += 20 * e + conv;
    } else {
      const double din = static_cast<double>(p.m_inner(c.embedding_dim));
      const double nh = static_cast<double>(p.m_heads), dh = din / nh;
      const double bs = static_cast<double>(p.m_qkv_blocksize);
      params += 3 * din * e + 6 * nh * din + 4 * din * bs;
      const double conv = 2 * static_cast<double>(p.m_conv) * din;
      cell += nh * (5 * dh * dh + 5 * dh) + conv;
      chunk_base += nh * 2 * dh;
      chunk_fixed += nh * 4 * dh * dh + conv;
    }
  }
  const double vocab = static_cast<double>(c.vocab_size);
  cost->matrix_params = params + vocab * e;
  cost->lm_head_params = vocab * e;
  cost->step_cell_flops = cell;
  cost->chunk_cell_flops_base = chunk_base;
  cost->chunk_cell_flops_fixed = chunk_fixed;
}

}  // namespace

ModelCost ComputeModelCost(const core::XlstmModel& model) {
  const core::ModelConfig& c = model.config();
  if (c.family == core::ModelFamily::kPaper) {
    ModelCost cost;
    PaperCost(model, &cost);
    const double embedding_bytes = static_cast<double>(model.embedding_bytes());
    // The headwise projections and recurrent kernels are float32 vectors beside the matrices,
    // streamed every step like them.
    cost.weight_read_bytes = std::max(0.0, static_cast<double>(model.weight_bytes()) +
                                               static_cast<double>(model.vector_bytes()) -
                                               embedding_bytes);
    cost.embedding_row_bytes = embedding_bytes / static_cast<double>(c.vocab_size);
    cost.state_bytes = static_cast<double>(model.state_bytes_per_session());
    return cost;
  }
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
