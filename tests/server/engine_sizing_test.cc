// Engine sizes by backend: CPU defaults, GPU defaults, --slots auto from free device memory,
// explicit values kept, and a device too small for one state refused with the numbers.
#include "server/engine_sizing.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xlstmd::server {
namespace {

using ::testing::HasSubstr;

TEST(EngineSizingTest, CpuDefaults) {
  EngineSizes s;
  ASSERT_TRUE(ResolveEngineSizes({}, &s).ok());
  EXPECT_EQ(s.slots, 64);
  EXPECT_EQ(s.max_batch, 64);
  EXPECT_EQ(s.prefill_piece, 128);
  EXPECT_EQ(s.prefill_budget, 512);
}

TEST(EngineSizingTest, GpuAutoSlotsFillFreeMemory) {
  SizingInput in;
  in.gpu = true;
  in.free_bytes = size_t{60} << 30;                 // 60 GiB left after the weights
  in.bytes_per_slot = size_t{33} << 20;              // an xLSTM-7B-sized state
  in.bytes_per_forward_row = 100 * 1024;
  in.bytes_per_logit_row = 2 * 50304 * 4;
  EngineSizes s;
  ASSERT_TRUE(ResolveEngineSizes(in, &s).ok());
  EXPECT_EQ(s.max_batch, 256);
  EXPECT_EQ(s.prefill_piece, 512);
  EXPECT_EQ(s.prefill_budget, 4096);
  const double buffers = 4096.0 * in.bytes_per_forward_row + 256.0 * in.bytes_per_logit_row;
  const double usable = 0.9 * in.free_bytes - buffers - kGpuHeadroomBytes;
  EXPECT_EQ(s.slots, static_cast<int64_t>(usable / in.bytes_per_slot));
  EXPECT_GT(s.slots, 1000);
  EXPECT_THAT(s.note, HasSubstr("slots"));
}

TEST(EngineSizingTest, ExplicitValuesAreKeptAndBatchFollowsFewSlots) {
  SizingInput in;
  in.gpu = true;
  in.free_bytes = size_t{3} << 30;
  in.bytes_per_slot = size_t{200} << 20;
  EngineSizes s;
  s.prefill_piece = 64;
  ASSERT_TRUE(ResolveEngineSizes(in, &s).ok());
  EXPECT_EQ(s.prefill_piece, 64);
  EXPECT_EQ(s.prefill_budget, 4096);
  EXPECT_GE(s.slots, 1);
  EXPECT_EQ(s.max_batch, s.slots);  // fewer slots than the default batch
  EngineSizes given{7, 3, 100, 50, ""};
  ASSERT_TRUE(ResolveEngineSizes(in, &given).ok());
  EXPECT_EQ(given.slots, 7);
  EXPECT_EQ(given.max_batch, 3);
  EXPECT_EQ(given.prefill_budget, 100);
  EXPECT_TRUE(given.note.empty());
}

TEST(EngineSizingTest, TooLittleDeviceMemoryIsAClearError) {
  SizingInput in;
  in.gpu = true;
  in.free_bytes = size_t{512} << 20;
  in.bytes_per_slot = size_t{64} << 20;
  EngineSizes s;
  const absl::Status st = ResolveEngineSizes(in, &s);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("512 MiB free"));
  EngineSizes bad{0, 0, 100, 200, ""};
  EXPECT_EQ(ResolveEngineSizes({}, &bad).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace xlstmd::server
