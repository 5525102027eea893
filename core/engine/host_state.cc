#include "core/engine/host_state.h"

#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "spdlog/spdlog.h"

namespace xlstmd::core {

void StateBuffer::SetPending(std::function<absl::Status()> wait) {
  std::lock_guard<std::mutex> lock(mu_);
  wait_ = std::move(wait);
  pending_.store(wait_ != nullptr, std::memory_order_release);
}

void StateBuffer::SettleSlow() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!pending_.load(std::memory_order_relaxed)) return;  // another reader waited first
  copy_status_ = wait_();
  wait_ = nullptr;
  pending_.store(false, std::memory_order_release);
}

struct HostStatePool::Core {
  Core(size_t n, int64_t cap, PinnedAllocator* a) : floats(n), cap_bytes(cap), allocator(a) {}
  int64_t bytes() const { return static_cast<int64_t>(floats * sizeof(float)); }

  const size_t floats;
  const int64_t cap_bytes;
  PinnedAllocator* const allocator;

  mutable std::mutex mu;
  std::vector<float*> kept;  // released pinned buffers, reused before pinning more
  int64_t pinned_bytes = 0;  // kept + in use
  int64_t pinned_in_use = 0;
  int64_t fallbacks = 0;
  bool pin_failed = false;  // stop asking once the allocator has said no
  bool closed = false;      // the pool is gone: released buffers are freed, not kept
};

namespace {

// Returns a pinned buffer to its pool (or frees it once the pool is gone); shares the pool's
// core, so a buffer may outlive the HostStatePool object itself.
struct PinnedRelease {
  std::shared_ptr<HostStatePool::Core> core;
  void operator()(StateBuffer* b) const {
    float* p = b->data();  // waits for a copy still writing it
    delete b;
    std::unique_lock<std::mutex> lock(core->mu);
    --core->pinned_in_use;
    if (!core->closed) {
      core->kept.push_back(p);
      return;
    }
    core->pinned_bytes -= core->bytes();
    lock.unlock();
    core->allocator->FreePinned(p);
  }
};

struct HeapRelease {
  void operator()(StateBuffer* b) const {
    delete[] b->data();
    delete b;
  }
};

}  // namespace

HostStatePool::HostStatePool(size_t floats, int64_t pinned_cap_bytes, PinnedAllocator* allocator)
    : core_(std::make_shared<Core>(floats, pinned_cap_bytes, allocator)) {}

HostStatePool::~HostStatePool() {
  std::vector<float*> kept;
  {
    std::lock_guard<std::mutex> lock(core_->mu);
    core_->closed = true;
    kept.swap(core_->kept);
    core_->pinned_bytes -= static_cast<int64_t>(kept.size()) * core_->bytes();
  }
  for (float* p : kept) core_->allocator->FreePinned(p);
}

MutableHostState HostStatePool::Acquire(bool zero) {
  Core& c = *core_;
  const size_t bytes = c.floats * sizeof(float);
  float* pinned = nullptr;
  bool try_pin = false;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (!c.kept.empty()) {
      pinned = c.kept.back();
      c.kept.pop_back();
      ++c.pinned_in_use;
    } else if (c.allocator != nullptr && !c.pin_failed && c.cap_bytes >= c.bytes()) {
      if (c.pinned_bytes + c.bytes() <= c.cap_bytes) {
        c.pinned_bytes += c.bytes();  // reserved while the (slow) pinning runs unlocked
        try_pin = true;
      } else {
        ++c.fallbacks;
      }
    }
  }
  bool fresh = false;  // AllocPinned's memory is zeroed already
  if (try_pin) {
    absl::StatusOr<void*> p = c.allocator->AllocPinned(bytes);
    std::lock_guard<std::mutex> lock(c.mu);
    if (p.ok() && *p != nullptr) {
      pinned = static_cast<float*>(*p);
      fresh = true;
      ++c.pinned_in_use;
    } else {
      c.pinned_bytes -= c.bytes();
      if (!p.ok()) {
        ++c.fallbacks;
        if (!c.pin_failed) {
          spdlog::warn("{}; state copies use pageable host memory from now on (slower on a "
                       "GPU)",
                       std::string(p.status().message()));
        }
      }
      c.pin_failed = true;  // declined (nothing to gain) or failed: do not ask again
    }
  }
  if (pinned != nullptr) {
    if (zero && !fresh) std::memset(pinned, 0, bytes);
    return MutableHostState(new StateBuffer(pinned, c.floats, /*pinned=*/true),
                            PinnedRelease{core_});
  }
  float* heap = zero ? new float[c.floats]() : new float[c.floats];
  return MutableHostState(new StateBuffer(heap, c.floats, /*pinned=*/false), HeapRelease{});
}

HostStatePoolStats HostStatePool::Stats() const {
  std::lock_guard<std::mutex> lock(core_->mu);
  return {.pinned_bytes = core_->pinned_bytes,
          .pinned_in_use = core_->pinned_in_use,
          .pageable_fallbacks = core_->fallbacks};
}

MutableHostState MakePageableState(absl::Span<const float> values) {
  float* heap = new float[values.size()];
  if (!values.empty()) std::memcpy(heap, values.data(), values.size() * sizeof(float));
  return MutableHostState(new StateBuffer(heap, values.size(), /*pinned=*/false), HeapRelease{});
}

}  // namespace xlstmd::core
