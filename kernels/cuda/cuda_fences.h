// Fences on one CUDA stream, behind Backend::RecordFence/WaitFence: one event recorded per
// fence, reused once the fence has passed, so a tier move can issue a state copy, hand its
// buffer on, and let whoever reads the buffer (often an I/O thread) wait for it instead of
// the scheduler. Only kernels/cuda/ includes this header.
#ifndef XLSTMD_KERNELS_CUDA_CUDA_FENCES_H_
#define XLSTMD_KERNELS_CUDA_CUDA_FENCES_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <deque>
#include <mutex>
#include <utility>
#include <vector>

namespace xlstmd::kernels::cuda {

class StreamFences {
 public:
  StreamFences(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~StreamFences();  // destroys the events; the stream must be idle
  StreamFences(const StreamFences&) = delete;
  StreamFences& operator=(const StreamFences&) = delete;

  // A fence after everything issued on the stream so far (the stream's issuing thread only;
  // never while the stream is being captured). 0 when no event could be made or recorded:
  // the error is in *error, and a wait for fence 0 returns at once.
  uint64_t Record(cudaError_t* error);
  // Waits until `fence` has passed. Any thread.
  cudaError_t Wait(uint64_t fence);
  // The stream has been synchronized: every fence issued so far has passed.
  void AllPassed();

 private:
  void RecycleUpTo(uint64_t fence);  // with mu_ held

  const int device_;
  const cudaStream_t stream_;
  std::mutex mu_;
  uint64_t issued_ = 0;
  uint64_t passed_ = 0;
  std::deque<std::pair<uint64_t, cudaEvent_t>> pending_;  // oldest first
  std::vector<cudaEvent_t> free_;
};

}  // namespace xlstmd::kernels::cuda

#endif  // XLSTMD_KERNELS_CUDA_CUDA_FENCES_H_
