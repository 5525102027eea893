#include "kernels/cuda/cuda_gemm_lt.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"

namespace xlstmd::kernels::cuda {
namespace {

// The M the algorithm is chosen for: a constant, so that the choice depends on the key alone
// and never on the first call's rows or the reservation.
constexpr int64_t kChoiceRows = 2048;
// M values each pinned algorithm is checked to support before it is pinned (calls never pass
// more than kPrefillMaxRows rows).
constexpr int64_t kCheckRows[] = {1, 7, 256, kChoiceRows, kPrefillMaxRows};

std::string LtText(cublasStatus_t s) {
  return absl::StrCat(cublasLtGetStatusName(s), ": ", cublasLtGetStatusString(s));
}

absl::Status LtError(const char* what, cublasStatus_t s) {
  return absl::InternalError(absl::StrCat("cuBLASLt ", what, ": ", LtText(s)));
}

// Owners of the Lt descriptors of one call.
struct Layout {
  cublasLtMatrixLayout_t h = nullptr;
  ~Layout() {
    if (h != nullptr) cublasLtMatrixLayoutDestroy(h);
  }
};
struct Desc {
  cublasLtMatmulDesc_t h = nullptr;
  ~Desc() {
    if (h != nullptr) cublasLtMatmulDescDestroy(h);
  }
};
struct Pref {
  cublasLtMatmulPreference_t h = nullptr;
  ~Pref() {
    if (h != nullptr) cublasLtMatmulPreferenceDestroy(h);
  }
};

// Column-major views of the row-major operands: W [n, k] is A = [k, n] (ld = ldw), used
// transposed; x [m, k] is B = [k, m] (ld = ldb); y [m, n] is C = D = [n, m] (ld = ldy).
struct Layouts {
  Layout a, b, c;
};
absl::Status MakeLayouts(const PrefillGemmKey& key, cudaDataType_t ab_type, int64_t m,
                         Layouts* l) {
  cublasStatus_t s = cublasLtMatrixLayoutCreate(&l->a.h, ab_type, static_cast<uint64_t>(key.k),
                                                static_cast<uint64_t>(key.n), key.ldw);
  if (s == CUBLAS_STATUS_SUCCESS) {
    s = cublasLtMatrixLayoutCreate(&l->b.h, ab_type, static_cast<uint64_t>(key.k),
                                   static_cast<uint64_t>(m), key.ldb);
  }
  if (s == CUBLAS_STATUS_SUCCESS) {
    s = cublasLtMatrixLayoutCreate(&l->c.h, CUDA_R_32F, static_cast<uint64_t>(key.n),
                                   static_cast<uint64_t>(m), key.ldy);
  }
  return s == CUBLAS_STATUS_SUCCESS ? absl::OkStatus() : LtError("layout", s);
}

// f32 compute and scale (FMA; CUBLAS_COMPUTE_32F never uses TF32), A transposed.
absl::Status MakeDesc(Desc* d) {
  cublasStatus_t s = cublasLtMatmulDescCreate(&d->h, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  const int32_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  if (s == CUBLAS_STATUS_SUCCESS) {
    s = cublasLtMatmulDescSetAttribute(d->h, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
  }
  if (s == CUBLAS_STATUS_SUCCESS) {
    s = cublasLtMatmulDescSetAttribute(d->h, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
  }
  return s == CUBLAS_STATUS_SUCCESS ? absl::OkStatus() : LtError("matmul descriptor", s);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PrefillGemm>> PrefillGemm::Create(cudaStream_t stream) {
  cublasLtHandle_t h = nullptr;
  const cublasStatus_t s = cublasLtCreate(&h);
  if (s != CUBLAS_STATUS_SUCCESS) return LtError("create", s);
  Desc desc;
  if (absl::Status st = MakeDesc(&desc); !st.ok()) {
    cublasLtDestroy(h);
    return st;
  }
  auto gemm = std::unique_ptr<PrefillGemm>(new PrefillGemm(h, desc.h, stream));
  desc.h = nullptr;  // owned by gemm now
  return gemm;
}

PrefillGemm::~PrefillGemm() {
  cudaStreamSynchronize(stream_);
  cudaFree(hi_);
  cudaFree(lo_);
  cublasLtMatmulDescDestroy(desc_);
  cublasLtDestroy(handle_);
}

absl::Status PrefillGemm::Reserve(int64_t rows, int64_t max_k) {
  if (rows <= rows_ && max_k <= max_k_) return absl::OkStatus();
  rows = std::max(rows, rows_);
  max_k = std::max(max_k, max_k_);
  // Queued GEMMs may still read the old staging.
  cudaError_t e = cudaStreamSynchronize(stream_);
  if (e != cudaSuccess) {
    return absl::InternalError(absl::StrCat("prefill GEMM staging: ", cudaGetErrorString(e)));
  }
  cudaFree(hi_);
  cudaFree(lo_);
  hi_ = lo_ = nullptr;
  rows_ = max_k_ = 0;
  const size_t half = PrefillStagingBytes(rows, max_k) / 2;
  e = cudaMalloc(reinterpret_cast<void**>(&hi_), half);
  if (e == cudaSuccess) e = cudaMalloc(reinterpret_cast<void**>(&lo_), half);
  // The padding columns past k are never read; zeroed so that no stale value can be.
  if (e == cudaSuccess) e = cudaMemsetAsync(hi_, 0, half, stream_);
  if (e == cudaSuccess) e = cudaMemsetAsync(lo_, 0, half, stream_);
  if (e != cudaSuccess) {
    cudaGetLastError();  // an allocation failure is not sticky
    cudaFree(hi_);
    cudaFree(lo_);
    hi_ = lo_ = nullptr;
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", 2 * half, " bytes of prefill GEMM staging: ", cudaGetErrorString(e)));
  }
  rows_ = rows;
  max_k_ = max_k;
  return absl::OkStatus();
}

absl::StatusOr<const PrefillGemm::Pinned*> PrefillGemm::Resolve(const PrefillGemmKey& key,
                                                                cudaDataType_t ab_type) {
  auto it = pinned_.find(key);
  if (it != pinned_.end()) return &it->second;
  if (unsupported_.count(key) != 0) return static_cast<const Pinned*>(nullptr);
  Pref pref;
  cublasStatus_t s = cublasLtMatmulPreferenceCreate(&pref.h);
  if (s != CUBLAS_STATUS_SUCCESS) return LtError("preference", s);
  // No workspace and no split-K reduction: each output element is then summed by one CTA in
  // the algorithm's fixed k order, whatever M is.
  const uint64_t workspace = 0;
  const uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_NONE;
  const uint32_t align_a = 16, align_b = static_cast<uint32_t>(key.x_align),
                 align_c = static_cast<uint32_t>(key.y_align);
  const struct {
    cublasLtMatmulPreferenceAttributes_t attr;
    const void* value;
    size_t bytes;
  } prefs[] = {
      {CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)},
      {CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction, sizeof(reduction)},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c)},
  };
  for (const auto& p : prefs) {
    s = cublasLtMatmulPreferenceSetAttribute(pref.h, p.attr, p.value, p.bytes);
    if (s != CUBLAS_STATUS_SUCCESS) return LtError("preference attribute", s);
  }
  Layouts choice;
  absl::Status st = MakeLayouts(key, ab_type, kChoiceRows, &choice);
  if (!st.ok()) return st;
  cublasLtMatmulHeuristicResult_t results[16];
  int count = 0;
  s = cublasLtMatmulAlgoGetHeuristic(handle_, desc_, choice.a.h, choice.b.h, choice.c.h,
                                     choice.c.h, pref.h, 16, results, &count);
  if (s != CUBLAS_STATUS_SUCCESS) count = 0;  // no heuristic for this case: not supported
  for (int i = 0; i < count; ++i) {
    const cublasLtMatmulHeuristicResult_t& r = results[i];
    if (r.state != CUBLAS_STATUS_SUCCESS || r.workspaceSize != 0) continue;
    int32_t splits = 1;
    uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits,
                                             sizeof(splits), &written) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                             &scheme, sizeof(scheme),
                                             &written) != CUBLAS_STATUS_SUCCESS ||
        splits > 1 || scheme != CUBLASLT_REDUCTION_SCHEME_NONE) {
      continue;
    }
    bool runs_everywhere = true;
    for (int64_t m : kCheckRows) {
      Layouts l;
      cublasLtMatmulHeuristicResult_t check{};
      if (!MakeLayouts(key, ab_type, m, &l).ok() ||
          cublasLtMatmulAlgoCheck(handle_, desc_, l.a.h, l.b.h, l.c.h, l.c.h, &r.algo, &check) !=
              CUBLAS_STATUS_SUCCESS ||
          check.workspaceSize != 0) {
        runs_everywhere = false;
        break;
      }
    }
    if (!runs_everywhere) continue;
    return &pinned_.emplace(key, Pinned{r.algo}).first->second;
  }
  // None fits: this key's prefill rows go through the decode kernel, which is batch-invariant
  // too (the choice depends on the key alone).
  unsupported_.insert(key);
  return static_cast<const Pinned*>(nullptr);
}

absl::Status PrefillGemm::Matmul(const PrefillGemmKey& key, cudaDataType_t ab_type,
                                 const Pinned& algo, const void* a, const void* b, int64_t m,
                                 float beta, float* y) {
  Layouts l;
  const absl::Status st = MakeLayouts(key, ab_type, m, &l);
  if (!st.ok()) return st;
  const float alpha = 1.0f;
  const cublasStatus_t s = cublasLtMatmul(handle_, desc_, &alpha, a, l.a.h, b, l.b.h, &beta, y,
                                          l.c.h, y, l.c.h, &algo.algo, nullptr, 0, stream_);
  return s == CUBLAS_STATUS_SUCCESS ? absl::OkStatus() : LtError("matmul", s);
}

absl::StatusOr<bool> PrefillGemm::Run(const float* x, int64_t ldx, const DeviceWeights& w,
                                      float* y, int64_t ldy, int64_t m, bool accumulate,
                                      bool bf16_x) {
  if (m <= 0 || w.rows <= 0) return true;
  if (w.cols == 0) return false;  // an empty sum: the decode kernel writes 0 or leaves y
  PrefillGemmKey key;
  key.n = w.rows;
  key.k = w.cols;
  key.ldw = w.ld;
  key.ldy = ldy;
  key.weight_bytes = w.bf16 ? 2 : 4;
  key.y_align = OperandAlignment(reinterpret_cast<uintptr_t>(y),
                                 ldy * static_cast<int64_t>(sizeof(float)));
  const float beta = accumulate ? 1.0f : 0.0f;
  if (!w.bf16) {
    // Not reached under bf16 math (weights are stored bf16 then); the decode kernel rounds.
    if (bf16_x) return false;
    // f32 weights: one f32 GEMM straight on x.
    key.ldb = ldx;
    key.x_align = OperandAlignment(reinterpret_cast<uintptr_t>(x),
                                   ldx * static_cast<int64_t>(sizeof(float)));
    absl::StatusOr<const Pinned*> algo = Resolve(key, CUDA_R_32F);
    if (!algo.ok()) return algo.status();
    if (*algo == nullptr) return false;
    for (const auto& [begin, end] : PrefillWindows(m, kPrefillMaxRows)) {
      absl::Status st = Matmul(key, CUDA_R_32F, **algo, w.data, x + begin * ldx, end - begin,
                               beta, y + begin * ldy);
      if (!st.ok()) return st;
    }
    return true;
  }
  if (w.cols > max_k_ || rows_ == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "prefill GEMM: k=", w.cols, " exceeds the reserved staging (", rows_, " rows of up to ",
        max_k_, "); ReserveMatMul after uploading every matrix"));
  }
  key.ldb = StagedCols(w.cols);
  key.x_align = 16;
  absl::StatusOr<const Pinned*> algo = Resolve(key, CUDA_R_16BF);
  if (!algo.ok()) return algo.status();
  if (*algo == nullptr) return false;
  for (const auto& [begin, end] : PrefillWindows(m, std::min(rows_, kPrefillMaxRows))) {
    const cudaError_t e = LaunchSplitBf16(x + begin * ldx, ldx, end - begin, w.cols, hi_,
                                          bf16_x ? nullptr : lo_, key.ldb, stream_);
    if (e != cudaSuccess) {
      return absl::InternalError(absl::StrCat("prefill GEMM split: ", cudaGetErrorString(e)));
    }
    float* yw = y + begin * ldy;
    absl::Status st = Matmul(key, CUDA_R_16BF, **algo, w.data, hi_, end - begin, beta, yw);
    if (st.ok() && !bf16_x) {
      st = Matmul(key, CUDA_R_16BF, **algo, w.data, lo_, end - begin, 1.0f, yw);
    }
    if (!st.ok()) return st;
  }
  return true;
}

}  // namespace xlstmd::kernels::cuda
