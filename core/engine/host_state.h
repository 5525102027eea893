// HostState: one session state's copy in host memory (the host tier, rewind points, commit
// captures, states being written or read), and the pool its buffers come from.
//
// Every tier move copies a whole state between a slot and one of these buffers. On a GPU
// backend a copy from or to pageable memory goes through the driver's own small pinned bounce
// buffer in pieces; from page-locked memory it is one DMA at the bus's full speed. So the pool
// hands out page-locked buffers (Backend::AllocHost, through PinnedAllocator) up to a byte cap
// (--pinned-state-bytes: locked pages are taken from what the OS can reclaim), and plain heap
// buffers past it. Released pinned buffers are kept for the next state rather than freed,
// because pinning costs a page-table walk per call (milliseconds for a 7B state), and the
// states of one model all have the same size.
//
// On a backend whose memory is host memory (the CPU) there is nothing to gain: the allocator
// declines and every buffer is pageable.
#ifndef XLSTMD_CORE_ENGINE_HOST_STATE_H_
#define XLSTMD_CORE_ENGINE_HOST_STATE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace xlstmd::core {

// Page-locked host memory for state copies (the model's backend in the daemon, a fake in
// tests). AllocPinned may be called from any thread; FreePinned only where no stream capture
// can be running (the pool frees when it is destroyed, after the scheduler has stopped).
class PinnedAllocator {
 public:
  virtual ~PinnedAllocator() = default;
  // Zeroed memory; nullptr when pinning gains nothing here, an error when it failed (the pool
  // then uses the heap from now on).
  virtual absl::StatusOr<void*> AllocPinned(size_t bytes) = 0;
  virtual void FreePinned(void* p) = 0;
};

class StateBuffer;
// Immutable once filled: I/O jobs, rewind points and the host tier share one copy.
using HostState = std::shared_ptr<const StateBuffer>;
using MutableHostState = std::shared_ptr<StateBuffer>;

// A heap buffer holding `values` (tests, fakes and tools that have no pool).
MutableHostState MakePageableState(absl::Span<const float> values);

// A fixed-size float buffer; made only by HostStatePool (or MakePageableState).
//
// A slot read into it may still be running on the device (SetPending): every access to the
// contents goes through data() or span(), which first wait for that copy, so whoever reads
// the state first (often an I/O thread encoding it) waits, not the scheduler that issued it.
// Releasing a buffer also waits, so a reused one is never still being written.
class StateBuffer {
 public:
  StateBuffer(const StateBuffer&) = delete;
  StateBuffer& operator=(const StateBuffer&) = delete;

  size_t size() const { return size_; }
  float* data() {
    Settle();
    return data_;
  }
  const float* data() const {
    Settle();
    return data_;
  }
  absl::Span<float> span() { return {data(), size_}; }
  absl::Span<const float> span() const { return {data(), size_}; }
  // The contents without waiting for a pending read: only for a copy out of this buffer
  // issued on the same ordered device queue as that read, so it runs after it.
  const float* data_in_queue_order() const { return data_; }
  bool pinned() const { return pinned_; }

  // A copy into this buffer was started and `wait` returns once it is complete, with its
  // outcome (set by the one thread that started the copy, before the buffer is shared).
  void SetPending(std::function<absl::Status()> wait);
  bool pending() const { return pending_.load(std::memory_order_acquire); }
  // Whether the contents are the state that was copied: after a failed copy (the device
  // failed) they are garbage, and whoever would persist or send them must not.
  absl::Status copy_status() const {
    Settle();
    return copy_status_;
  }

 private:
  friend class HostStatePool;
  friend MutableHostState MakePageableState(absl::Span<const float> values);
  StateBuffer(float* data, size_t size, bool pinned) : data_(data), size_(size), pinned_(pinned) {}
  void Settle() const {
    if (pending_.load(std::memory_order_acquire)) SettleSlow();
  }
  void SettleSlow() const;

  float* data_;
  size_t size_;
  bool pinned_;
  mutable std::atomic<bool> pending_{false};
  mutable std::mutex mu_;
  mutable std::function<absl::Status()> wait_;
  mutable absl::Status copy_status_;  // written once, under mu_, before pending_ clears
};

struct HostStatePoolStats {
  int64_t pinned_bytes = 0;         // page-locked bytes held (in use and kept for reuse)
  int64_t pinned_in_use = 0;        // pinned buffers handed out and not yet released
  int64_t pageable_fallbacks = 0;   // buffers taken from the heap because of the cap or a failure
};

class HostStatePool {
 public:
  // Buffers of `floats` floats. Page-locked ones come from `allocator` (nullptr: none) while
  // the pinned bytes held stay within `pinned_cap_bytes`. The allocator must outlive every
  // buffer this pool hands out.
  HostStatePool(size_t floats, int64_t pinned_cap_bytes, PinnedAllocator* allocator);
  // Frees the kept pinned buffers; one still held elsewhere is freed when it is released.
  ~HostStatePool();
  HostStatePool(const HostStatePool&) = delete;
  HostStatePool& operator=(const HostStatePool&) = delete;

  // A buffer for one state, zero-filled when `zero`, else with unspecified contents (for a
  // caller that overwrites all of it). Any thread.
  MutableHostState Acquire(bool zero);
  HostStatePoolStats Stats() const;  // any thread

  struct Core;  // shared with the buffers' release functions (host_state.cc)

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_HOST_STATE_H_
