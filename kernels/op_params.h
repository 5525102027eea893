// POD parameter structs for every Backend op, shared by the CPU and CUDA implementations.
//
// Each struct carries raw pointers into backend memory (host memory for the CPU backend,
// device memory for CUDA; index arrays too), sizes and row strides in elements, and, for
// recurrent ops, the state-slot indices of the sessions in the batch. Shapes are written as
// `// [rows, cols]`. The params do not own anything. Activations and states are always float32; weights are in the backend's
// storage dtype behind a `WeightMatrix` handle. Ops do not validate their params: the caller
// (core/model's XlstmModel, whose shapes come from the checked model config and whose token ids
// and state slots are checked by ValidateTokens / ValidateSlots before every forward call) must
// pass consistent ones. (UploadMatrix, which is not an op, does check its arguments.)
#ifndef XLSTMD_KERNELS_OP_PARAMS_H_
#define XLSTMD_KERNELS_OP_PARAMS_H_

#include <cstddef>
#include <cstdint>

namespace xlstmd::kernels {

// kF32/kBF16/kF16 are element types (of host data and of float weight storage). kI8 and kQ4
// are quantized weight storage formats only (kernels/quant.h): symmetric int8 with one scale
// per output row, and 4-bit with one f16 scale per group of 32 along K.
enum class DType : int32_t { kF32 = 0, kBF16 = 1, kF16 = 2, kI8 = 3, kQ4 = 4 };
inline bool IsQuantized(DType t) { return t == DType::kI8 || t == DType::kQ4; }

// Backend-owned, immutable weight matrix W [rows, cols] (row-major as in the checkpoint:
// rows = output features, cols = input features), made by Backend::UploadMatrix. Opaque:
// each backend derives its own representation (layout, packing, quantization) and only the
// backend that made a matrix may read or free it; everyone else holds the handle.
class WeightMatrix {
 public:
  virtual ~WeightMatrix() = default;

 protected:
  WeightMatrix() = default;
};

// y[m, n] = (accumulate ? y[m, n] : 0) + sum_k x[m, k] * W[n, k]   (PyTorch x @ W^T)
// The per-element reduction order is independent of M and of the thread split, so a row's
// result is bit-identical whatever else is in the batch (batch invariance).
struct MatMulParams {
  const float* x;  // [m, k], row stride ldx
  const WeightMatrix* w;  // [n, k]
  float* y;        // [m, n], row stride ldy
  int64_t m;
  int64_t ldx;
  int64_t ldy;
  bool accumulate;
};

// y = x / sqrt(mean(x^2) + eps) * w (+ b). Reductions in float32.
struct RmsNormParams {
  const float* x;   // [rows, dim], stride ldx
  const float* w;   // [dim]
  const float* b;   // [dim] or nullptr
  float* y;         // [rows, dim], stride ldy (may alias x when ldx == ldy)
  int64_t rows;
  int64_t dim;
  int64_t ldx;
  int64_t ldy;
  float eps;
};

// y[r, :] = float32(table[ids[r], :]); ids must be in [0, table rows), or -1 for a padding
// row (y[r, :] = 0).
struct EmbedParams {
  const WeightMatrix* table;  // [vocab, dim], f32 or bf16 (never quantized)
  const int32_t* ids;         // [rows] (backend memory)
  float* y;                   // [rows, dim], stride ldy
  int64_t rows;
  int64_t ldy;
};

// x[r, c] = cap > 0 ? cap * tanh((x[r, c] + b[c]) / cap) : x[r, c] + b[c]. In place.
struct BiasSoftCapParams {
  float* x;        // [rows, cols], stride ldx
  const float* b;  // [cols] or nullptr
  int64_t rows;
  int64_t cols;
  int64_t ldx;
  float cap;
};

// y[r, :] = silu(gate[r, :]) * up[r, :]
struct SwiGluParams {
  const float* gate;  // [rows, dim], stride ld_in
  const float* up;    // [rows, dim], stride ld_in
  float* y;           // [rows, dim], stride ldy
  int64_t rows;
  int64_t dim;
  int64_t ld_in;
  int64_t ldy;
};

// Per head j: y[r, j*dh:(j+1)*dh] = LN0(h[r, head j]; eps) * w[..] (+ b[..]) * sigmoid(o[r, ..])
// (family A `multihead_norm` fused with the output gate).
struct HeadNormGateParams {
  const float* h;  // [rows, heads*dh], stride ldh
  const float* o;  // [rows, heads*dh] output-gate pre-activations, stride ldo
  const float* w;  // [heads*dh]
  const float* b;  // [heads*dh] or nullptr
  float* y;        // [rows, heads*dh], stride ldy
  int64_t rows;
  int64_t heads;
  int64_t dh;
  int64_t ldh;
  int64_t ldo;
  int64_t ldy;
  float eps;
};

// Where one mLSTM block's state lives inside a slot of the state arena (floats).
// Slot s of the arena starts at arena + s * slot_stride. Within it:
//   C at c_offset: [heads, dqk, dv];  n at n_offset: [heads, dqk];  m at m_offset: [heads].
struct MlstmStateRef {
  float* arena;
  int64_t slot_stride;
  int64_t c_offset;
  int64_t n_offset;
  int64_t m_offset;
};

// Shapes shared by the mLSTM ops. Gate pre-activations are already bias-added and soft-capped.
struct MlstmDims {
  int64_t heads;
  int64_t dqk;
  int64_t dv;
  float eps;     // added to the stabilised denominator after the max
  float q_scale; // family A: 1/sqrt(dqk) applied to q
};

// One recurrent step for a batch of sessions; row r uses state slot slots[r]. A slot of -1
// marks a padding row (a fixed-size batch bucket): its state is neither read nor written and
// its h row is 0.
struct MlstmStepParams {
  const float* q;  // [batch, heads*dqk], stride ldq
  const float* k;  // [batch, heads*dqk], stride ldk
  const float* v;  // [batch, heads*dv], stride ldv
  const float* i;  // [batch, heads] input gate, stride ldi
  const float* f;  // [batch, heads] forget gate, stride ldf
  float* h;        // [batch, heads*dv] output, stride ldh
  const int32_t* slots;  // [batch] (backend memory)
  int64_t batch;
  int64_t ldq, ldk, ldv, ldi, ldf, ldh;
  MlstmDims dims;
  MlstmStateRef state;
};

// Chunkwise-parallel prefill over several sequences. Sequence s owns rows
// [row_begin[s], row_begin[s] + length[s]) of every input/output matrix and continues from
// (and writes back) state slot slots[s]. Chunk size L >= 1; the last chunk may be shorter.
struct MlstmChunkParams {
  const float* q;
  const float* k;
  const float* v;
  const float* i;
  const float* f;
  float* h;
  const int32_t* slots;      // [num_seqs] (backend memory)
  const int64_t* row_begin;  // [num_seqs] (backend memory)
  const int64_t* length;     // [num_seqs] (backend memory)
  // The same row ranges in host memory, for launch planning (grids, scratch windows).
  const int64_t* host_row_begin;
  const int64_t* host_length;
  int64_t num_seqs;
  int64_t chunk_size;
  int64_t ldq, ldk, ldv, ldi, ldf, ldh;
  MlstmDims dims;
  MlstmStateRef state;
};

// y[r, :] = x[rows[r], :] for r in [0, n): picks the residual rows whose logits are wanted.
// y must not overlap the rows it reads.
struct GatherRowsParams {
  const float* x;       // [*, cols], stride ldx
  const int32_t* rows;  // [n] (backend memory)
  float* y;             // [n, cols], stride ldy
  int64_t n;
  int64_t cols;
  int64_t ldx;
  int64_t ldy;
};

}  // namespace xlstmd::kernels

#endif  // XLSTMD_KERNELS_OP_PARAMS_H_
