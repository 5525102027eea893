// Running a turn and the session commands for a web request, on the connection's thread.
#include <chrono>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/logging.h"
#include "server/metrics.h"
#include "server/turn_log.h"
#include "server/web_internal.h"

namespace xlstmd::server::web {
namespace {

// The engine's wakeup only flips a flag (it runs on the engine thread and must be quick);
// the connection thread waits on it.
struct Waiter {
  absl::Mutex mu;
  bool signaled ABSL_GUARDED_BY(mu) = false;
};

// How often a waiting request looks for a departed client when no event comes.
constexpr absl::Duration kPeerCheck = absl::Milliseconds(100);

void LogTurn(const Call& call, const std::string& session_id, const absl::Status& status,
             const std::optional<core::TurnEvent>& finished, uint64_t tokens_out,
             std::chrono::steady_clock::time_point start, bool client_gone) {
  if (!call.state->observability().log_turns) return;
  LogLine line("turn");
  line.Add("transport", "web")
      .Add("route", call.route)
      .Add("session", session_id.empty() ? std::string() : HashSessionId(session_id))
      .Add("tenant", call.tenant)
      .Add("code", ServerMetrics::GrpcCodeName(static_cast<int>(status.code())));
  if (finished.has_value()) {
    AddCommittedTurn(line, *finished);
  } else {
    line.Add("finish", "none")
        .Add("tokens_out", tokens_out)
        .AddMs("duration_ms", std::chrono::duration<double, std::milli>(
                                  std::chrono::steady_clock::now() - start)
                                  .count());
  }
  if (client_gone) line.Add("client_gone", true);
  AddTurnError(line, status, session_id);
  LogTurnLine(line, status.code());
}

}  // namespace

absl::Status RunTurn(Call& call, core::TurnRequest request, const TurnHooks& hooks,
                     bool* client_gone) {
  *client_gone = false;
  const auto start = std::chrono::steady_clock::now();
  const std::string session_id = request.session_id;
  auto waiter = std::make_shared<Waiter>();
  absl::StatusOr<std::shared_ptr<core::TurnStream>> started =
      call.engine->StartTurn(std::move(request), [waiter] {
        absl::MutexLock lock(&waiter->mu);
        waiter->signaled = true;
      });
  if (!started.ok()) {
    if (auto after = std::exchange(call.after_turn, nullptr)) after();
    LogTurn(call, session_id, started.status(), std::nullopt, 0, start, false);
    return started.status();
  }
  const std::shared_ptr<core::TurnStream> stream = *std::move(started);
  ServerMetrics* metrics = call.state->observability().metrics;
  ServerMetrics::TurnTracker tracker;
  std::optional<core::TurnEvent> finished;
  uint64_t tokens_out = 0;
  bool gone = false;
  const auto leave = [&] {
    if (gone) return;
    gone = true;
    stream->Cancel(absl::CancelledError("the client went away"));
  };
  absl::Time next_beat = absl::Now() + call.config->heartbeat;
  for (;;) {
    core::TurnEvent event;
    while (stream->TryPop(&event)) {
      if (metrics != nullptr) metrics->OnTurnEvent(event, &tracker);
      tokens_out += event.token_ids.size();
      if (event.kind == core::TurnEvent::Kind::kFinished) finished = event;
      if (!gone && !hooks.on_event(event)) leave();
      next_beat = absl::Now() + call.config->heartbeat;
    }
    if (stream->Done()) break;
    {
      absl::MutexLock lock(&waiter->mu);
      waiter->mu.AwaitWithTimeout(absl::Condition(&waiter->signaled), kPeerCheck);
      waiter->signaled = false;
    }
    if (gone) continue;  // the engine closes the stream within a step
    // A client that left while its turn waits in the queue, or between tokens.
    if (call.res.PeerGone()) {
      leave();
    } else if (hooks.heartbeat && absl::Now() >= next_beat) {
      if (!hooks.heartbeat()) leave();
      next_beat = absl::Now() + call.config->heartbeat;
    }
  }
  stream->DetachWakeup();
  if (auto after = std::exchange(call.after_turn, nullptr)) after();
  *client_gone = gone;
  if (gone && metrics != nullptr) metrics->OnWebDisconnect();
  const absl::Status status = stream->final_status();
  LogTurn(call, session_id, status, finished, tokens_out, start, gone);
  return status;
}

namespace {

// Runs an engine command that answers through a callback, and waits for its answer on this
// (connection) thread. The callback may outlive the wait only in theory (the engine always
// answers), so what it writes is shared, not on this stack.
template <typename T, typename Start>
T Await(Start start) {
  struct Result {
    absl::Notification done;
    std::optional<T> value;
  };
  auto r = std::make_shared<Result>();
  start([r](T value) {
    r->value = std::move(value);
    r->done.Notify();
  });
  r->done.WaitForNotification();
  return *std::move(r->value);
}

using InfoOr = absl::StatusOr<core::SessionInfo>;

}  // namespace

InfoOr CreateSessionSync(Call& call, std::string system_prompt) {
  return Await<InfoOr>([&](auto done) {
    call.engine->CreateSession(call.tenant, std::move(system_prompt), std::move(done));
  });
}

absl::Status DeleteSessionSync(Call& call, const std::string& id) {
  return Await<absl::Status>(
      [&](auto done) { call.engine->DeleteSession(call.tenant, id, std::move(done)); });
}

InfoOr LookupSessionSync(Call& call, const std::string& id) {
  return Await<InfoOr>(
      [&](auto done) { call.engine->LookupSession(call.tenant, id, std::move(done)); });
}

InfoOr ForkSessionSync(Call& call, const std::string& id, std::optional<uint64_t> version) {
  return Await<InfoOr>([&](auto done) {
    if (version.has_value()) {
      call.engine->ForkSessionAt(call.tenant, id, *version, std::move(done));
    } else {
      call.engine->ForkSession(call.tenant, id, std::move(done));
    }
  });
}

InfoOr RewindSessionSync(Call& call, const std::string& id, uint64_t version) {
  return Await<InfoOr>([&](auto done) {
    call.engine->RewindSession(call.tenant, id, version, std::move(done));
  });
}

}  // namespace xlstmd::server::web
