// The CUDA backend's launch planning, tested without a GPU: the decode GEMM's reduction
// depends only on K (batch invariance), grids cover every output, the mLSTM chunk fits the
// shared memory it is given, the sLSTM CTA depends only on the head dim, graph buckets pad
// upwards, the pinned ring never hands out overlapping bytes, and the prefill GEMM's staging
// and algorithm key do not depend on the rows of a call.
#include "kernels/cuda/launch_plan.h"

#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace xlstmd::kernels::cuda {
namespace {

TEST(LaunchPlanTest, DecodeGemmReductionDependsOnlyOnKAndDtype) {
  for (int64_t k : {1, 7, 8, 255, 256, 257, 4096, 11008}) {
    for (size_t es : {2u, 4u}) {
      const GemmReduction ref = PlanDecodeGemm(1, 64, k, es).reduction;
      EXPECT_EQ(ref.vec, static_cast<int64_t>(16 / es));
      EXPECT_GE(ref.lane_steps * 32 * ref.vec, k);
      EXPECT_LT((ref.lane_steps - 1) * 32 * ref.vec, k);
      for (int64_t m : {1, 2, 8, 9, 33, 64, 256, 300, 4096}) {
        for (int64_t n : {1, 8, 50304}) {
          const DecodeGemmPlan p = PlanDecodeGemm(m, n, k, es);
          EXPECT_EQ(p.reduction, ref) << m << " " << n << " " << k;
          EXPECT_GE(p.grid.x * kGemmWarps, n);
          EXPECT_GE(p.grid.y * p.m_tile, m);
          EXPECT_LT((p.grid.y - 1) * p.m_tile, m);
          EXPECT_EQ(p.threads, 32 * kGemmWarps);
        }
      }
    }
  }
  EXPECT_EQ(PaddedWeightCols(4095, 2), 4096);
  EXPECT_EQ(PaddedWeightCols(4095, 4), 4096);
  EXPECT_EQ(PaddedWeightCols(9, 2), 16);
}

TEST(LaunchPlanTest, PrefillGemmStagingAndWindows) {
  // Staged rows are whole 16-byte vectors of bf16, so every row of hi and lo stays aligned.
  for (int64_t k : {1, 7, 8, 9, 255, 4096, 10944}) {
    EXPECT_EQ(StagedCols(k) % 8, 0);
    EXPECT_GE(StagedCols(k), k);
    EXPECT_LT(StagedCols(k) - 8, k);
  }
  EXPECT_EQ(PrefillStagingBytes(4096, 10944), 2u * 4096 * 10944 * 2);
  EXPECT_EQ(PrefillStagingBytes(0, 4096), 0u);
  EXPECT_EQ(PrefillStagingBytes(16, 0), 0u);
  // Windows tile [0, m) in order, each at most the staged rows.
  for (int64_t m : {1, 5, 512, 513, 5000}) {
    for (int64_t rows : {1, 7, 512}) {
      int64_t next = 0;
      for (const auto& [b, e] : PrefillWindows(m, rows)) {
        EXPECT_EQ(b, next);
        EXPECT_GT(e, b);
        EXPECT_LE(e - b, rows);
        next = e;
      }
      EXPECT_EQ(next, m);
    }
  }
  EXPECT_TRUE(PrefillWindows(0, 16).empty());
}

TEST(LaunchPlanTest, PrefillGemmKeyHoldsAlignmentNotRows) {
  EXPECT_EQ(OperandAlignment(0x1000, 4096 * 4), 16);
  EXPECT_EQ(OperandAlignment(0x1004, 4096 * 4), 4);
  EXPECT_EQ(OperandAlignment(0x1000, 4 * 5), 4);   // an odd f32 row stride
  EXPECT_EQ(OperandAlignment(0x1008, 4 * 6), 8);
  EXPECT_EQ(OperandAlignment(0x1001, 16), 1);
  // The key that pins an algorithm has no M: two calls of any rows on the same weight and
  // buffers share it, and order is strict.
  PrefillGemmKey a{4096, 11008, 11008, 11008, 4096, 2, 16, 16};
  PrefillGemmKey b = a;
  EXPECT_EQ(a, b);
  EXPECT_FALSE(a < b || b < a);
  b.y_align = 4;
  EXPECT_TRUE(b < a || a < b);
  EXPECT_NE(a < b, b < a);
  b = a;
  b.ldy = 4100;
  EXPECT_NE(a < b, b < a);
}

TEST(LaunchPlanTest, RowThreadsDependOnWidthOnly) {
  EXPECT_EQ(RowThreads(64), 64);
  EXPECT_EQ(RowThreads(4096), 512);
  for (int64_t w = 1; w < 20000; w += 37) {
    EXPECT_EQ(RowThreads(w) % 32, 0);
    EXPECT_LE(RowThreads(w), 1024);
  }
}

TEST(LaunchPlanTest, MlstmPlansFitTheirSharedMemory) {
  // xLSTM-7B heads (dqk 256, dv 512): a CTA of 512 threads per (sequence, head).
  const MlstmPlan step = PlanMlstmStep(256, 8, 256, 512);
  EXPECT_EQ(step.grid.x, 256);  // sessions on x: y is capped at 65535
  EXPECT_EQ(step.grid.y, 8);
  EXPECT_EQ(PlanMlstmStep(70000, 8, 16, 16).grid.x, 70000);
  EXPECT_EQ(step.threads, 512);
  std::string why;
  const MlstmPlan chunk = PlanMlstmChunkwise(3, 8, 256, 512, 64, 48 * 1024, &why);
  EXPECT_TRUE(why.empty()) << why;
  EXPECT_EQ(chunk.chunk, kMaxChunk);
  EXPECT_LE(chunk.smem_bytes, 48u * 1024);
  // Less shared memory: a smaller chunk, never an overflow.
  const MlstmPlan small = PlanMlstmChunkwise(3, 8, 256, 512, 64, 20 * 1024, &why);
  EXPECT_TRUE(why.empty()) << why;
  EXPECT_LT(small.chunk, kMaxChunk);
  EXPECT_LE(small.smem_bytes, 20u * 1024);
  // The chunk follows the request below the cap; the plan never depends on the batch.
  EXPECT_EQ(PlanMlstmChunkwise(1, 2, 16, 16, 4, 48 * 1024, &why).chunk, 4);
  EXPECT_EQ(PlanMlstmChunkwise(9, 2, 16, 16, 4, 48 * 1024, &why).chunk, 4);
  // Heads too large for any chunk: said, with the numbers.
  PlanMlstmChunkwise(1, 1, 100000, 64, 16, 48 * 1024, &why);
  EXPECT_NE(why.find("shared memory"), std::string::npos);
  EXPECT_EQ(PlanMlstmStep(1, 1, 8, 4).threads, 32);
  EXPECT_EQ(PlanMlstmStep(1, 1, 8, 5000).threads, 1024);
}

TEST(LaunchPlanTest, SlstmPlanDependsOnHeadDimOnly) {
  // One CTA per (sequence, head), sequences on x; threads over the 4*dh gate columns.
  const SlstmPlan p = PlanSlstm(70000, 4, 16);
  EXPECT_EQ(p.grid.x, 70000);
  EXPECT_EQ(p.grid.y, 4);
  EXPECT_EQ(p.threads, 64);
  EXPECT_EQ(p.smem_bytes, 5 * 16 * sizeof(float));
  EXPECT_EQ(PlanSlstm(1, 4, 16).threads, p.threads);
  EXPECT_EQ(PlanSlstm(1, 1, 3).threads, 32);
  EXPECT_EQ(PlanSlstm(1, 1, 1024).threads, 1024);  // more columns than threads: they loop
  EXPECT_EQ(PlanSlstm(1, 1, 1024).smem_bytes, 5 * 1024 * sizeof(float));
}

TEST(LaunchPlanTest, DecodeBucketsPadUpwards) {
  EXPECT_EQ(DecodeBucket(1), 1);
  EXPECT_EQ(DecodeBucket(3), 4);
  EXPECT_EQ(DecodeBucket(65), 96);
  EXPECT_EQ(DecodeBucket(256), 256);
  EXPECT_EQ(DecodeBucket(257), 0);
  int64_t prev = 0;
  for (int64_t b : DecodeBuckets()) {
    EXPECT_GT(b, prev);
    prev = b;
  }
  for (int64_t batch = 1; batch <= 256; ++batch) EXPECT_GE(DecodeBucket(batch), batch);
}

// Random claims and in-order releases: live claims never overlap and stay inside the ring.
// The nominal tensor-core peaks the bench divides by: the published dense bf16 figures.
TEST(LaunchPlanTest, MmaRatesGiveThePublishedPeaks) {
  EXPECT_NEAR(MmaFlopsPerClockPerSm(9, 0) * 132 * 1.83e9 / 1e12, 989, 2);  // H100 SXM
  EXPECT_NEAR(MmaFlopsPerClockPerSm(8, 0) * 108 * 1.41e9 / 1e12, 312, 1);  // A100
  EXPECT_EQ(MmaFlopsPerClockPerSm(8, 9), 1024);
  EXPECT_EQ(MmaFlopsPerClockPerSm(7, 5), 0);  // unknown: the bench uses its measured rate
}

TEST(LaunchPlanTest, PinnedBlocksKnowWhichPointersArePinned) {
  PinnedBlocks blocks;
  alignas(64) static char a[256], b[128];
  blocks.Add(a, sizeof(a));
  blocks.Add(b, sizeof(b));
  EXPECT_TRUE(blocks.Contains(a));
  EXPECT_TRUE(blocks.Contains(a + 255));
  EXPECT_TRUE(blocks.Contains(b + 64));
  const char c = 0;  // a pageable byte elsewhere
  EXPECT_FALSE(blocks.Contains(&c));
  blocks.Remove(a);
  EXPECT_FALSE(blocks.Contains(a + 10));
  EXPECT_TRUE(blocks.Contains(b));
}

TEST(LaunchPlanTest, PinnedRingNeverOverlaps) {
  std::mt19937 rng(1);
  PinnedRing ring(64 * 1024);
  std::vector<std::pair<int64_t, size_t>> live;  // oldest first
  for (int it = 0; it < 20000; ++it) {
    if (rng() % 3 != 0 || live.empty()) {
      const size_t bytes = 1 + rng() % (20 * 1024);
      const int64_t off = ring.Claim(bytes);
      if (off < 0) {
        ASSERT_FALSE(live.empty()) << "an empty ring refused " << bytes << " bytes";
        continue;
      }
      ASSERT_EQ(off % 256, 0);
      ASSERT_LE(static_cast<size_t>(off) + bytes, ring.capacity());
      for (const auto& [o, b] : live) {
        ASSERT_TRUE(static_cast<size_t>(off) + bytes <= static_cast<size_t>(o) ||
                    static_cast<size_t>(o) + b <= static_cast<size_t>(off))
            << "claim at " << off << " overlaps " << o;
      }
      live.emplace_back(off, bytes);
    } else {
      ring.ReleaseOldest();
      live.erase(live.begin());
    }
    ASSERT_EQ(ring.claims(), live.size());
  }
  EXPECT_EQ(ring.Claim(ring.capacity() + 1), -1);
}

}  // namespace
}  // namespace xlstmd::kernels::cuda
