// SlotPool on its own: pure bookkeeping.
#include "core/engine/slot_pool.h"

#include "gtest/gtest.h"

namespace xlstmd::core {
namespace {

TEST(SlotPoolTest, TakesLowestFirstAndRefusesWhenFull) {
  SlotPool pool(2);
  EXPECT_EQ(pool.Take(), 0);
  EXPECT_EQ(pool.Take(), 1);
  EXPECT_EQ(pool.Take(), -1);
  pool.Free(1);
  EXPECT_EQ(pool.free_count(), 1);
  EXPECT_EQ(pool.Take(), 1);
}

TEST(SlotPoolTest, ResidencyAndLeastRecentlyUsedOrder) {
  SlotPool pool(3);
  pool.MakeResident("a", pool.Take());
  pool.MakeResident("b", pool.Take());
  EXPECT_EQ(pool.resident_count(), 2);
  EXPECT_EQ(*pool.LeastRecentlyUsed(), "a");
  pool.Touch("a");
  EXPECT_EQ(*pool.LeastRecentlyUsed(), "b");
  // A new committed slot replaces the old one, which becomes free.
  const int32_t old_slot = pool.ResidentSlot("a");
  pool.MakeResident("a", pool.Take());
  EXPECT_NE(pool.ResidentSlot("a"), old_slot);
  EXPECT_EQ(pool.resident_count(), 2);
  EXPECT_EQ(pool.free_count(), 1);
  pool.Evict("b");
  EXPECT_EQ(pool.ResidentSlot("b"), -1);
  EXPECT_EQ(pool.resident_count(), 1);
  EXPECT_EQ(pool.free_count(), 2);
  pool.Evict("missing");  // no-op
  EXPECT_EQ(*pool.LeastRecentlyUsed(), "a");
}

}  // namespace
}  // namespace xlstmd::core
