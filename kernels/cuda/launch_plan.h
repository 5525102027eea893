// Launch planning for the CUDA backend, as plain C++ so that it is unit-tested on machines
// without a GPU (tests/kernels/launch_plan_test.cc). Nothing here includes a CUDA header.
//
// The rules that make the GPU batch-invariant live here:
//  - the decode GEMM's per-element reduction (which lane sums which k, then a fixed butterfly
//    over the 32 lanes) depends only on K and the weight dtype, never on M or the grid;
//  - row ops reduce with a block size that depends only on the row width;
//  - the mLSTM kernels give each (sequence, head) pair one CTA whose thread count depends only
//    on the head dims, and the chunk length only on the request and the head dims.
#ifndef XLSTMD_KERNELS_CUDA_LAUNCH_PLAN_H_
#define XLSTMD_KERNELS_CUDA_LAUNCH_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace xlstmd::kernels::cuda {

struct Dim3 {
  int64_t x = 1, y = 1, z = 1;
};

// The decode GEMM y[m, n] (+)= sum_k x[m, k] W[n, k]: one warp per output row n, kWarps warps
// per CTA; lane l sums k in vectors of `vec` elements at k = vec * (l + 32 j), j = 0, 1, ...
// (each vector's products chained in order), then the 32 lane sums meet in a butterfly.
// `m_tile` x rows share each weight load (the CTA's y-index picks the tile).
struct GemmReduction {
  int64_t vec = 0;         // elements per lane load (16 bytes of weights)
  int64_t lane_steps = 0;  // vectors each lane chains: ceil(K / (32 * vec))
  bool operator==(const GemmReduction&) const = default;
};
struct DecodeGemmPlan {
  Dim3 grid;
  int64_t threads = 0;
  int64_t m_tile = 0;  // 1, 8 or 32: a kernel instantiation
  GemmReduction reduction;
};
constexpr int64_t kGemmWarps = 8;
DecodeGemmPlan PlanDecodeGemm(int64_t m, int64_t n, int64_t k, size_t weight_elem_bytes);
// Weight rows are stored padded to whole vectors (zeros), so lane loads never straddle rows.
int64_t PaddedWeightCols(int64_t k, size_t weight_elem_bytes);

// Prefill GEMMs (MatMulParams::prefill) run through cuBLASLt: bf16 weights times the f32
// activations split into bf16 hi + lo parts (x - hi - lo is below 2^-16 |x|), two tensor-core
// products into one f32 result; f32 weights as an f32 GEMM (never TF32). The algorithm is
// pinned per PrefillGemmKey, which holds everything cuBLASLt's choice may depend on except M,
// so a row's result never depends on how many rows share the call.
struct PrefillGemmKey {
  int64_t n = 0, k = 0;
  int64_t ldw = 0;           // the weight rows' padded stride (elements)
  int64_t ldb = 0;           // the B operand's row stride: staged hi/lo, or x for f32 weights
  int64_t ldy = 0;           // y's row stride
  int32_t weight_bytes = 0;  // 2 (bf16) or 4 (f32)
  int32_t x_align = 0;       // alignment (bytes, power of two <= 16) of the B operand
  int32_t y_align = 0;       // of y and its row stride
  bool operator<(const PrefillGemmKey& o) const;
  bool operator==(const PrefillGemmKey&) const = default;
};
// The most rows one cuBLASLt call multiplies (the largest M its pinned algorithm is checked
// for); longer calls run in windows.
constexpr int64_t kPrefillMaxRows = 65536;
// The largest power of two <= 16 that divides both the address and the row stride in bytes.
int32_t OperandAlignment(uintptr_t address, int64_t row_stride_bytes);
// Row stride (elements) of the staged bf16 hi / lo copies of a [rows, k] activation: whole
// 16-byte vectors, so every staged row is 16-byte aligned.
int64_t StagedCols(int64_t k);
// Bytes of the staging buffers (hi and lo) for `rows` rows of width up to `max_k`.
size_t PrefillStagingBytes(int64_t rows, int64_t max_k);
// Row windows [begin, end) of an m-row prefill GEMM when at most `rows_per_window` rows are
// staged at once; per-row results do not depend on the split.
std::vector<std::pair<int64_t, int64_t>> PrefillWindows(int64_t m, int64_t rows_per_window);

// Row ops (norms, soft cap, SwiGLU, gather): one CTA per row (per row and head for the head
// norm) with a thread count that depends only on the width.
int64_t RowThreads(int64_t width);

// mLSTM: one CTA per (row or sequence, head), threads over the dv columns of the state.
struct MlstmPlan {
  Dim3 grid;
  int64_t threads = 0;
  int64_t chunk = 0;          // chunkwise: rows per chunk (<= kMaxChunk)
  size_t smem_bytes = 0;      // dynamic shared memory per CTA
};
constexpr int64_t kMaxChunk = 16;
MlstmPlan PlanMlstmStep(int64_t batch, int64_t heads, int64_t dqk, int64_t dv);
// Empty `why` when it fits; otherwise why not (the head dims need more shared memory than
// `smem_limit`, the device's opt-in maximum per block).
MlstmPlan PlanMlstmChunkwise(int64_t num_seqs, int64_t heads, int64_t dqk, int64_t dv,
                             int64_t requested_chunk, size_t smem_limit, std::string* why);

// sLSTM: one CTA per (row or sequence, head); its threads split the 4*dh gate columns of the
// recurrent matvec (each column's sum over dh in order), a count that depends only on dh.
// Shared memory: h_prev [dh] and the raw gates [4*dh].
struct SlstmPlan {
  Dim3 grid;
  int64_t threads = 0;
  size_t smem_bytes = 0;
};
SlstmPlan PlanSlstm(int64_t num_seqs, int64_t heads, int64_t dh);

// CUDA graph buckets for decode steps: a step of `batch` rows replays the graph captured for
// the smallest bucket >= batch, padded with slot -1 rows. 0 when batch exceeds the largest
// bucket (the step then runs eagerly).
int64_t DecodeBucket(int64_t batch);
const std::vector<int64_t>& DecodeBuckets();

// A ring of pinned staging memory for asynchronous state copies: Claim returns the offset of
// `bytes` contiguous bytes (aligned to 256) or -1 when the free space cannot hold them yet;
// Release frees the oldest claim (claims are released in order, as copies on one stream
// complete in order).
class PinnedRing {
 public:
  explicit PinnedRing(size_t capacity) : capacity_(capacity) {}
  int64_t Claim(size_t bytes);
  void ReleaseOldest();
  size_t in_use() const { return used_; }
  size_t capacity() const { return capacity_; }
  size_t claims() const { return claims_.size(); }

 private:
  struct Span {
    size_t offset, bytes;  // bytes includes padding skipped at the ring's end
  };
  size_t capacity_;
  size_t head_ = 0;  // next free offset
  size_t used_ = 0;
  std::deque<Span> claims_;  // oldest first
};

// The page-locked host blocks a backend has handed out (AllocHost), so a copy can tell
// whether its host side is pinned (asynchronous) or pageable (waited for). Any thread.
class PinnedBlocks {
 public:
  void Add(const void* p, size_t bytes);
  void Remove(const void* p);
  // Whether p lies inside a block.
  bool Contains(const void* p) const;

 private:
  mutable std::mutex mu_;
  std::map<const char*, size_t> blocks_;  // by start
};

// Dense bf16 MMA FLOPs per clock per SM with f32 accumulation, for the bench's nominal
// tensor-core peak: sm_90 4096 (H100 SXM: 132 SMs x 1.83 GHz = 989 TFLOP/s), sm_80 2048
// (A100: 312), sm_86/87/89 1024; 0 (unknown) for any other architecture.
double MmaFlopsPerClockPerSm(int major, int minor);

}  // namespace xlstmd::kernels::cuda

#endif  // XLSTMD_KERNELS_CUDA_LAUNCH_PLAN_H_
