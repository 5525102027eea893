#include "kernels/cuda/cuda_fences.h"

#include <algorithm>

namespace xlstmd::kernels::cuda {

StreamFences::~StreamFences() {
  for (auto& [fence, e] : pending_) cudaEventDestroy(e);
  for (cudaEvent_t e : free_) cudaEventDestroy(e);
}

uint64_t StreamFences::Record(cudaError_t* error) {
  std::lock_guard<std::mutex> lock(mu_);
  cudaEvent_t e = nullptr;
  if (!free_.empty()) {
    e = free_.back();
    free_.pop_back();
  } else if (*error = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
             *error != cudaSuccess) {
    return 0;
  }
  if (*error = cudaEventRecord(e, stream_); *error != cudaSuccess) {
    free_.push_back(e);
    return 0;
  }
  pending_.emplace_back(++issued_, e);
  return issued_;
}

cudaError_t StreamFences::Wait(uint64_t fence) {
  cudaEvent_t e = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fence <= passed_) return cudaSuccess;
    auto it = std::find_if(pending_.begin(), pending_.end(),
                           [fence](const auto& p) { return p.first == fence; });
    if (it == pending_.end()) return cudaSuccess;  // recycled: it passed
    e = it->second;
  }
  // Unlocked: other threads record and wait meanwhile. If a later wait recycles this event
  // and the stream records it again, this waits for that later point: longer, never shorter.
  cudaError_t r = cudaSetDevice(device_);
  if (r == cudaSuccess) r = cudaEventSynchronize(e);
  if (r != cudaSuccess) return r;
  std::lock_guard<std::mutex> lock(mu_);
  passed_ = std::max(passed_, fence);
  RecycleUpTo(passed_);
  return cudaSuccess;
}

void StreamFences::AllPassed() {
  std::lock_guard<std::mutex> lock(mu_);
  passed_ = issued_;
  RecycleUpTo(passed_);
}

void StreamFences::RecycleUpTo(uint64_t fence) {
  // Fences pass in stream order, so every event up to `fence` has completed.
  while (!pending_.empty() && pending_.front().first <= fence) {
    free_.push_back(pending_.front().second);
    pending_.pop_front();
  }
}

}  // namespace xlstmd::kernels::cuda
