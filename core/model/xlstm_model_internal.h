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
