// Logs name sessions by a hash: the default, an installed hasher, and ids scrubbed from error
// text (file names and Redis keys are built from them).
#include "core/base/log_id.h"

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xlstmd::base {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(LogIdTest, DefaultHashIsStableHexAndNeverTheId) {
  const std::string h = LogSessionId("INW02M6xANf6apyJ6MSCUA");
  EXPECT_EQ(h.size(), 16u);
  EXPECT_EQ(h, LogSessionId("INW02M6xANf6apyJ6MSCUA"));
  EXPECT_NE(h, LogSessionId("INW02M6xANf6apyJ6MSCUB"));
  EXPECT_THAT(h, Not(HasSubstr("INW02")));
}

TEST(LogIdTest, StatusTextLosesEveryOccurrenceOfTheId) {
  const std::string id = "AbCdEfGhIjKlMnOpQrStUv";
  const absl::Status s = absl::DataLossError("/var/lib/xlstmd/" + id + ".xss: short read of " + id);
  const std::string text = LogStatus(s, id);
  EXPECT_THAT(text, Not(HasSubstr(id)));
  EXPECT_THAT(text, HasSubstr(LogSessionId(id) + ".xss"));
  EXPECT_THAT(text, HasSubstr("DATA_LOSS"));
}

TEST(LogIdTest, AnInstalledHasherIsUsed) {
  SetSessionIdHasher([](std::string_view) { return std::string("fixed"); });
  EXPECT_EQ(LogSessionId("x"), "fixed");
  SetSessionIdHasher(nullptr);  // back to the default
  EXPECT_NE(LogSessionId("x"), "fixed");
}

}  // namespace
}  // namespace xlstmd::base
