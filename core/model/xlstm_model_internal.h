// Private pieces of XlstmModel shared by its two implementation files (load/state in
// xlstm_model.cc, forward pass in xlstm_forward.cc). Not for use outside core/model.
#ifndef XLSTMD_CORE_MODEL_XLSTM_MODEL_INTERNAL_H_
#define XLSTMD_CORE_MODEL_XLSTM_MODEL_INTERNAL_H_

#include <cstdint>
#include <vector>

#include "core/model/xlstm_model.h"
#include "kernels/backend.h"

namespace xlstmd::core {

using kernels::WeightMatrixPtr;

// Per-block weights in backend memory. The six projections that read the normed block input
// are one matrix (rows q | k | v | o | i | f) so a block issues one GEMM for all of them; the
// FFN gate and up projections are likewise one matrix (rows gate | up).
struct XlstmModel::BlockWeights {
  WeightMatrixPtr w_in;        // [2*qk + 2*v + 2*NH, E]
  WeightMatrixPtr w_out;       // [E, v]
  WeightMatrixPtr w_ffn_up;    // [2F, E]
  WeightMatrixPtr w_ffn_down;  // [E, F]
  float* norm_mlstm_w = nullptr;
  float* norm_mlstm_b = nullptr;
  float* in_bias = nullptr;    // [2*qk + 2*v + 2*NH] (use_bias; gate part zero)
  float* gate_bias = nullptr;  // [2*NH] = (igate bias | fgate bias)
  float* mh_norm_w = nullptr;
  float* mh_norm_b = nullptr;
  float* out_b = nullptr;
  float* norm_ffn_w = nullptr;
  float* norm_ffn_b = nullptr;
  float* ffn_up_b = nullptr;   // [2F]
  float* ffn_down_b = nullptr;

  // Family B (paper). norm_mlstm_w/b: xlstm_norm; mh_norm_w/b: the mLSTM outnorm; gate_bias:
  // (igate | fgate) biases; out_b: proj_down's bias; norm_ffn_w/b, w_ffn_up/down, ffn_*_b: the
  // sLSTM block's FFN. Norm scales are stored as 1 + w.
  bool slstm = false;
  WeightMatrixPtr w_up;        // mLSTM proj_up [2*Din, E]
  WeightMatrixPtr w_gates;     // mLSTM [2*NH, 3*Din] (igate | fgate)
  WeightMatrixPtr w_down;      // mLSTM proj_down [E, Din]
  float* up_b = nullptr;       // [2*Din]
  float* conv_w = nullptr;     // [ks, D] (transposed from [D, 1, ks])
  float* conv_b = nullptr;     // [D]
  float* hw[4] = {};  // mLSTM q, k, v [Din/bs, bs, bs]; sLSTM i, f, z, o [NH, DH, DH]; as [P, I, O]
  float* hw_b[3] = {};         // mLSTM q, k, v biases [Din]
  float* skip = nullptr;       // mLSTM learnable_skip [Din]
  float* s_recurrent = nullptr;  // sLSTM [NH, DH, 4*DH] ("cuda" layout)
  float* s_bias = nullptr;       // sLSTM [NH, 4, DH] ("cuda" layout)
  float* group_norm_w = nullptr; // sLSTM [E]
};

// Activation buffers for up to `capacity` token rows (one window), carved from one backend
// allocation, plus the logits buffer and the index arrays of a window.
struct XlstmModel::Workspace {
  int64_t capacity = 0;
  bool reserved = false;     // Reserve() was called: never grow again
  kernels::DeviceBuffer base;
  float* x = nullptr;      // [rows, E] residual stream
  float* hn = nullptr;     // [rows, E] normed input
  float* proj = nullptr;   // [rows, P] q | k | v | o | i | f
  float* hcell = nullptr;  // [rows, v]
  float* hgate = nullptr;  // [rows, v]
  float* ffn = nullptr;    // [rows, 2F]
  float* act = nullptr;    // [rows, F]
  // Family B uses the same buffers with its own widths (ActivationFloats): proj = up-projection
  // (xm | z) or the sLSTM gate inputs; hgate = the conv output; ffn = q | k | v | i | f of an
  // mLSTM block or the sLSTM FFN's up-projection; act = the input of the down-projections.
  kernels::DeviceBuffer logits;     // [logits_capacity, vocab]
  kernels::HostBuffer host_logits;  // its host copy (device backends only)
  int64_t logits_capacity = 0;
  int64_t logits_done = 0;          // rows of this call in `logits` so far
  kernels::HostBuffer host_index;   // IndexAt(.., capacity) layout
  kernels::DeviceBuffer dev_index;   // unset on a host-visible backend (host_index is read)
};

// The index arrays of one window inside an index buffer (IndexAt).
struct XlstmModel::IndexArrays {
  int64_t* row_begin;  // [sequences]
  int64_t* length;     // [sequences]
  int32_t* ids;        // [rows]
  int32_t* slots;      // [sequences] (= rows in a step)
  int32_t* gather;     // [logit rows] window rows whose logits are wanted (kLast)
};

// One window of a forward call, on the host.
struct XlstmModel::Window {
  std::vector<int32_t> ids, slots, gather;
  std::vector<int64_t> row_begin, length;
  int64_t rows() const { return static_cast<int64_t>(ids.size()); }
  void Clear() {
    ids.clear();
    slots.clear();
    gather.clear();
    row_begin.clear();
    length.clear();
  }
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_XLSTM_MODEL_INTERNAL_H_
