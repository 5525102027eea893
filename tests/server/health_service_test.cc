// grpc.health.v1 served by HealthService (server/health_service.h) in the real server: Check
// and Watch semantics, the Watch cap (--max-health-watchers) and the server-wide stream cap
// (--max-streams) that Watch, Chat, ExportSession and ImportSession share.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"

namespace xlstmd::server::server_testing {
namespace {

namespace hv1 = grpc::health::v1;

class HealthTest : public ServerTest {
 protected:
  std::unique_ptr<hv1::Health::Stub> HealthStub() {
    return hv1::Health::NewStub(
        grpc::CreateChannel(server_->listen_address(), grpc::InsecureChannelCredentials()));
  }
};

// An open Watch call, reading on the test thread.
struct WatchCall {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<hv1::HealthCheckResponse>> reader;

  WatchCall(hv1::Health::Stub& stub, const std::string& service) {
    ctx.set_deadline(In(std::chrono::seconds(30)));
    hv1::HealthCheckRequest req;
    req.set_service(service);
    reader = stub.Watch(&ctx, req);
  }
  // The next status, or -1 when the stream ended.
  int Next() {
    hv1::HealthCheckResponse r;
    return reader->Read(&r) ? r.status() : -1;
  }
  grpc::Status End() {
    ctx.TryCancel();
    hv1::HealthCheckResponse r;
    while (reader->Read(&r)) {
    }
    return reader->Finish();
  }
};

TEST_F(HealthTest, CheckKnowsItsServicesOnly) {
  StartServer();
  auto stub = HealthStub();
  for (const char* name : {"", "xlstmd.v1.ChatService", "xlstmd.v1.ModelService"}) {
    grpc::ClientContext ctx;
    hv1::HealthCheckRequest req;
    req.set_service(name);
    hv1::HealthCheckResponse resp;
    ASSERT_TRUE(stub->Check(&ctx, req, &resp).ok()) << name;
    EXPECT_EQ(resp.status(), hv1::HealthCheckResponse::SERVING) << name;
  }
  grpc::ClientContext ctx;
  hv1::HealthCheckRequest req;
  req.set_service("no.such.Service");
  hv1::HealthCheckResponse resp;
  EXPECT_EQ(stub->Check(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(HealthTest, WatchFollowsTheServerAndEndsAtShutdown) {
  StartServer(TestOptions(), Authenticator(), /*serve=*/false);
  auto stub = HealthStub();
  WatchCall watch(*stub, "");
  EXPECT_EQ(watch.Next(), hv1::HealthCheckResponse::NOT_SERVING);  // model not loaded yet
  WatchCall unknown(*stub, "no.such.Service");
  EXPECT_EQ(unknown.Next(), hv1::HealthCheckResponse::SERVICE_UNKNOWN);
  LoadAndServe(TestOptions());
  EXPECT_EQ(watch.Next(), hv1::HealthCheckResponse::SERVING);
  server_->Drain(absl::Seconds(1), [] { return false; }, absl::Seconds(1));
  EXPECT_EQ(watch.Next(), hv1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(watch.Next(), -1);  // the shutdown ended the call
  EXPECT_EQ(watch.reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(HealthTest, WatchersAreCapped) {
  ServerOptions o = TestOptions();
  o.max_health_watchers = 3;
  StartServer(o);
  auto stub = HealthStub();
  std::vector<std::unique_ptr<WatchCall>> open;
  for (int i = 0; i < 3; ++i) {
    open.push_back(std::make_unique<WatchCall>(*stub, ""));
    ASSERT_EQ(open.back()->Next(), hv1::HealthCheckResponse::SERVING);
  }
  WatchCall over(*stub, "");
  EXPECT_EQ(over.Next(), -1);
  const grpc::Status refused = over.reader->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(refused.error_message().find("--max-health-watchers 3"), std::string::npos)
      << refused.error_message();
  // A closed watcher frees its place (OnDone runs shortly after the cancel).
  EXPECT_EQ(open.back()->End().error_code(), grpc::StatusCode::CANCELLED);
  open.pop_back();
  for (int attempt = 0;; ++attempt) {
    WatchCall again(*stub, "");
    if (again.Next() == hv1::HealthCheckResponse::SERVING) break;
    ASSERT_LT(attempt, 100) << "the closed watcher's place never came back";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

TEST_F(HealthTest, OpenStreamsAreCappedAcrossCallKinds) {
  ServerOptions o = TestOptions();
  o.max_streams = 2;
  StartServer(o);
  auto stub = HealthStub();
  WatchCall a(*stub, ""), b(*stub, "");
  ASSERT_EQ(a.Next(), hv1::HealthCheckResponse::SERVING);
  ASSERT_EQ(b.Next(), hv1::HealthCheckResponse::SERVING);
  Client c(server_->listen_address());
  const std::string id = c.CreateSession().value().session_id();  // unary: not a stream
  const Turn refused = c.Chat(TokensRequest(id, prompt_, 2));
  EXPECT_EQ(refused.status.code(), absl::StatusCode::kResourceExhausted) << refused.status;
  EXPECT_NE(refused.status.message().find("--max-streams 2"), std::string::npos);
  a.End();
  for (int attempt = 0;; ++attempt) {
    const Turn t = c.Chat(TokensRequest(id, prompt_, 2));
    if (t.status.ok()) break;
    ASSERT_EQ(t.status.code(), absl::StatusCode::kResourceExhausted) << t.status;
    ASSERT_LT(attempt, 100) << "the closed stream's place never came back";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace
}  // namespace xlstmd::server::server_testing
