// gMock matchers for absl::Status and absl::StatusOr<T>. Debian's Abseil 20220623 ships no
// status_matchers.h, so these stand in for absl's:
//
//   EXPECT_THAT(DoThing(), IsOk());
//   EXPECT_THAT(MakeThing(), StatusIs(absl::StatusCode::kInvalidArgument));
//   EXPECT_THAT(MakeThing(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("CUDA")));
//
// Test-only; header-only so any test binary can use it without linking anything.
#ifndef XLSTMD_TESTS_TESTING_STATUS_MATCHERS_H_
#define XLSTMD_TESTS_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace xlstmd::testing {
namespace internal_status {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// Polymorphic: matches absl::Status and any absl::StatusOr<T>.
class StatusIsMatcher {
 public:
  StatusIsMatcher(absl::StatusCode code, ::testing::Matcher<const std::string&> message)
      : code_(code), message_(std::move(message)) {}

  template <typename T>
  bool MatchAndExplain(const T& value, ::testing::MatchResultListener* listener) const {
    const absl::Status& s = GetStatus(value);
    *listener << "whose status is " << s.ToString();
    if (s.code() != code_) return false;
    return message_.MatchAndExplain(std::string(s.message()), listener);
  }

  void DescribeTo(std::ostream* os) const {
    *os << "has status code " << absl::StatusCodeToString(code_) << " and a message that ";
    message_.DescribeTo(os);
  }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "does not have status code " << absl::StatusCodeToString(code_)
        << " or has a message that ";
    message_.DescribeNegationTo(os);
  }

 private:
  absl::StatusCode code_;
  ::testing::Matcher<const std::string&> message_;
};

}  // namespace internal_status

// The status (or StatusOr's status) has `code` and a message matching `message`.
template <typename MessageMatcher>
::testing::PolymorphicMatcher<internal_status::StatusIsMatcher> StatusIs(
    absl::StatusCode code, MessageMatcher&& message) {
  return ::testing::MakePolymorphicMatcher(internal_status::StatusIsMatcher(
      code, ::testing::SafeMatcherCast<const std::string&>(
                std::forward<MessageMatcher>(message))));
}

inline ::testing::PolymorphicMatcher<internal_status::StatusIsMatcher> StatusIs(
    absl::StatusCode code) {
  return StatusIs(code, ::testing::_);
}

inline ::testing::PolymorphicMatcher<internal_status::StatusIsMatcher> IsOk() {
  return StatusIs(absl::StatusCode::kOk);
}

}  // namespace xlstmd::testing

#endif  // XLSTMD_TESTS_TESTING_STATUS_MATCHERS_H_
