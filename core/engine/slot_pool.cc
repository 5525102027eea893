#include "core/engine/slot_pool.h"

#include <limits>

#include "core/base/check.h"

namespace xlstmd::core {

SlotPool::SlotPool(int32_t slots) : capacity_(slots) {
  for (int32_t s = slots - 1; s >= 0; --s) free_.push_back(s);
}

int32_t SlotPool::Take() {
  if (free_.empty()) return -1;
  const int32_t slot = free_.back();
  free_.pop_back();
  return slot;
}

void SlotPool::Free(int32_t slot) {
  if (slot < 0) return;
  XLSTMD_CHECK(slot < capacity_);
  free_.push_back(slot);
}

void SlotPool::MakeResident(const std::string& id, int32_t slot) {
  auto [it, inserted] = residents_.try_emplace(id);
  if (inserted) {
    resident_count_.fetch_add(1, std::memory_order_relaxed);
  } else {
    Free(it->second.slot);
  }
  it->second.slot = slot;
  it->second.last_used = ++tick_;
}

int32_t SlotPool::ResidentSlot(const std::string& id) const {
  auto it = residents_.find(id);
  return it == residents_.end() ? -1 : it->second.slot;
}

void SlotPool::Evict(const std::string& id) {
  auto it = residents_.find(id);
  if (it == residents_.end()) return;
  Free(it->second.slot);
  residents_.erase(it);
  resident_count_.fetch_sub(1, std::memory_order_relaxed);
}

void SlotPool::Touch(const std::string& id) {
  auto it = residents_.find(id);
  if (it != residents_.end()) it->second.last_used = ++tick_;
}

std::optional<std::string> SlotPool::LeastRecentlyUsed() const {
  std::optional<std::string> victim;
  uint64_t oldest = std::numeric_limits<uint64_t>::max();
  for (const auto& [id, r] : residents_) {
    if (r.last_used < oldest) {
      oldest = r.last_used;
      victim = id;
    }
  }
  return victim;
}

}  // namespace xlstmd::core
