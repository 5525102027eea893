// The daemon in-process on 127.0.0.1:0 with the golden model xlstm-large-a1, driven by the
// generated C++ stubs over real gRPC (tests/server/server_fixture.h): streaming turns (checked
// against the golden greedy continuation), resuming, the chat template, model info, health,
// sessions. Errors, cancel, deadlines, concurrency, tenants and drain are in
// server_errors_test.cc; tests/e2e/ covers the real binary from an independent Python client.
#include "tests/server/server_fixture.h"

namespace xlstmd::server {
namespace {

using namespace server_testing;  // NOLINT: the fixture's client, helpers and matchers

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

}  // namespace
}  // namespace xlstmd::server
