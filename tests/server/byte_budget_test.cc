// The budgets behind --snapshot-bytes-in-flight, --tenant-snapshot-bytes and --max-streams
// (server/byte_budget.h).
#include "server/byte_budget.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xlstmd::server {
namespace {

using ::testing::HasSubstr;

TEST(ByteBudgetTest, CountsAreStrictAndTheFirstHolderMayExceed) {
  ByteBudget streams(2);  // as --max-streams: one unit per call
  EXPECT_TRUE(streams.TryTake(1));
  EXPECT_TRUE(streams.TryTake(1));
  EXPECT_FALSE(streams.TryTake(1));
  streams.Give(1);
  EXPECT_TRUE(streams.TryTake(1));
  ByteBudget bytes(10);
  EXPECT_TRUE(bytes.TryTake(25));  // alone: allowed, or a big snapshot could never pass
  EXPECT_FALSE(bytes.TryTake(1));
}

TEST(TenantByteBudgetTest, EachTenantHasItsOwnLimitAndIdleTenantsAreForgotten) {
  TenantByteBudget b(100, {{"big", 1000}, {"free", 0}});
  EXPECT_EQ(b.LimitFor("x"), 100u);
  EXPECT_EQ(b.LimitFor("big"), 1000u);
  EXPECT_TRUE(b.TryTake("x", 60));
  EXPECT_FALSE(b.TryTake("x", 60));
  EXPECT_TRUE(b.TryTake("y", 60));  // another tenant is not affected
  EXPECT_TRUE(b.TryTake("big", 600));
  EXPECT_TRUE(b.TryTake("free", uint64_t{1} << 40));  // 0 = no quota
  EXPECT_TRUE(b.TryTake("free", uint64_t{1} << 40));
  b.Give("x", 60);
  EXPECT_EQ(b.in_flight("x"), 0u);
  EXPECT_TRUE(b.TryTake("x", 100));
}

TEST(SnapshotHoldTest, TakesBothBudgetsOrNeither) {
  ByteBudget shared(100);
  TenantByteBudget tenants(50, {});
  const SnapshotBudgets budgets{&shared, &tenants};
  {
    SnapshotHold a;
    ASSERT_TRUE(a.Take(budgets, "t", 40).ok());
    SnapshotHold b;
    const absl::Status refused = b.Take(budgets, "t", 40);  // shared has room, t has not
    EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(refused.message(), HasSubstr("tenant t's snapshot bytes"));
    EXPECT_EQ(shared.in_flight(), 40u);  // the refused call holds nothing
    SnapshotHold c;
    ASSERT_TRUE(c.Take(budgets, "u", 40).ok());
    SnapshotHold d;
    const absl::Status full = d.Take(budgets, "v", 40);  // shared is full
    EXPECT_THAT(full.message(), HasSubstr("--snapshot-bytes-in-flight"));
    EXPECT_EQ(tenants.in_flight("v"), 0u);
    a.ShrinkTo(10);
    EXPECT_EQ(shared.in_flight(), 50u);
    EXPECT_EQ(tenants.in_flight("t"), 10u);
  }
  EXPECT_EQ(shared.in_flight(), 0u);
  EXPECT_EQ(tenants.in_flight("t"), 0u);
  EXPECT_EQ(tenants.in_flight("u"), 0u);
}

}  // namespace
}  // namespace xlstmd::server
