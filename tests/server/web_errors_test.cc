// The one table from gRPC codes to HTTP (docs/web.md), decided from status fields only.
#include "gtest/gtest.h"
#include "core/base/retry.h"
#include "server/web_internal.h"

namespace xlstmd::server::web {
namespace {

TEST(WebErrorsTest, EveryCodeHasItsHttpStatus) {
  struct Case {
    absl::Status status;
    int http;
    const char* type;
  };
  const Case cases[] = {
      {absl::InvalidArgumentError("x"), 400, "invalid_request_error"},
      {absl::FailedPreconditionError("x"), 400, "invalid_request_error"},
      {absl::OutOfRangeError("x"), 400, "invalid_request_error"},
      {absl::UnauthenticatedError("x"), 401, "authentication_error"},
      {absl::PermissionDeniedError("x"), 403, "permission_error"},
      {absl::NotFoundError("x"), 404, "not_found_error"},
      {absl::AbortedError("x"), 409, "conflict_error"},
      {absl::AlreadyExistsError("x"), 409, "conflict_error"},
      {absl::ResourceExhaustedError("x"), 400, "invalid_request_error"},
      {base::CapacityError("x", base::kShedQueueFull), 429, "rate_limit_error"},
      {absl::UnavailableError("x"), 503, "service_unavailable_error"},
      {absl::DeadlineExceededError("x"), 504, "timeout_error"},
      {absl::DataLossError("x"), 500, "server_error"},
      {absl::InternalError("x"), 500, "server_error"},
      {absl::UnknownError("x"), 500, "server_error"},
  };
  for (const Case& c : cases) {
    const HttpError e = MapStatus(c.status);
    EXPECT_EQ(e.http_status, c.http) << c.status;
    EXPECT_EQ(e.type, c.type) << c.status;
  }
  EXPECT_TRUE(MapStatus(base::CapacityError("x", base::kShedQueueFull)).retry_after);
  EXPECT_TRUE(MapStatus(absl::UnavailableError("x")).retry_after);
  EXPECT_FALSE(MapStatus(absl::ResourceExhaustedError("x")).retry_after);
  EXPECT_TRUE(MapStatus(absl::AbortedError("x")).should_not_retry);
  EXPECT_EQ(MapStatus(absl::NotFoundError("x")).code, "not_found");
}

TEST(WebErrorsTest, TheMessageTextNeverDecides) {
  // A limit refusal whose text says "retry later" is still a 400.
  EXPECT_EQ(MapStatus(absl::ResourceExhaustedError("queue full; retry later")).http_status, 400);
  EXPECT_EQ(MapStatus(WithHttpStatus(absl::InvalidArgumentError("x"), 415)).http_status, 415);
}

TEST(WebErrorsTest, TheErrorObjectHasTheOpenAiFields) {
  const Json e = ErrorObject(absl::NotFoundError("session 'x' not found"), "session_id");
  EXPECT_EQ(e["message"], "session 'x' not found");
  EXPECT_EQ(e["type"], "not_found_error");
  EXPECT_EQ(e["param"], "session_id");
  EXPECT_EQ(e["code"], "not_found");
  EXPECT_TRUE(ErrorObject(absl::InternalError("x"))["param"].is_null());
}

}  // namespace
}  // namespace xlstmd::server::web
