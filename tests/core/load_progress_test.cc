// Progress reports while writing and loading a model: every byte is counted once, each shard
// is reported finished exactly once, and the totals agree with what is on disk; and the
// terminal progress bar's text.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/base/progress_bar.h"
#include "core/model/load_progress.h"
#include "core/model/random_model.h"
#include "core/model/xlstm_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "tests/core/model_files_testutil.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

using ::xlstmd::testing::IsOk;
using ::xlstmd::testing::ScopedTempDir;

RandomModelSpec SmallSpec() {
  RandomModelSpec s;
  s.embedding_dim = 64;
  s.num_blocks = 3;
  s.num_heads = 2;
  s.vocab = 300;
  s.seed = 3;
  s.max_shard_bytes = 200 * 1024;  // several shards
  return s;
}

TEST(LoadProgressTest, WritingReportsEveryByteOfTheShards) {
  ScopedTempDir dir;
  RandomModelSpec spec = SmallSpec();
  std::mutex mu;
  uint64_t last = 0, total = 0;
  int calls = 0;
  spec.progress = [&](uint64_t done, uint64_t all) {
    std::lock_guard<std::mutex> lock(mu);
    last = std::max(last, done);
    total = all;
    ++calls;
  };
  ASSERT_THAT(WriteRandomModel(spec, dir.path()), IsOk());
  EXPECT_GT(calls, 1);
  EXPECT_EQ(last, total);
  uint64_t on_disk = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().extension() == ".safetensors") on_disk += e.file_size();
  }
  EXPECT_GT(total, 0u);
  EXPECT_LE(total, on_disk);  // the shards also hold their headers
  EXPECT_GT(total, on_disk * 9 / 10);
}

TEST(LoadProgressTest, LoadingReportsEachShardOnceAndEndsAtTheTotal) {
  ScopedTempDir dir;
  ASSERT_THAT(WriteRandomModel(SmallSpec(), dir.path()), IsOk());
  int shards_on_disk = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    shards_on_disk += e.path().extension() == ".safetensors";
  }
  ASSERT_GT(shards_on_disk, 1);

  auto backend = kernels::CreateBackend("cpu", {2, kernels::DType::kF32});
  ASSERT_THAT(backend.status(), IsOk());
  std::vector<LoadProgress> reports;
  LoadOptions lo;
  lo.progress = [&](const LoadProgress& p) { reports.push_back(p); };  // serialised
  auto model = XlstmModel::Load(dir.path(), backend->get(), lo);
  ASSERT_THAT(model.status(), IsOk());

  ASSERT_FALSE(reports.empty());
  std::map<std::string, int> finished;
  uint64_t prev = 0;
  for (const LoadProgress& p : reports) {
    EXPECT_EQ(p.files_total, shards_on_disk);
    EXPECT_GE(p.bytes_done, prev) << "progress never goes back";
    prev = p.bytes_done;
    if (p.file_done) {
      ++finished[p.file];
      EXPECT_EQ(p.files_done, static_cast<int>(finished.size()));
      EXPECT_GT(p.file_bytes, 0u);
    }
  }
  EXPECT_EQ(static_cast<int>(finished.size()), shards_on_disk);
  // Shards finish as their matrices do, not all at the end.
  for (const LoadProgress& p : reports) {
    if (p.file_done) {
      EXPECT_LT(p.bytes_done, p.bytes_total) << "the first shard finished only at the end";
      break;
    }
  }
  for (const auto& [file, n] : finished) EXPECT_EQ(n, 1) << file;
  EXPECT_EQ(reports.back().bytes_done, reports.back().bytes_total);
  EXPECT_EQ(reports.back().files_done, shards_on_disk);
}

TEST(ProgressBarTest, RendersFractionAmountAndTime) {
  using base::ProgressBar;
  EXPECT_EQ(ProgressBar::Render("loading weights", ProgressBar::Units::kBytes, 7'100'000'000,
                                14'200'000'000, 12.4),
            "loading weights [##########          ]  50%  7.1/14.2 GB  12 s");
  EXPECT_EQ(ProgressBar::Render("q", ProgressBar::Units::kBytes, 0, 5'000'000, 0),
            "q [                    ]   0%  0.0/5.0 MB  0 s");
  EXPECT_EQ(ProgressBar::Render("n", ProgressBar::Units::kCount, 3, 3, 1),
            "n [####################] 100%  3/3  1 s");
  EXPECT_EQ(ProgressBar::Render("z", ProgressBar::Units::kCount, 0, 0, 0),
            "z [                    ]   0%  0/0  0 s");
}

TEST(ProgressBarTest, DrawsNothingIntoAFileOrPipe) {
  ScopedTempDir dir;
  const std::filesystem::path path = dir.path() / "log";
  std::FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  {
    base::ProgressBar bar("x", base::ProgressBar::Units::kBytes, f);
    EXPECT_FALSE(bar.enabled());
    bar.Update(1, 2);
    bar.Update(2, 2);
    bar.Clear();
  }
  std::fclose(f);
  EXPECT_EQ(std::filesystem::file_size(path), 0u);
}

}  // namespace
}  // namespace xlstmd::core
