// Where xlstmd finds its model when --model is not given, and how load failures read.
#include "server/model_loader.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::server {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using xlstmd::testing::StatusIs;

class ResolveModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("xlstmd_resolve_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "repo" / "build" / "bin");
    fs::create_directories(root_ / "elsewhere");
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path exe() const { return root_ / "repo" / "build" / "bin" / "xlstmd"; }
  fs::path root_;
};

TEST_F(ResolveModelDirTest, ExplicitDirectoryMustExist) {
  fs::create_directories(root_ / "m");
  EXPECT_EQ(ResolveModelDir((root_ / "m").string(), exe(), root_).value(), root_ / "m");
  EXPECT_THAT(ResolveModelDir((root_ / "missing").string(), exe(), root_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("does not exist")));
}

TEST_F(ResolveModelDirTest, BundledModelBesideTheBuildTreeComesFirst) {
  fs::create_directories(root_ / "repo" / "models" / "demo");
  fs::create_directories(root_ / "elsewhere" / "models" / "demo");
  EXPECT_EQ(ResolveModelDir("", exe(), root_ / "elsewhere").value(),
            root_ / "repo" / "models" / "demo");
}

TEST_F(ResolveModelDirTest, FindsTheInstalledCopy) {
  const fs::path prefix = root_ / "usr";
  fs::create_directories(prefix / "bin");
  fs::create_directories(prefix / "share" / "xlstmd" / "models" / "demo");
  fs::create_directories(root_ / "elsewhere" / "models" / "demo");
  EXPECT_EQ(ResolveModelDir("", prefix / "bin" / "xlstmd", root_ / "elsewhere").value(),
            prefix / "share" / "xlstmd" / "models" / "demo");
}

TEST_F(ResolveModelDirTest, FallsBackToTheWorkingDirectory) {
  fs::create_directories(root_ / "elsewhere" / "models" / "demo");
  EXPECT_EQ(ResolveModelDir("", exe(), root_ / "elsewhere").value(),
            root_ / "elsewhere" / "models" / "demo");
  EXPECT_EQ(ResolveModelDir("", fs::path(), root_ / "elsewhere").value(),
            root_ / "elsewhere" / "models" / "demo");
}

TEST_F(ResolveModelDirTest, MissingBundledModelSaysHowToGetItBack) {
  EXPECT_THAT(ResolveModelDir("", exe(), root_ / "elsewhere"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("models/demo"), HasSubstr("git checkout models/demo"),
                             HasSubstr("--model"))));
}

TEST(LoadModelTest, MissingWeightsFailWithTheDirectoryNamed) {
  const fs::path dir = fs::path(::testing::TempDir()) / "xlstmd_empty_model_dir";
  fs::create_directories(dir);
  ServerOptions options = DefaultServerOptions();
  options.threads = 1;
  absl::StatusOr<LoadedModel> m = LoadModel(options, dir);
  EXPECT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr(dir.string()));
  fs::remove_all(dir);
}

TEST(SelfExePathTest, PointsAtThisTestBinary) {
  const fs::path p = SelfExePath();
  EXPECT_TRUE(fs::exists(p)) << p;
}

}  // namespace
}  // namespace xlstmd::server
