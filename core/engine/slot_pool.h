// SlotPool: the fixed set of state slots in backend memory, as bookkeeping. A slot is free,
// holds a running turn's working state (taken, owned by the turn), or holds a session's
// committed state (resident). Residents are kept in least-recently-used order so the state
// tiers can pick which one to evict when a turn needs a slot. The pool moves no state: the
// tiers copy states in and out through the backend.
//
// Thread rules: the scheduler thread only (not thread-safe), except resident_count(), which
// any thread may read for stats.
#ifndef XLSTMD_CORE_ENGINE_SLOT_POOL_H_
#define XLSTMD_CORE_ENGINE_SLOT_POOL_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace xlstmd::core {

class SlotPool {
 public:
  explicit SlotPool(int32_t slots);
  SlotPool(const SlotPool&) = delete;
  SlotPool& operator=(const SlotPool&) = delete;

  int32_t capacity() const { return capacity_; }
  int32_t free_count() const { return static_cast<int32_t>(free_.size()); }
  int32_t resident_count() const { return resident_count_.load(std::memory_order_relaxed); }

  // A free slot (lowest number first), or -1 when every slot is taken or resident.
  int32_t Take();
  // Gives a taken slot back. -1 is ignored.
  void Free(int32_t slot);

  // `slot` (taken) now holds `id`'s committed state; a slot `id` held before is freed.
  void MakeResident(const std::string& id, int32_t slot);
  // The slot holding `id`'s committed state, or -1.
  int32_t ResidentSlot(const std::string& id) const;
  // `id`'s committed state leaves its slot: the slot is freed. No-op when not resident.
  void Evict(const std::string& id);
  // Marks `id` as just used (it moves to the back of the eviction order).
  void Touch(const std::string& id);
  // The least recently used resident session; nullopt when none is resident.
  std::optional<std::string> LeastRecentlyUsed() const;

 private:
  struct Resident {
    int32_t slot = -1;
    uint64_t last_used = 0;
  };
  const int32_t capacity_;
  std::vector<int32_t> free_;  // a stack: lowest slot on top
  std::unordered_map<std::string, Resident> residents_;
  uint64_t tick_ = 0;
  std::atomic<int32_t> resident_count_{0};
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_SLOT_POOL_H_
