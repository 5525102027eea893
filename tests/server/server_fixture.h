// The fixture of the in-process server tests (server_integration_test.cc: turns, sessions,
// model info, health; server_errors_test.cc: error codes, cancel, deadlines, concurrency,
// tenants, drain): the daemon on 127.0.0.1:0 with the golden model xlstm-large-a1, and a
// client over the generated C++ stubs.
#ifndef XLSTMD_TESTS_SERVER_SERVER_FIXTURE_H_
#define XLSTMD_TESTS_SERVER_SERVER_FIXTURE_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "server/convert.h"
#include "server/server.h"
#include "tests/testing/golden.h"
#include "tests/testing/status_matchers.h"
#include "xlstmd/v1/chat.grpc.pb.h"

namespace xlstmd::server::server_testing {


using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using xlstmd::testing::StatusIs;

inline constexpr char kGoldenModel[] = "xlstm-large-a1";
inline constexpr int kServing = 1;
inline constexpr int kNotServing = 2;

inline ServerOptions TestOptions() {
  ServerOptions o = DefaultServerOptions();
  o.listen = "127.0.0.1:0";
  o.weight_dtype = "f32";  // the golden vectors are float32
  o.threads = 1;
  o.slots = 8;
  o.max_batch = 8;
  o.stream_buffer = 2;  // a reader that stops reading pauses its turn almost at once
  o.max_message_bytes = 64 * 1024;
  return o;
}

inline std::chrono::system_clock::time_point In(std::chrono::milliseconds ms) {
  return std::chrono::system_clock::now() + ms;
}

inline void SetCallOptions(grpc::ClientContext* ctx, const std::string& key,
                           const std::string& affinity = "") {
  ctx->set_deadline(In(std::chrono::seconds(60)));
  if (!key.empty()) ctx->AddMetadata("authorization", "Bearer " + key);
  if (!affinity.empty()) ctx->AddMetadata("x-session-id", affinity);
}

// The outcome of one Chat call.
struct Turn {
  absl::Status status;
  int started = 0;
  std::vector<int32_t> input_ids;
  uint64_t base_version = 0;
  std::vector<int32_t> generated;
  std::string text;
  int finished = 0;
  v1::TurnFinished finish;
  bool order_ok = true;  // started first, finished last
};

class Client {
 public:
  explicit Client(const std::string& address, std::string key = "")
      : channel_(grpc::CreateChannel(address, grpc::InsecureChannelCredentials())),
        chat_(v1::ChatService::NewStub(channel_)),
        model_(v1::ModelService::NewStub(channel_)),
        key_(std::move(key)) {}

  // Sends `x-session-id: id` (the ring-hash routing key) with every call from now on.
  void set_affinity(std::string id) { affinity_ = std::move(id); }

  absl::StatusOr<v1::Session> CreateSession(const std::string& system_prompt = "") {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_, affinity_);
    v1::CreateSessionRequest req;
    req.set_system_prompt(system_prompt);
    v1::Session out;
    const grpc::Status s = chat_->CreateSession(&ctx, req, &out);
    if (!s.ok()) return FromGrpcStatus(s);
    return out;
  }

  absl::StatusOr<v1::Session> GetSession(const std::string& id) {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_, affinity_);
    v1::GetSessionRequest req;
    req.set_session_id(id);
    v1::Session out;
    const grpc::Status s = chat_->GetSession(&ctx, req, &out);
    if (!s.ok()) return FromGrpcStatus(s);
    return out;
  }

  absl::StatusOr<v1::ListSessionsResponse> ListSessions(int32_t page_size,
                                                        const std::string& token = "") {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_, affinity_);
    v1::ListSessionsRequest req;
    req.set_page_size(page_size);
    req.set_page_token(token);
    v1::ListSessionsResponse out;
    const grpc::Status s = chat_->ListSessions(&ctx, req, &out);
    if (!s.ok()) return FromGrpcStatus(s);
    return out;
  }

  absl::StatusOr<v1::Session> ForkSession(const std::string& id) {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_, affinity_);
    v1::ForkSessionRequest req;
    req.set_session_id(id);
    v1::Session out;
    const grpc::Status s = chat_->ForkSession(&ctx, req, &out);
    if (!s.ok()) return FromGrpcStatus(s);
    return out;
  }

  absl::Status DeleteSession(const std::string& id) {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_, affinity_);
    v1::DeleteSessionRequest req;
    req.set_session_id(id);
    v1::DeleteSessionResponse out;
    return FromGrpcStatus(chat_->DeleteSession(&ctx, req, &out));
  }

  absl::StatusOr<v1::ModelInfo> GetModelInfo() {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_, affinity_);
    v1::ModelInfo out;
    const grpc::Status s = model_->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &out);
    if (!s.ok()) return FromGrpcStatus(s);
    return out;
  }

  Turn Chat(const v1::ChatRequest& req) {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_, affinity_);
    auto reader = chat_->Chat(&ctx, req);
    return Collect(reader.get());
  }

  static Turn Collect(grpc::ClientReaderInterface<v1::ChatEvent>* reader) {
    Turn t;
    v1::ChatEvent e;
    while (reader->Read(&e)) {
      if (e.has_started()) {
        t.order_ok &= t.started == 0 && t.generated.empty() && t.finished == 0;
        ++t.started;
        t.input_ids.assign(e.started().input_token_ids().begin(),
                           e.started().input_token_ids().end());
        t.base_version = e.started().base_version();
      } else if (e.has_delta()) {
        t.order_ok &= t.started == 1 && t.finished == 0;
        t.generated.insert(t.generated.end(), e.delta().token_ids().begin(),
                           e.delta().token_ids().end());
        t.text += e.delta().text();
      } else if (e.has_finished()) {
        t.order_ok &= t.started == 1 && t.finished == 0;
        ++t.finished;
        t.finish = e.finished();
      }
    }
    t.status = FromGrpcStatus(reader->Finish());
    return t;
  }

  // grpc.health.v1.Health/Check over the generic stub: Debian ships no health client stubs,
  // and the two messages are one field each. Returns the ServingStatus enum value.
  absl::StatusOr<int> Health(const std::string& service) {
    std::string req;
    if (!service.empty()) {
      req.push_back(0x0a);  // field 1, length-delimited
      req.push_back(static_cast<char>(service.size()));
      req += service;
    }
    grpc::Slice slice(req);
    grpc::ByteBuffer in(&slice, 1), out;
    grpc::ClientContext ctx;
    ctx.set_deadline(In(std::chrono::seconds(10)));
    grpc::GenericStub stub(channel_);
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &in, &out,
                   [&done](grpc::Status s) { done.set_value(std::move(s)); });
    const grpc::Status s = done.get_future().get();
    if (!s.ok()) return FromGrpcStatus(s);
    std::vector<grpc::Slice> slices;
    out.Dump(&slices).IgnoreError();
    std::string bytes;
    for (const grpc::Slice& sl : slices) bytes.append(sl.begin(), sl.end());
    if (bytes.empty()) return 0;
    if (bytes.size() == 2 && bytes[0] == 0x08) return bytes[1];
    return absl::InternalError("unexpected health response");
  }

  // A raw unary call with hand-made request bytes (for requests the typed stub cannot build).
  absl::Status RawUnary(const std::string& method, const std::string& body) {
    grpc::Slice slice(body);
    grpc::ByteBuffer in(&slice, 1), out;
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_, affinity_);
    grpc::GenericStub stub(channel_);
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, method, grpc::StubOptions(), &in, &out,
                   [&done](grpc::Status s) { done.set_value(std::move(s)); });
    return FromGrpcStatus(done.get_future().get());
  }

  v1::ChatService::Stub& chat() { return *chat_; }
  const std::string& key() const { return key_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ChatService::Stub> chat_;
  std::unique_ptr<v1::ModelService::Stub> model_;
  std::string key_;
  std::string affinity_;
};

inline v1::ChatRequest TokensRequest(const std::string& session, const std::vector<int32_t>& ids,
                              int32_t max_tokens) {
  v1::ChatRequest r;
  r.set_session_id(session);
  for (int32_t id : ids) r.mutable_tokens()->add_ids(id);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  return r;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<xlstmd::testing::GoldenModel> golden = xlstmd::testing::LoadGolden(kGoldenModel);
    ASSERT_TRUE(golden.ok()) << golden.status();
    prompt_ = golden->greedy_prompt;
    expected_ = golden->greedy_generated;
    ASSERT_FALSE(expected_.empty());
  }

  // Starts a server on a free port and, when `serve`, loads the golden model into it.
  void StartServer(ServerOptions options = TestOptions(), Authenticator auth = Authenticator(),
                   bool serve = true) {
    absl::StatusOr<std::unique_ptr<Server>> s = Server::Start(options, std::move(auth));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    ASSERT_GT(server_->port(), 0);
    EXPECT_EQ(server_->listen_address(), "127.0.0.1:" + std::to_string(server_->port()));
    if (serve) LoadAndServe(options);
  }

  void LoadAndServe(const ServerOptions& options) {
    absl::StatusOr<LoadedModel> m = LoadModel(options, xlstmd::testing::GoldenDir(kGoldenModel));
    ASSERT_TRUE(m.ok()) << m.status();
    server_->Serve(*std::move(m));
  }

  // Polls until the session has no turn running (a cancelled turn rolls back within one
  // engine step, shortly after the call ended).
  void WaitTurnOver(Client& c, const std::string& id) {
    for (int i = 0; i < 500; ++i) {
      absl::StatusOr<v1::Session> s = c.GetSession(id);
      ASSERT_TRUE(s.ok()) << s.status();
      if (!s->turn_running()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "turn still running on " << id;
  }

  std::vector<int32_t> prompt_;
  std::vector<int32_t> expected_;
  std::unique_ptr<Server> server_;
};

}  // namespace xlstmd::server::server_testing

#endif  // XLSTMD_TESTS_SERVER_SERVER_FIXTURE_H_
