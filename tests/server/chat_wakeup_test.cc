// ChatReactor's threads (issue 17): the TurnStream wakeup runs on the producer's (the
// engine's) thread and must only post work; popping, conversion to protobuf, serialization
// and writes happen on gRPC threads. A scripted producer thread stands in for the engine,
// behind a minimal in-process ChatService whose Chat method is the daemon's own ChatReactor.
//
// Where a pop runs is observed through the stream's room callback: with a one-event buffer
// every pop turns a full buffer into one with room, and TryPop calls the callback on the
// popping thread, the same pass of Drain that converts, serializes and writes the event.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/engine/turn_stream.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "server/chat_reactor.h"
#include "server/services.h"
#include "xlstmd/v1/chat.grpc.pb.h"

namespace xlstmd::server {
namespace {

// What one call's producer and its consumers did.
struct CallTrace {
  absl::Mutex mu;
  std::thread::id producer ABSL_GUARDED_BY(mu);
  std::vector<std::thread::id> pop_threads ABSL_GUARDED_BY(mu);  // one per pop
  int wakeups_on_producer ABSL_GUARDED_BY(mu) = 0;
  int wakeups_elsewhere ABSL_GUARDED_BY(mu) = 0;
  bool closed_ok ABSL_GUARDED_BY(mu) = false;
  bool closed_cancelled ABSL_GUARDED_BY(mu) = false;
};

// Chat streams a scripted turn from a producer thread of its own: kStarted, `deltas` deltas,
// kFinished and Close(OK), waiting for room before each push the way the engine does; a
// cancel from the reactor stops it, and it closes with the cancel reason.
class ScriptedChat final
    : public v1::ChatService::WithRawCallbackMethod_Chat<v1::ChatService::Service> {
 public:
  explicit ScriptedChat(int deltas) : deltas_(deltas) { obs_.log_turns = false; }
  ~ScriptedChat() override { JoinProducers(); }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Chat(grpc::CallbackServerContext* ctx,
                                                   const grpc::ByteBuffer* /*request*/) override {
    auto* reactor = new ChatReactor(ctx, &obs_);
    auto trace = std::make_shared<CallTrace>();
    auto stream = std::make_shared<core::TurnStream>(1, [reactor, trace] {
      {
        absl::MutexLock lock(&trace->mu);
        if (std::this_thread::get_id() == trace->producer) {
          ++trace->wakeups_on_producer;
        } else {
          ++trace->wakeups_elsewhere;
        }
      }
      reactor->Wake();
    });
    // Both callbacks take trace->mu, so the producer's Await re-checks its condition.
    stream->set_room_callback([trace] {
      absl::MutexLock lock(&trace->mu);
      trace->pop_threads.push_back(std::this_thread::get_id());
    });
    stream->set_cancel_callback([trace] { absl::MutexLock lock(&trace->mu); });
    reactor->Attach(stream);
    // The producer starts after Attach found the stream empty, so the first event reaches
    // an idle reactor through the wakeup (which is where a pump used to run inline).
    absl::MutexLock lock(&mu_);
    traces_.push_back(trace);
    producers_.emplace_back([stream, trace, deltas = deltas_] { Produce(*stream, *trace, deltas); });
    return reactor;
  }

  void JoinProducers() {
    std::vector<std::thread> producers;
    {
      absl::MutexLock lock(&mu_);
      producers.swap(producers_);
    }
    for (std::thread& t : producers) t.join();
  }

  std::vector<std::shared_ptr<CallTrace>> traces() {
    absl::MutexLock lock(&mu_);
    return traces_;
  }

 private:
  static void Produce(core::TurnStream& stream, CallTrace& trace, int deltas) {
    {
      absl::MutexLock lock(&trace.mu);
      trace.producer = std::this_thread::get_id();
    }
    auto push = [&](core::TurnEvent event) {
      {
        absl::MutexLock lock(&trace.mu);
        trace.mu.Await(absl::Condition(
            +[](core::TurnStream* s) { return s->HasRoom() || s->cancel_requested(); },
            &stream));
      }
      if (stream.cancel_requested()) return false;
      stream.Push(std::move(event));
      return true;
    };
    bool ok = true;
    core::TurnEvent started;
    started.kind = core::TurnEvent::Kind::kStarted;
    started.input_ids = {1, 2, 3};
    ok = push(std::move(started));
    for (int i = 0; ok && i < deltas; ++i) {
      core::TurnEvent delta;
      delta.kind = core::TurnEvent::Kind::kDelta;
      delta.text = "x";
      delta.token_ids = {100 + i};
      ok = push(std::move(delta));
    }
    if (ok) {
      core::TurnEvent finished;
      finished.kind = core::TurnEvent::Kind::kFinished;
      finished.finish_reason = core::FinishReason::kMaxTokens;
      finished.usage.prompt_tokens = 3;
      finished.usage.completion_tokens = static_cast<uint32_t>(deltas);
      finished.session_version = 1;
      ok = push(std::move(finished));
    }
    if (ok) {
      stream.Close(absl::OkStatus());
    } else {
      stream.Close(stream.cancel_reason());
    }
    absl::MutexLock lock(&trace.mu);
    (ok ? trace.closed_ok : trace.closed_cancelled) = true;
  }

  const int deltas_;
  Observability obs_;
  absl::Mutex mu_;
  std::vector<std::thread> producers_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<CallTrace>> traces_ ABSL_GUARDED_BY(mu_);
};

class ChatWakeupTest : public ::testing::Test {
 protected:
  void Start(int deltas) {
    service_ = std::make_unique<ScriptedChat>(deltas);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = v1::ChatService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (service_ != nullptr) service_->JoinProducers();
    if (server_ != nullptr) server_->Shutdown();
  }

  // No pop ran on the producer's thread, and the wakeup itself did run there (so the check
  // means something).
  static void ExpectNoPopOnProducer(CallTrace& trace) {
    absl::MutexLock lock(&trace.mu);
    EXPECT_GT(trace.wakeups_on_producer, 0);
    EXPECT_EQ(trace.wakeups_elsewhere, 0);
    for (const std::thread::id& id : trace.pop_threads) {
      EXPECT_NE(id, trace.producer) << "an event was popped (and serialized) by the producer";
    }
  }

  std::unique_ptr<ScriptedChat> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::ChatService::Stub> stub_;
};

TEST_F(ChatWakeupTest, WakeupOnlyPostsEveryEventIsWrittenFromGrpcThreads) {
  constexpr int kDeltas = 64;
  Start(kDeltas);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub_->Chat(&ctx, v1::ChatRequest());
  int started = 0, finished = 0;
  std::vector<int32_t> ids;
  std::string text;
  v1::ChatEvent e;
  while (reader->Read(&e)) {
    if (e.has_started()) ++started;
    if (e.has_delta()) {
      ids.insert(ids.end(), e.delta().token_ids().begin(), e.delta().token_ids().end());
      text += e.delta().text();
    }
    if (e.has_finished()) ++finished;
  }
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(started, 1);
  EXPECT_EQ(finished, 1);
  ASSERT_EQ(ids.size(), static_cast<size_t>(kDeltas));
  for (int i = 0; i < kDeltas; ++i) EXPECT_EQ(ids[i], 100 + i);
  EXPECT_EQ(text, std::string(kDeltas, 'x'));

  service_->JoinProducers();
  const auto traces = service_->traces();
  ASSERT_EQ(traces.size(), 1u);
  ExpectNoPopOnProducer(*traces[0]);
  absl::MutexLock lock(&traces[0]->mu);
  EXPECT_TRUE(traces[0]->closed_ok);
  EXPECT_EQ(traces[0]->pop_threads.size(), static_cast<size_t>(kDeltas + 2));
}

// Cancels while the producer keeps pushing, so calls end with wakeups and posts in flight:
// the reactor must outlive every post (a post still queued at OnDone deletes it), and the
// producer must be stopped. Several clients at once make the interleavings vary.
TEST_F(ChatWakeupTest, CancelWithPostsInFlightStopsTheTurnAndEndsTheCall) {
  Start(/*deltas=*/1 << 20);  // never finishes on its own
  constexpr int kClients = 4;
  constexpr int kCallsEach = 10;
  std::atomic<int> cancelled{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kCallsEach; ++i) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
        auto reader = stub_->Chat(&ctx, v1::ChatRequest());
        v1::ChatEvent e;
        // Vary how far each call gets before the cancel.
        for (int n = 0; n < 1 + (c + i) % 5 && reader->Read(&e); ++n) {
        }
        ctx.TryCancel();
        while (reader->Read(&e)) {
        }
        if (reader->Finish().error_code() == grpc::StatusCode::CANCELLED) ++cancelled;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(cancelled.load(), kClients * kCallsEach);

  service_->JoinProducers();  // returns only if every turn saw its cancel
  const auto traces = service_->traces();
  ASSERT_EQ(traces.size(), static_cast<size_t>(kClients * kCallsEach));
  for (const auto& trace : traces) {
    ExpectNoPopOnProducer(*trace);
    absl::MutexLock lock(&trace->mu);
    EXPECT_TRUE(trace->closed_cancelled);
  }
}

}  // namespace
}  // namespace xlstmd::server
