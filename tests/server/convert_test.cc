// proto <-> core conversion and absl::Status <-> grpc::Status mapping (server/convert.h).
#include "server/convert.h"

#include <string>
#include <vector>

#include "core/base/retry.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using xlstmd::testing::StatusIs;

TEST(StatusMappingTest, EveryCodeAndMessageRoundTrips) {
  for (int c = 0; c <= 16; ++c) {
    const auto code = static_cast<absl::StatusCode>(c);
    const absl::Status s(code, code == absl::StatusCode::kOk ? "" : "why it failed");
    const grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), c);
    if (!s.ok()) {
      EXPECT_EQ(g.error_message(), "why it failed");
    }
    EXPECT_EQ(FromGrpcStatus(g), s);
  }
  // Spot-check the names line up, not just the numbers.
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("x")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(absl::UnauthenticatedError("x")).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ToGrpcStatus(absl::DeadlineExceededError("x")).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(ToGrpcStatus(absl::AbortedError("x")).error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("x")).error_code(), grpc::StatusCode::UNAVAILABLE);
}

// The rich error model: a field error carries a BadRequest naming the field; a capacity
// refusal an ErrorInfo with its reason and a RetryInfo; anything else no details at all.
TEST(StatusMappingTest, FieldAndCapacityErrorsCarryGoogleRpcDetails) {
  const grpc::Status bad = ToGrpcStatus(base::FieldError("sampling.max_tokens", "too many"));
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(bad.error_message(), "too many");
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(bad.error_details()));
  EXPECT_EQ(details.code(), 3);
  ASSERT_EQ(details.details_size(), 1);
  google::rpc::BadRequest br;
  ASSERT_TRUE(details.details(0).UnpackTo(&br));
  ASSERT_EQ(br.field_violations_size(), 1);
  EXPECT_EQ(br.field_violations(0).field(), "sampling.max_tokens");
  EXPECT_EQ(details.details(0).type_url(), "type.googleapis.com/google.rpc.BadRequest");

  const grpc::Status shed = ToGrpcStatus(base::CapacityError("queue full", base::kShedQueueFull));
  EXPECT_EQ(shed.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(details.ParseFromString(shed.error_details()));
  ASSERT_EQ(details.details_size(), 2);
  google::rpc::ErrorInfo info;
  google::rpc::RetryInfo retry;
  ASSERT_TRUE(details.details(0).UnpackTo(&info));
  EXPECT_EQ(info.reason(), "QUEUE_FULL");
  EXPECT_EQ(info.domain(), "xlstmd.dev");
  ASSERT_TRUE(details.details(1).UnpackTo(&retry));
  EXPECT_EQ(retry.retry_delay().seconds(), 1);
  // Sessions free up slowly: a longer delay.
  ASSERT_TRUE(details.ParseFromString(
      ToGrpcStatus(base::CapacityError("full", base::kShedMaxSessions)).error_details()));
  ASSERT_TRUE(details.details(1).UnpackTo(&retry));
  EXPECT_EQ(retry.retry_delay().seconds(), 30);

  EXPECT_TRUE(ToGrpcStatus(absl::ResourceExhaustedError("over a limit")).error_details().empty());
  EXPECT_TRUE(ToGrpcStatus(absl::InvalidArgumentError("x")).error_details().empty());
}

TEST(ValidateSessionIdTest, AcceptsUrlSafeIdsOnly) {
  EXPECT_TRUE(ValidateSessionId("hxsMEYOTMB55nMVCcWlauA").ok());
  EXPECT_TRUE(ValidateSessionId("a-b_c.d~e").ok());
  EXPECT_TRUE(ValidateSessionId(std::string(kMaxSessionIdBytes, 'a')).ok());
  EXPECT_THAT(ValidateSessionId(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("session_id is required")));
  EXPECT_THAT(ValidateSessionId("", "page_token"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("page_token")));
  EXPECT_THAT(ValidateSessionId(std::string(kMaxSessionIdBytes + 1, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed")));
  for (const char* bad : {"has space", "slash/", "q?x", "\xc3\xa9t\xc3\xa9"}) {
    EXPECT_THAT(ValidateSessionId(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

TEST(SamplingConversionTest, WireZerosMeanOff) {
  v1::SamplingParams p;
  core::SamplingConfig c = ToSamplingConfig(p);
  EXPECT_EQ(c.temperature, 0.0f);
  EXPECT_EQ(c.top_k, 0);
  EXPECT_EQ(c.top_p, 1.0f);
  EXPECT_EQ(c.min_p, 0.0f);
  EXPECT_EQ(c.repetition_penalty, 1.0f);
  EXPECT_EQ(c.seed, 0u);
  EXPECT_EQ(c.max_tokens, 0);
  EXPECT_EQ(c.logprobs, 0);

  p.set_temperature(0.7f);
  p.set_top_k(40);
  p.set_top_p(0.9f);
  p.set_min_p(0.05f);
  p.set_repetition_penalty(1.3f);
  p.set_seed(42);
  p.set_max_tokens(99);
  p.add_stop("\n\n");
  p.add_stop("END");
  p.add_stop_token_ids(7);
  p.set_logprobs(3);
  c = ToSamplingConfig(p);
  EXPECT_EQ(c.temperature, 0.7f);
  EXPECT_EQ(c.top_k, 40);
  EXPECT_EQ(c.top_p, 0.9f);
  EXPECT_EQ(c.min_p, 0.05f);
  EXPECT_EQ(c.repetition_penalty, 1.3f);
  EXPECT_EQ(c.seed, 42u);
  EXPECT_EQ(c.max_tokens, 99);
  EXPECT_THAT(c.stop, ElementsAre("\n\n", "END"));
  EXPECT_THAT(c.stop_token_ids, ElementsAre(7));
  EXPECT_EQ(c.logprobs, 3);

  // Out-of-range values pass through untouched for the engine to reject with its message.
  p.set_top_p(-0.5f);
  p.set_repetition_penalty(-1.0f);
  c = ToSamplingConfig(p);
  EXPECT_EQ(c.top_p, -0.5f);
  EXPECT_EQ(c.repetition_penalty, -1.0f);
}

TEST(TurnRequestConversionTest, MessageInput) {
  v1::ChatRequest r;
  r.set_session_id("abc");
  r.set_message("hello");
  r.set_request_id("req-1");
  r.mutable_sampling()->set_max_tokens(5);
  absl::StatusOr<core::TurnRequest> t = ToTurnRequest(r, "tenant");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->session_id, "abc");
  EXPECT_EQ(t->owner, "tenant");
  EXPECT_EQ(t->message, "hello");
  EXPECT_TRUE(t->tokens.empty());
  EXPECT_EQ(t->request_id, "req-1");
  EXPECT_EQ(t->sampling.max_tokens, 5);
  EXPECT_FALSE(t->expected_version.has_value());
}

TEST(TurnRequestConversionTest, TokenInputAndExpectedVersion) {
  v1::ChatRequest r;
  r.set_session_id("abc");
  r.mutable_tokens()->add_ids(1);
  r.mutable_tokens()->add_ids(299);
  r.set_expected_version(0);  // proto3 `optional`: 0 is present, not absent
  absl::StatusOr<core::TurnRequest> t = ToTurnRequest(r, "");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->message.has_value());
  EXPECT_THAT(t->tokens, ElementsAre(1, 299));
  ASSERT_TRUE(t->expected_version.has_value());
  EXPECT_EQ(*t->expected_version, 0u);
}

TEST(TurnRequestConversionTest, RejectsMissingOrEmptyInputAndBadIds) {
  v1::ChatRequest r;
  r.set_session_id("abc");
  EXPECT_THAT(ToTurnRequest(r, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no input")));
  r.set_message("");
  EXPECT_THAT(ToTurnRequest(r, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("message is empty")));
  r.mutable_tokens();
  EXPECT_THAT(ToTurnRequest(r, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tokens.ids is empty")));
  r.set_message("hi");
  r.set_session_id("");
  EXPECT_THAT(ToTurnRequest(r, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("session_id is required")));
  r.set_session_id("no spaces please");
  EXPECT_THAT(ToTurnRequest(r, ""), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(EventConversionTest, StartedDeltaFinished) {
  v1::ChatEvent e;
  core::TurnEvent started;
  started.kind = core::TurnEvent::Kind::kStarted;
  started.input_ids = {5, 6, 7};
  started.base_version = 3;
  ToProto(started, &e);
  ASSERT_TRUE(e.has_started());
  EXPECT_THAT(e.started().input_token_ids(), ElementsAre(5, 6, 7));
  EXPECT_EQ(e.started().base_version(), 3u);

  core::TurnEvent delta;
  delta.kind = core::TurnEvent::Kind::kDelta;
  delta.text = "h\xc3\xa9";
  delta.token_ids = {104, 195, 169};
  delta.logprobs = {{104, -0.5f}};
  delta.top_logprobs = {{104, -0.5f}, {105, -1.5f}};
  ToProto(delta, &e);
  ASSERT_TRUE(e.has_delta());
  EXPECT_FALSE(e.has_started());
  EXPECT_EQ(e.delta().text(), "h\xc3\xa9");
  EXPECT_THAT(e.delta().token_ids(), ElementsAre(104, 195, 169));
  ASSERT_EQ(e.delta().logprobs_size(), 1);
  EXPECT_EQ(e.delta().logprobs(0).token_id(), 104);
  EXPECT_EQ(e.delta().logprobs(0).logprob(), -0.5f);
  ASSERT_EQ(e.delta().top_logprobs_size(), 2);
  EXPECT_EQ(e.delta().top_logprobs(1).token_id(), 105);

  core::TurnEvent fin;
  fin.kind = core::TurnEvent::Kind::kFinished;
  fin.finish_reason = core::FinishReason::kStopString;
  fin.session_version = 4;
  fin.usage.prompt_tokens = 3;
  fin.usage.completion_tokens = 9;
  fin.usage.queue_ms = 1.5;
  fin.usage.prefill_ms = 2.5;
  fin.usage.first_token_ms = 3.5;
  fin.usage.total_ms = 10.0;
  fin.usage.history_tokens = 77;
  ToProto(fin, &e);
  ASSERT_TRUE(e.has_finished());
  EXPECT_EQ(e.finished().finish_reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(e.finished().session_version(), 4u);
  EXPECT_EQ(e.finished().usage().prompt_tokens(), 3u);
  EXPECT_EQ(e.finished().usage().completion_tokens(), 9u);
  EXPECT_EQ(e.finished().usage().queue_ms(), 1.5);
  EXPECT_EQ(e.finished().usage().prefill_ms(), 2.5);
  EXPECT_EQ(e.finished().usage().first_token_ms(), 3.5);
  EXPECT_EQ(e.finished().usage().total_ms(), 10.0);
  EXPECT_EQ(e.finished().usage().history_tokens(), 77u);

  EXPECT_EQ(ToProto(core::FinishReason::kStopToken), v1::FINISH_REASON_STOP_TOKEN);
  EXPECT_EQ(ToProto(core::FinishReason::kMaxTokens), v1::FINISH_REASON_MAX_TOKENS);
  EXPECT_EQ(ToProto(core::FinishReason::kNone), v1::FINISH_REASON_UNSPECIFIED);
}

TEST(SessionConversionTest, CopiesEveryField) {
  core::SessionInfo info;
  info.session_id = "sid";
  info.owner = "tenant-never-on-the-wire";
  info.version = 2;
  info.token_count = 40;
  info.created_unix_ms = 1000;
  info.updated_unix_ms = 2000;
  info.turn_running = true;
  v1::Session s;
  ToProto(info, &s);
  EXPECT_EQ(s.session_id(), "sid");
  EXPECT_EQ(s.version(), 2u);
  EXPECT_EQ(s.token_count(), 40u);
  EXPECT_EQ(s.created_unix_ms(), 1000);
  EXPECT_EQ(s.updated_unix_ms(), 2000);
  EXPECT_TRUE(s.turn_running());
  EXPECT_EQ(s.DebugString().find("tenant-never"), std::string::npos);
}

}  // namespace
}  // namespace xlstmd::server
