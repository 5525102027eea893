// The in-process daemon (tests/server/server_fixture.h) refusing and stopping work: the
// documented status codes for bad requests, cancel and deadline rollback, many concurrent
// turns with cancels and slow readers, API keys separating tenants, and drain.
#include "tests/server/server_fixture.h"

namespace xlstmd::server {
namespace {

using namespace server_testing;  // NOLINT: the fixture's client, helpers and matchers

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
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_tokens")));
  // A oneof with both members on the wire is refused, not resolved silently (last wins).
  v1::ChatRequest both = TokensRequest(id, {5, 6}, 1);
  std::string wire = both.SerializeAsString();
  v1::ChatRequest message_only;
  message_only.set_message("hello");
  wire = message_only.SerializeAsString() + wire;
  EXPECT_THAT(c.RawUnary("/xlstmd.v1.ChatService/Chat", wire),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("oneof `input`")));
  v1::ChatRequest blank = TokensRequest(id, {1}, 1);
  blank.set_message("  \n\t ");
  EXPECT_THAT(c.Chat(blank).status,
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("whitespace")));
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

// x-session-id is what a ring-hash proxy routes on (docs/deploy.md): when sent it must name
// the request's session; calls without one, or about no session, do not look at it.
TEST_F(ServerTest, SessionAffinityMetadataMustNameTheRequestsSession) {
  StartServer();
  Client c(server_->listen_address());
  const std::string id = c.CreateSession().value().session_id();
  const std::string other = c.CreateSession().value().session_id();

  Client routed(server_->listen_address());
  routed.set_affinity(id);
  EXPECT_TRUE(routed.GetSession(id).ok());
  EXPECT_TRUE(routed.Chat(TokensRequest(id, {1, 2}, 2)).status.ok());
  EXPECT_TRUE(routed.CreateSession().ok()) << "no session in the request: nothing to compare";
  EXPECT_TRUE(routed.ListSessions(0).ok());

  const auto mismatch = StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("x-session-id"));
  EXPECT_THAT(routed.GetSession(other), mismatch);
  EXPECT_THAT(routed.Chat(TokensRequest(other, {1}, 1)).status, mismatch);
  EXPECT_THAT(routed.ForkSession(other), mismatch);
  EXPECT_THAT(routed.DeleteSession(other), mismatch);
  // Refused before anything ran: the other session is untouched.
  absl::StatusOr<v1::Session> s = c.GetSession(other);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->version(), 0u);
  EXPECT_EQ(c.GetSession(id).value().version(), 1u);
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
