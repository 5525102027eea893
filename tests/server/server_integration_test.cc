// The daemon in-process on 127.0.0.1:0 with the golden model xlstm-large-a1, driven by the
// generated C++ stubs over real gRPC: sessions, streaming turns (checked against the golden
// greedy continuation), model info, health, auth, cancel/deadline rollback and drain.
// (tests/e2e/ covers the real binary from an independent Python client.)
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

namespace xlstmd::server {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using xlstmd::testing::StatusIs;

constexpr char kGoldenModel[] = "xlstm-large-a1";
constexpr int kServing = 1;
constexpr int kNotServing = 2;

ServerOptions TestOptions() {
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

std::chrono::system_clock::time_point In(std::chrono::milliseconds ms) {
  return std::chrono::system_clock::now() + ms;
}

void SetCallOptions(grpc::ClientContext* ctx, const std::string& key) {
  ctx->set_deadline(In(std::chrono::seconds(60)));
  if (!key.empty()) ctx->AddMetadata("authorization", "Bearer " + key);
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

  absl::StatusOr<v1::Session> CreateSession(const std::string& system_prompt = "") {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_);
    v1::CreateSessionRequest req;
    req.set_system_prompt(system_prompt);
    v1::Session out;
    const grpc::Status s = chat_->CreateSession(&ctx, req, &out);
    if (!s.ok()) return FromGrpcStatus(s);
    return out;
  }

  absl::StatusOr<v1::Session> GetSession(const std::string& id) {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_);
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
    SetCallOptions(&ctx, key_);
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
    SetCallOptions(&ctx, key_);
    v1::ForkSessionRequest req;
    req.set_session_id(id);
    v1::Session out;
    const grpc::Status s = chat_->ForkSession(&ctx, req, &out);
    if (!s.ok()) return FromGrpcStatus(s);
    return out;
  }

  absl::Status DeleteSession(const std::string& id) {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_);
    v1::DeleteSessionRequest req;
    req.set_session_id(id);
    v1::DeleteSessionResponse out;
    return FromGrpcStatus(chat_->DeleteSession(&ctx, req, &out));
  }

  absl::StatusOr<v1::ModelInfo> GetModelInfo() {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_);
    v1::ModelInfo out;
    const grpc::Status s = model_->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &out);
    if (!s.ok()) return FromGrpcStatus(s);
    return out;
  }

  Turn Chat(const v1::ChatRequest& req) {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, key_);
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
    SetCallOptions(&ctx, key_);
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
};

v1::ChatRequest TokensRequest(const std::string& session, const std::vector<int32_t>& ids,
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

TEST_F(ServerTest, TokenTurnStreamsTheGoldenGreedyContinuation) {
  StartServer();
  Client c(server_->listen_address());
  absl::StatusOr<v1::Session> session = c.CreateSession();
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_EQ(session->version(), 0u);
  EXPECT_EQ(session->token_count(), 0u);
  EXPECT_EQ(session->session_id().size(), 22u);

  const int32_t n = static_cast<int32_t>(expected_.size());
  const Turn t = c.Chat(TokensRequest(session->session_id(), prompt_, n));
  ASSERT_TRUE(t.status.ok()) << t.status;
  EXPECT_TRUE(t.order_ok);
  EXPECT_EQ(t.started, 1);
  EXPECT_EQ(t.finished, 1);
  EXPECT_THAT(t.input_ids, ElementsAreArray(prompt_));
  EXPECT_EQ(t.base_version, 0u);
  EXPECT_THAT(t.generated, ElementsAreArray(expected_));
  EXPECT_EQ(t.finish.finish_reason(), v1::FINISH_REASON_MAX_TOKENS);
  EXPECT_EQ(t.finish.session_version(), 1u);
  EXPECT_EQ(t.finish.usage().prompt_tokens(), prompt_.size());
  EXPECT_EQ(t.finish.usage().completion_tokens(), expected_.size());
  EXPECT_GT(t.finish.usage().total_ms(), 0.0);

  absl::StatusOr<v1::Session> after = c.GetSession(session->session_id());
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->version(), 1u);
  EXPECT_EQ(after->token_count(), prompt_.size() + expected_.size());
  EXPECT_FALSE(after->turn_running());
}

TEST_F(ServerTest, ResumingASessionEqualsReplayingItsHistory) {
  StartServer();
  Client c(server_->listen_address());
  // Session A: two turns. Session B: one turn whose input is everything A has seen before
  // its second turn's output. The server keeps A's state, so both must continue alike.
  const std::string a = c.CreateSession().value().session_id();
  const size_t half = prompt_.size() / 2;
  const std::vector<int32_t> first(prompt_.begin(), prompt_.begin() + half);
  const std::vector<int32_t> rest(prompt_.begin() + half, prompt_.end());
  const Turn a1 = c.Chat(TokensRequest(a, first, 3));
  ASSERT_TRUE(a1.status.ok()) << a1.status;
  const Turn a2 = c.Chat(TokensRequest(a, rest, 8));
  ASSERT_TRUE(a2.status.ok()) << a2.status;
  EXPECT_EQ(a2.base_version, 1u);
  EXPECT_EQ(a2.finish.session_version(), 2u);

  std::vector<int32_t> history = first;
  history.insert(history.end(), a1.generated.begin(), a1.generated.end());
  history.insert(history.end(), rest.begin(), rest.end());
  const std::string b = c.CreateSession().value().session_id();
  const Turn b1 = c.Chat(TokensRequest(b, history, 8));
  ASSERT_TRUE(b1.status.ok()) << b1.status;
  EXPECT_THAT(a2.generated, ElementsAreArray(b1.generated));
  EXPECT_EQ(c.GetSession(a).value().token_count(), c.GetSession(b).value().token_count());
}

TEST_F(ServerTest, MessageTurnUsesTheChatTemplate) {
  StartServer();
  Client c(server_->listen_address());
  const std::string id = c.CreateSession().value().session_id();
  v1::ChatRequest r;
  r.set_session_id(id);
  r.set_message("hello");
  r.mutable_sampling()->set_max_tokens(4);
  const Turn t = c.Chat(r);
  ASSERT_TRUE(t.status.ok()) << t.status;
  EXPECT_TRUE(t.order_ok);
  EXPECT_GT(t.input_ids.size(), 5u);  // BOS + "User: hello" + template text
  EXPECT_LE(t.generated.size(), 4u);
  EXPECT_EQ(t.finish.session_version(), 1u);
}

TEST_F(ServerTest, ModelInfoDescribesTheLoadedModel) {
  StartServer();
  Client c(server_->listen_address());
  absl::StatusOr<v1::ModelInfo> info = c.GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->model(), kGoldenModel);
  EXPECT_EQ(info->family(), "xlstm");
  EXPECT_EQ(info->vocab_size(), 300);
  EXPECT_EQ(info->embedding_dim(), 128);
  EXPECT_EQ(info->num_blocks(), 2);
  EXPECT_EQ(info->num_heads(), 4);
  EXPECT_EQ(info->qk_head_dim(), 16);
  EXPECT_EQ(info->v_head_dim(), 32);
  EXPECT_GT(info->state_bytes_per_session(), 0u);
  EXPECT_EQ(info->backend(), "cpu");
  EXPECT_FALSE(info->isa().empty());
  EXPECT_EQ(info->weight_dtype(), "f32");
  EXPECT_FALSE(info->weights_digest().empty());
}

TEST_F(ServerTest, HealthIsNotServingUntilTheModelIsLoaded) {
  const ServerOptions options = TestOptions();
  StartServer(options, Authenticator(), /*serve=*/false);
  Client c(server_->listen_address());
  EXPECT_EQ(c.Health("").value(), kNotServing);
  EXPECT_EQ(c.Health("xlstmd.v1.ChatService").value(), kNotServing);
  EXPECT_THAT(c.Health("no.such.Service"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(c.CreateSession(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("model loading")));
  EXPECT_THAT(c.GetModelInfo(), StatusIs(absl::StatusCode::kUnavailable));
  const Turn t = c.Chat(TokensRequest("abc", {1}, 1));
  EXPECT_THAT(t.status, StatusIs(absl::StatusCode::kUnavailable));

  LoadAndServe(options);
  EXPECT_EQ(c.Health("").value(), kServing);
  EXPECT_EQ(c.Health("xlstmd.v1.ChatService").value(), kServing);
  EXPECT_TRUE(c.CreateSession().ok());
}

TEST_F(ServerTest, SessionsListForkAndDelete) {
  StartServer();
  Client c(server_->listen_address());
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(c.CreateSession().value().session_id());
  const Turn t = c.Chat(TokensRequest(ids[0], prompt_, 3));
  ASSERT_TRUE(t.status.ok()) << t.status;

  std::vector<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    absl::StatusOr<v1::ListSessionsResponse> page = c.ListSessions(2, token);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->sessions_size(), 2);
    for (const v1::Session& s : page->sessions()) listed.push_back(s.session_id());
    token = page->next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  std::vector<std::string> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(listed, sorted);
  EXPECT_EQ(c.ListSessions(0).value().sessions_size(), 5);
  EXPECT_THAT(c.ListSessions(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.ListSessions(2, "not a token!"), StatusIs(absl::StatusCode::kInvalidArgument));

  absl::StatusOr<v1::Session> fork = c.ForkSession(ids[0]);
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_NE(fork->session_id(), ids[0]);
  EXPECT_EQ(fork->version(), 1u);
  EXPECT_EQ(fork->token_count(), prompt_.size() + 3);

  EXPECT_TRUE(c.DeleteSession(ids[0]).ok());
  EXPECT_THAT(c.GetSession(ids[0]), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(c.DeleteSession(ids[0]), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(c.ForkSession(ids[0]), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_TRUE(c.GetSession(fork->session_id()).ok());
}

TEST_F(ServerTest, BadRequestsGetTheDocumentedCodes) {
  StartServer();
  Client c(server_->listen_address());
  const std::string id = c.CreateSession().value().session_id();

  v1::ChatRequest no_input;
  no_input.set_session_id(id);
  EXPECT_THAT(c.Chat(no_input).status,
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no input")));
  EXPECT_THAT(c.Chat(TokensRequest("unknownButWellFormed", {1}, 1)).status,
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(c.Chat(TokensRequest("bad id!", {1}, 1)).status,
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.Chat(TokensRequest("", {1}, 1)).status,
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.Chat(TokensRequest(id, {300}, 1)).status,
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocabulary")));
  EXPECT_THAT(c.Chat(TokensRequest(id, {-1}, 1)).status,
              StatusIs(absl::StatusCode::kInvalidArgument));
  v1::ChatRequest nan = TokensRequest(id, {1}, 1);
  nan.mutable_sampling()->set_temperature(std::numeric_limits<float>::quiet_NaN());
  EXPECT_THAT(c.Chat(nan).status, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.Chat(TokensRequest(id, {1}, 1 << 30)).status,
              StatusIs(absl::StatusCode::kResourceExhausted));
  v1::ChatRequest stale = TokensRequest(id, {1}, 1);
  stale.set_expected_version(7);
  EXPECT_THAT(c.Chat(stale).status, StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(c.GetSession(""), StatusIs(absl::StatusCode::kInvalidArgument));

  // A request over --max-message-bytes is refused by gRPC itself.
  EXPECT_THAT(c.CreateSession(std::string(100 * 1024, 'a')),
              StatusIs(absl::StatusCode::kResourceExhausted));

  // Invalid UTF-8 in a proto3 string fails protobuf's parse; the client must learn that.
  const std::string bad_utf8 = std::string("\x0a\x02\xff\xfe", 4);  // system_prompt
  EXPECT_THAT(c.RawUnary("/xlstmd.v1.ChatService/CreateSession", bad_utf8),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
  EXPECT_THAT(c.RawUnary("/xlstmd.v1.ChatService/GetSession", std::string("\x0a\x01\xff", 3)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
  EXPECT_THAT(c.RawUnary("/xlstmd.v1.ChatService/GetSession", "\xff\xff\xff"),
              StatusIs(absl::StatusCode::kInvalidArgument));

  // Nothing above changed the session.
  absl::StatusOr<v1::Session> s = c.GetSession(id);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->version(), 0u);
  EXPECT_FALSE(s->turn_running());
}

TEST_F(ServerTest, CancelRollsBackAndASecondTurnMeanwhileIsAborted) {
  StartServer();
  Client c(server_->listen_address());
  const std::string id = c.CreateSession().value().session_id();
  {
    grpc::ClientContext ctx;
    SetCallOptions(&ctx, "");
    auto reader = c.chat().Chat(&ctx, TokensRequest(id, prompt_, 10000));
    v1::ChatEvent e;
    ASSERT_TRUE(reader->Read(&e));
    ASSERT_TRUE(e.has_started());
    ASSERT_TRUE(reader->Read(&e));
    ASSERT_TRUE(e.has_delta());
    // The turn is paused on its full stream buffer, and still owns the session.
    EXPECT_THAT(c.Chat(TokensRequest(id, {1}, 1)).status,
                StatusIs(absl::StatusCode::kAborted, HasSubstr("already has a turn")));
    ctx.TryCancel();
    while (reader->Read(&e)) {
    }
    EXPECT_THAT(FromGrpcStatus(reader->Finish()), StatusIs(absl::StatusCode::kCancelled));
  }
  WaitTurnOver(c, id);
  EXPECT_EQ(c.GetSession(id).value().version(), 0u);
  EXPECT_EQ(c.GetSession(id).value().token_count(), 0u);
  // Rolled back exactly: the next turn sees the zero state, as the golden run did.
  const Turn t = c.Chat(TokensRequest(id, prompt_, static_cast<int32_t>(expected_.size())));
  ASSERT_TRUE(t.status.ok()) << t.status;
  EXPECT_THAT(t.generated, ElementsAreArray(expected_));
  EXPECT_EQ(t.finish.session_version(), 1u);
}

TEST_F(ServerTest, DeadlineEndsTheTurnAndRollsBack) {
  StartServer();
  Client c(server_->listen_address());
  const std::string id = c.CreateSession().value().session_id();
  grpc::ClientContext ctx;
  ctx.set_deadline(In(std::chrono::milliseconds(300)));
  // Read nothing: the turn pauses on its buffer until the deadline cancels the call.
  auto reader = c.chat().Chat(&ctx, TokensRequest(id, prompt_, 10000));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  v1::ChatEvent e;
  while (reader->Read(&e)) {
  }
  EXPECT_THAT(FromGrpcStatus(reader->Finish()), StatusIs(absl::StatusCode::kDeadlineExceeded));
  WaitTurnOver(c, id);
  EXPECT_EQ(c.GetSession(id).value().version(), 0u);
}

// Many calls at once, each either read to the end, read slowly, or cancelled after a few
// events: every call ends, nothing leaks, and each session's version counts its committed
// turns. A cancel that reaches the server after the turn committed cannot undo it, so a
// cancelled call may still have advanced the version; the check allows exactly that.
// (Run under ASan, this is the reactor's race test.)
TEST_F(ServerTest, ConcurrentTurnsWithCancelsAndSlowReaders) {
  StartServer();
  Client c(server_->listen_address());
  constexpr int kClients = 12;
  constexpr int kTurns = 4;
  std::vector<std::thread> threads;
  std::vector<std::string> ids(kClients);
  std::vector<int> committed(kClients, 0);
  std::vector<int> cancelled(kClients, 0);
  std::vector<std::string> errors(kClients);
  for (int i = 0; i < kClients; ++i) {
    ids[i] = c.CreateSession().value().session_id();
    threads.emplace_back([&, i] {
      for (int turn = 0; turn < kTurns; ++turn) {
        const int mode = (i + turn) % 3;  // 0 read all, 1 slow reader, 2 cancel early
        grpc::ClientContext ctx;
        SetCallOptions(&ctx, "");
        auto reader =
            c.chat().Chat(&ctx, TokensRequest(ids[i], {1 + i, 2 + turn}, mode == 2 ? 5000 : 12));
        v1::ChatEvent e;
        int events = 0;
        bool finished = false;
        while (reader->Read(&e)) {
          ++events;
          finished |= e.has_finished();
          if (mode == 1) std::this_thread::sleep_for(std::chrono::milliseconds(2));
          if (mode == 2 && events == 1 + (i % 4)) ctx.TryCancel();
        }
        const absl::Status s = FromGrpcStatus(reader->Finish());
        if (s.ok() != finished) {
          errors[i] = "status " + s.ToString() + " but finished=" + std::to_string(finished);
        }
        if (s.ok()) {
          ++committed[i];
        } else if (s.code() == absl::StatusCode::kCancelled) {
          ++cancelled[i];
        } else {
          errors[i] = s.ToString();
        }
        // The next turn needs the session idle; a cancelled one is rolled back shortly.
        for (int k = 0; k < 500; ++k) {
          absl::StatusOr<v1::Session> info = c.GetSession(ids[i]);
          if (!info.ok() || !info->turn_running()) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) {
    EXPECT_EQ(errors[i], "") << "client " << i;
    absl::StatusOr<v1::Session> info = c.GetSession(ids[i]);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_FALSE(info->turn_running());
    EXPECT_GE(info->version(), static_cast<uint64_t>(committed[i])) << "client " << i;
    EXPECT_LE(info->version(), static_cast<uint64_t>(committed[i] + cancelled[i]))
        << "client " << i;
  }
  // Every slot came back: as many turns as slots can still run at once.
  std::vector<std::string> fresh;
  for (int i = 0; i < 8; ++i) fresh.push_back(c.CreateSession().value().session_id());
  std::vector<std::thread> again;
  std::atomic<int> ok{0};
  for (const std::string& id : fresh) {
    again.emplace_back([&, id] { ok += c.Chat(TokensRequest(id, {5}, 3)).status.ok() ? 1 : 0; });
  }
  for (std::thread& t : again) t.join();
  EXPECT_EQ(ok.load(), 8);
}

TEST_F(ServerTest, ApiKeysSeparateTenants) {
  const std::string keys_text = "alice key-a\nbob key-b\n";
  StartServer(TestOptions(), Authenticator(ApiKeys::Parse(keys_text, "test").value()));
  Client anonymous(server_->listen_address());
  Client wrong(server_->listen_address(), "key-c");
  Client alice(server_->listen_address(), "key-a");
  Client bob(server_->listen_address(), "key-b");

  EXPECT_THAT(anonymous.CreateSession(), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(anonymous.GetModelInfo(), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(anonymous.Chat(TokensRequest("abc", {1}, 1)).status,
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(wrong.ListSessions(0), StatusIs(absl::StatusCode::kUnauthenticated));
  // Probes need no key.
  EXPECT_EQ(anonymous.Health("").value(), kServing);

  const std::string id = alice.CreateSession().value().session_id();
  EXPECT_TRUE(alice.GetSession(id).ok());
  EXPECT_TRUE(alice.GetModelInfo().ok());
  EXPECT_THAT(bob.GetSession(id), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(bob.Chat(TokensRequest(id, {1}, 1)).status, StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(bob.ForkSession(id), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(bob.DeleteSession(id), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(bob.ListSessions(0).value().sessions(), IsEmpty());
  EXPECT_EQ(alice.ListSessions(0).value().sessions_size(), 1);
  const Turn t = alice.Chat(TokensRequest(id, {1, 2}, 2));
  EXPECT_TRUE(t.status.ok()) << t.status;
}

TEST_F(ServerTest, DrainStopsAdmittingThenCancelsWhatIsLeft) {
  StartServer();
  Client c(server_->listen_address());
  const std::string id = c.CreateSession().value().session_id();
  grpc::ClientContext ctx;
  SetCallOptions(&ctx, "");
  auto reader = c.chat().Chat(&ctx, TokensRequest(id, prompt_, 10000));
  v1::ChatEvent e;
  ASSERT_TRUE(reader->Read(&e));  // started: the turn runs (then pauses: nobody reads)

  std::atomic<bool> skip{false};
  std::thread drain([&] { server_->Drain(absl::Seconds(60), [&] { return skip.load(); }); });
  // During the grace period: not ready, no new work, but the turn is still there.
  bool saw_not_serving = false;
  for (int i = 0; i < 200 && !saw_not_serving; ++i) {
    absl::StatusOr<int> h = c.Health("");
    saw_not_serving = h.ok() && *h == kNotServing;
    if (!saw_not_serving) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(saw_not_serving);
  EXPECT_THAT(c.CreateSession(), StatusIs(absl::StatusCode::kUnavailable));
  // A second signal skips the rest of the 60 s grace period.
  const auto t0 = std::chrono::steady_clock::now();
  skip = true;
  drain.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  while (reader->Read(&e)) {
    EXPECT_FALSE(e.has_finished());
  }
  EXPECT_THAT(FromGrpcStatus(reader->Finish()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
}

}  // namespace
}  // namespace xlstmd::server
