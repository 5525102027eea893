#include "kernels/cuda/launch_plan.h"

#include <algorithm>
#include <tuple>

namespace xlstmd::kernels::cuda {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

int64_t MlstmThreads(int64_t dv) { return std::clamp<int64_t>(RoundUp(dv, 32), 32, 1024); }

}  // namespace

int64_t PaddedWeightCols(int64_t k, size_t weight_elem_bytes) {
  const int64_t vec = 16 / static_cast<int64_t>(weight_elem_bytes);
  return RoundUp(std::max<int64_t>(k, 1), vec);
}

bool PrefillGemmKey::operator<(const PrefillGemmKey& o) const {
  return std::tie(n, k, ldw, ldb, ldy, weight_bytes, x_align, y_align) <
         std::tie(o.n, o.k, o.ldw, o.ldb, o.ldy, o.weight_bytes, o.x_align, o.y_align);
}

int32_t OperandAlignment(uintptr_t address, int64_t row_stride_bytes) {
  int32_t a = 16;
  while (a > 1 && ((address % static_cast<uintptr_t>(a)) != 0 || row_stride_bytes % a != 0)) {
    a /= 2;
  }
  return a;
}

int64_t StagedCols(int64_t k) { return RoundUp(std::max<int64_t>(k, 1), 8); }

size_t PrefillStagingBytes(int64_t rows, int64_t max_k) {
  if (rows <= 0 || max_k <= 0) return 0;
  // hi and lo, 2 bytes per element each.
  return 2 * static_cast<size_t>(rows) * static_cast<size_t>(StagedCols(max_k)) * 2;
}

std::vector<std::pair<int64_t, int64_t>> PrefillWindows(int64_t m, int64_t rows_per_window) {
  std::vector<std::pair<int64_t, int64_t>> w;
  const int64_t step = std::max<int64_t>(rows_per_window, 1);
  for (int64_t b = 0; b < m; b += step) w.emplace_back(b, std::min(m, b + step));
  return w;
}

DecodeGemmPlan PlanDecodeGemm(int64_t m, int64_t n, int64_t k, size_t weight_elem_bytes) {
  DecodeGemmPlan p;
  p.reduction.vec = 16 / static_cast<int64_t>(weight_elem_bytes);
  p.reduction.lane_steps = CeilDiv(std::max<int64_t>(k, 0), 32 * p.reduction.vec);
  // The x rows a weight load serves: more rows per tile read the weights fewer times; the
  // tile never changes a row's arithmetic.
  p.m_tile = m <= 1 ? 1 : (m <= 8 ? 8 : 32);
  p.threads = 32 * kGemmWarps;
  p.grid.x = CeilDiv(std::max<int64_t>(n, 1), kGemmWarps);
  p.grid.y = CeilDiv(std::max<int64_t>(m, 1), p.m_tile);
  return p;
}

int64_t RowThreads(int64_t width) {
  if (width <= 256) return 64;
  if (width <= 2048) return 256;
  return 512;
}

MlstmPlan PlanMlstmStep(int64_t batch, int64_t heads, int64_t dqk, int64_t dv) {
  MlstmPlan p;
  p.grid.x = batch;  // x: up to 2^31 - 1 blocks (y stops at 65535)
  p.grid.y = heads;
  p.threads = MlstmThreads(dv);
  p.chunk = 1;
  // q (scaled) and k of the head, then one float per thread for the q.n reduction.
  p.smem_bytes = static_cast<size_t>(2 * dqk + p.threads + 8) * sizeof(float);
  return p;
}

MlstmPlan PlanMlstmChunkwise(int64_t num_seqs, int64_t heads, int64_t dqk, int64_t dv,
                             int64_t requested_chunk, size_t smem_limit, std::string* why) {
  MlstmPlan p;
  p.grid.x = num_seqs;
  p.grid.y = heads;
  p.threads = MlstmThreads(dv);
  auto bytes = [&](int64_t L) {
    // q (scaled) and k rows of the chunk, the decay and score squares, five per-row vectors,
    // n, and one float per thread for reductions.
    return static_cast<size_t>(2 * L * dqk + 2 * L * L + 5 * L + dqk + p.threads + 8) *
           sizeof(float);
  };
  int64_t L = std::clamp<int64_t>(requested_chunk, 1, kMaxChunk);
  while (L > 1 && bytes(L) > smem_limit) L /= 2;
  p.chunk = L;
  p.smem_bytes = bytes(L);
  if (why != nullptr) {
    why->clear();
    if (p.smem_bytes > smem_limit) {
      *why = "the mLSTM head dims need " + std::to_string(p.smem_bytes) +
             " bytes of shared memory per block; the device allows " + std::to_string(smem_limit);
    }
  }
  return p;
}

SlstmPlan PlanSlstm(int64_t num_seqs, int64_t heads, int64_t dh) {
  SlstmPlan p;
  p.grid.x = num_seqs;
  p.grid.y = heads;
  p.threads = std::clamp<int64_t>(RoundUp(4 * dh, 32), 32, 1024);
  p.smem_bytes = static_cast<size_t>(5 * std::max<int64_t>(dh, 1)) * sizeof(float);
  return p;
}

const std::vector<int64_t>& DecodeBuckets() {
  static const std::vector<int64_t> kBuckets = {1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256};
  return kBuckets;
}

int64_t DecodeBucket(int64_t batch) {
  for (int64_t b : DecodeBuckets()) {
    if (batch <= b) return b;
  }
  return 0;
}

void PinnedBlocks::Add(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  blocks_[static_cast<const char*>(p)] = bytes;
}

void PinnedBlocks::Remove(const void* p) {
  std::lock_guard<std::mutex> lock(mu_);
  blocks_.erase(static_cast<const char*>(p));
}

bool PinnedBlocks::Contains(const void* p) const {
  const char* c = static_cast<const char*>(p);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.upper_bound(c);
  if (it == blocks_.begin()) return false;
  --it;
  return c < it->first + it->second;
}

int64_t PinnedRing::Claim(size_t bytes) {
  constexpr size_t kAlign = 256;
  const size_t need = (std::max<size_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign;
  if (need > capacity_) return -1;
  size_t offset = head_;
  size_t skip = 0;
  if (offset + need > capacity_) {  // does not fit before the end: wrap, wasting the tail
    skip = capacity_ - offset;
    offset = 0;
  }
  // The free region is [head_, oldest claim) circularly, capacity_ - used_ bytes; a claim
  // that wraps also uses up the skipped tail (counted in it, so released with it).
  if (used_ + skip + need > capacity_) return -1;
  claims_.push_back({offset, need + skip});
  used_ += need + skip;
  head_ = offset + need == capacity_ ? 0 : offset + need;
  return static_cast<int64_t>(offset);
}

void PinnedRing::ReleaseOldest() {
  if (claims_.empty()) return;
  used_ -= claims_.front().bytes;
  claims_.pop_front();
  if (claims_.empty()) {
    head_ = 0;
    used_ = 0;
  }
}

double MmaFlopsPerClockPerSm(int major, int minor) {
  if (major == 9) return 4096;
  if (major == 8) return minor == 0 ? 2048 : 1024;
  return 0;
}

}  // namespace xlstmd::kernels::cuda
