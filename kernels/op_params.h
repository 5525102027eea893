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
  // Rows of prompt pieces (prefill) rather than of a decode step. A backend may multiply the
  // two kinds differently (CUDA: cuBLASLt for prefill, its own weight-streaming kernel for
  // decode), but chooses only by this flag and the weight's shape, never by m, so a row's
  // result is the same alone or in any batch of its kind.
  bool prefill = false;
};

// y = x / sqrt(mean(x^2) + eps) * w (+ b). Reductions in float32. With `center`, a LayerNorm:
// y = (x - mean) / sqrt(var + eps) * w (+ b), biased variance (family B's norms, whose
// effective scale 1 + w the model folds into w at load).
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
  bool center = false;
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

// Activations of a gated feed-forward (upstream's act_fn names: swish, gelu (exact erf form),
// relu, relu^2, sigmoid, selu).
enum class GluAct : int32_t { kSilu = 0, kGelu = 1, kRelu = 2, kReluSq = 3, kSigmoid = 4, kSelu = 5 };

// y[r, :] = act(gate[r, :]) * up[r, :]   (act = silu: SwiGLU)
struct SwiGluParams {
  const float* gate;  // [rows, dim], stride ld_in
  const float* up;    // [rows, dim], stride ld_in
  float* y;           // [rows, dim], stride ldy
  int64_t rows;
  int64_t dim;
  int64_t ld_in;
  int64_t ldy;
  GluAct act = GluAct::kSilu;
};

// The output gate applied after a per-head norm.
enum class GateAct : int32_t { kSigmoid = 0, kSilu = 1, kNone = 2 };

// Per head j: t = LN0(h[r, head j]; eps) * w[..] (+ b[..]) (+ skip[..] * xs[r, ..]), then
// y[r, head j] (=, or += with `accumulate`) t * gate(o[r, ..]).
// Family A: `multihead_norm` fused with the sigmoid output gate. Family B mLSTM: the outnorm,
// the learnable skip of the conv branch and the SiLU(z) output gate; sLSTM: the group norm
// added to the residual (kNone, accumulate).
struct HeadNormGateParams {
  const float* h;  // [rows, heads*dh], stride ldh
  const float* o;  // [rows, heads*dh] output-gate pre-activations, stride ldo (unused: kNone)
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
  GateAct gate = GateAct::kSigmoid;
  const float* skip = nullptr;  // [heads*dh] or nullptr
  const float* xs = nullptr;    // [rows, heads*dh] skip input, stride ldxs (with skip)
  int64_t ldxs = 0;
  bool accumulate = false;      // y += instead of y = (y must not alias h, o or xs)
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

// Block-diagonal ("headwise") linear map, family B's q/k/v and sLSTM gate projections:
// y[r, p*out + o] = alpha * (sum_i w[p, i, o] * x[r, p*in + i] + b[p*out + o]).
// Each output's sum runs over i in order whatever the batch (batch invariance). The weights
// are stored transposed against the checkpoint's [blocks, out, in], so a block is a small
// GEMM with contiguous rows of outputs.
struct HeadwiseParams {
  const float* x;  // [rows, blocks*in], stride ldx
  const float* w;  // [blocks, in, out] float32 (backend memory)
  const float* b;  // [blocks*out] or nullptr
  float* y;        // [rows, blocks*out], stride ldy; must not overlap x
  int64_t rows;
  int64_t blocks;
  int64_t out;
  int64_t in;
  int64_t ldx;
  int64_t ldy;
  float alpha;
};

// Sequences of a recurrent op that runs over token rows. With row_begin == nullptr it is a
// decode step: sequence r is row r, one token long (num_seqs = rows), and slot -1 marks a
// padding row (its state is neither read nor written, its output row is 0). Otherwise
// sequence s owns rows [row_begin[s], row_begin[s] + length[s]) (length 0: nothing to do) and
// continues from slots[s], which must then be a real slot (>= 0).
struct RowSequences {
  const int32_t* slots;      // [num_seqs] (backend memory)
  const int64_t* row_begin;  // [num_seqs] (backend memory) or nullptr (step)
  const int64_t* length;     // [num_seqs] (backend memory) or nullptr (step)
  // The same row ranges in host memory (launch planning), nullptr in a step.
  const int64_t* host_row_begin;
  const int64_t* host_length;
  int64_t num_seqs;
};

// Causal depthwise convolution over time (family B, spec 4.2), kernel size ks >= 1:
// y_t[d] = act(b[d] + sum_{j<ks} w[j, d] * x_{t-ks+1+j}[d]), where inputs before the rows of
// this call come from the slot's window (the last ks-1 inputs, oldest first; zero for a new
// session), which is then advanced to end with the sequence's last input. act = SiLU or none.
struct CausalConvParams {
  const float* x;  // [rows, dim], stride ldx
  const float* w;  // [ks, dim] (the checkpoint's [dim, 1, ks] transposed)
  const float* b;  // [dim] or nullptr
  float* y;        // [rows, dim], stride ldy; must not overlap x
  RowSequences seqs;
  int64_t dim;
  int64_t ks;
  int64_t ldx;
  int64_t ldy;
  bool silu;
  float* arena;          // state arena; slot s starts at arena + s * slot_stride
  int64_t slot_stride;
  int64_t window_offset; // floats from the slot start: window [ks-1, dim]
};

// The sLSTM cell (spec 4.4) over sequences, heads of dh units, dim = heads*dh. Per step and
// head j, gate g in (i, f, z, o), unit u:
//   raw_g[u] = gx[r, g*dim + j*dh + u] + sum_d h_prev[j*dh + d] * r[j, d, g*dh + u] + b[j, g, u]
// then the stabilised exponential-gate update of c, n, m and h = sigmoid(o) * c / n. The state
// (h, c, n, m, each [dim]) lives in the slot; a sequence's steps run in order.
struct SlstmParams {
  const float* gx;  // [rows, 4*dim] input parts of the gate pre-activations (i | f | z | o)
  const float* r;   // [heads, dh, 4*dh] recurrent kernel ("cuda" layout, spec 4.4)
  const float* b;   // [heads, 4, dh] bias ("cuda" layout); never null
  float* h;         // [rows, dim] output (the new h of each row), stride ldh
  RowSequences seqs;
  int64_t heads;
  int64_t dh;
  int64_t ldg;
  int64_t ldh;
  float* arena;
  int64_t slot_stride;
  int64_t h_offset, c_offset, n_offset, m_offset;  // floats from the slot start, [dim] each
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
