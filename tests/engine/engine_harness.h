// Shared fixtures of the engine tests (engine_test.cc, engine_tiers_test.cc): an engine on the
// golden xLSTM-Large model, a blocking turn runner and the session-command wrappers.
#ifndef XLSTMD_TESTS_ENGINE_ENGINE_HARNESS_H_
#define XLSTMD_TESTS_ENGINE_ENGINE_HARNESS_H_

#include "core/engine/engine.h"

#include <atomic>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>
#include <fstream>
#include <random>
#include <condition_variable>
#include <mutex>
#include <chrono>
#include <thread>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "tests/testing/golden.h"
#include "tests/testing/redis_server.h"


namespace xlstmd::core::engine_testing {

struct Harness {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<Engine> engine;
};

// `backend`: the backend to serve on (default: a CPU backend with 2 threads).
inline Harness MakeEngine(EngineOptions options = {},
                          std::unique_ptr<kernels::Backend> backend = nullptr) {
  Harness h;
  const auto dir = testing::GoldenDir("xlstm-large-a1");
  if (backend == nullptr) {
    kernels::BackendOptions bopts;
    bopts.threads = 2;
    auto cpu = kernels::CreateBackend("cpu", bopts);
    EXPECT_TRUE(cpu.ok()) << cpu.status();
    backend = std::move(*cpu);
  }
  h.backend = std::move(backend);
  auto model = XlstmModel::Load(dir, h.backend.get());
  EXPECT_TRUE(model.ok()) << model.status();
  auto tok = LoadModelTokenizer(dir);
  EXPECT_TRUE(tok.ok()) << tok.status();
  auto tmpl = ChatTemplate::ForModel(dir, **tok);
  EXPECT_TRUE(tmpl.ok()) << tmpl.status();
  auto engine = Engine::Create(std::move(*model), std::move(*tok), std::move(*tmpl), options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  h.engine = std::move(*engine);
  return h;
}

inline SessionInfo NewSession(Engine& e, const std::string& owner = "", const std::string& system = "") {
  absl::Notification done;
  absl::StatusOr<SessionInfo> result;
  e.CreateSession(owner, system, [&](absl::StatusOr<SessionInfo> r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_TRUE(result.ok()) << result.status();
  return result.value_or(SessionInfo{});
}

// Runs a stream to its end, collecting events; optionally cancels after the first delta.
struct TurnResult {
  absl::Status status;
  std::vector<int32_t> input_ids;
  std::vector<int32_t> tokens;
  std::string text;
  uint64_t version = 0;
  FinishReason finish = FinishReason::kNone;
};

class Collector {
 public:
  std::function<void()> Wakeup() {
    return [this] {
      std::lock_guard<std::mutex> lock(mu_);
      ++pokes_;
      cv_.notify_all();
    };
  }
  TurnResult Drain(TurnStream& stream, bool cancel_after_first_delta = false) {
    TurnResult r;
    while (true) {
      TurnEvent ev;
      if (stream.TryPop(&ev)) {
        switch (ev.kind) {
          case TurnEvent::Kind::kStarted:
            r.input_ids = ev.input_ids;
            break;
          case TurnEvent::Kind::kDelta:
            r.tokens.insert(r.tokens.end(), ev.token_ids.begin(), ev.token_ids.end());
            r.text += ev.text;
            if (cancel_after_first_delta) stream.Cancel(absl::CancelledError("test cancel"));
            break;
          case TurnEvent::Kind::kFinished:
            r.version = ev.session_version;
            r.finish = ev.finish_reason;
            break;
        }
        continue;
      }
      if (stream.Done()) {
        // The engine thread may still be inside the wakeup of the Close it just made; after
        // DetachWakeup it is out, and this collector may go (turn_stream.h).
        stream.DetachWakeup();
        break;
      }
      std::unique_lock<std::mutex> lock(mu_);
      const int64_t seen = pokes_;
      cv_.wait_for(lock, std::chrono::milliseconds(50), [&] { return pokes_ != seen; });
    }
    r.status = stream.final_status();
    return r;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t pokes_ = 0;
};

inline TurnRequest Tokens(const std::string& id, std::vector<int32_t> ids, int32_t max_tokens = 6) {
  TurnRequest r;
  r.session_id = id;
  r.tokens = std::move(ids);
  r.sampling.max_tokens = max_tokens;
  return r;
}

inline TurnResult RunTurn(Engine& e, TurnRequest req, bool cancel = false) {
  Collector c;
  auto stream = e.StartTurn(std::move(req), c.Wakeup());
  if (!stream.ok()) {
    TurnResult r;
    r.status = stream.status();
    return r;
  }
  return c.Drain(**stream, cancel);
}


// Runs `rounds` rounds of one turn per session on `e` and on the reference engine `ref` alike
// (session i of round r feeds {i + 3, r + 1}) and expects the same tokens from both; `after`
// runs after each pair of turns.
inline void RunRoundsLikeReference(Engine& e, const std::vector<std::string>& ids, Engine& ref,
                                   const std::vector<std::string>& ref_ids, int rounds,
                                   const std::function<void()>& after = {}) {
  for (int round = 0; round < rounds; ++round) {
    for (int i = 0; i < static_cast<int>(ids.size()); ++i) {
      TurnResult a = RunTurn(e, Tokens(ids[i], {i + 3, round + 1}, 4));
      TurnResult b = RunTurn(ref, Tokens(ref_ids[i], {i + 3, round + 1}, 4));
      ASSERT_TRUE(a.status.ok()) << a.status;
      ASSERT_TRUE(b.status.ok()) << b.status;
      EXPECT_EQ(a.tokens, b.tokens) << "round " << round << " session " << i;
      if (after) after();
    }
  }
}

inline std::filesystem::path FreshDir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   absl::StrCat("xlstmd_engine_", name, "_", ::getpid(), "_", std::random_device{}());
  std::filesystem::remove_all(dir);
  return dir;
}

inline absl::StatusOr<SessionInfo> Fork(Engine& e, const std::string& id) {
  absl::Notification done;
  absl::StatusOr<SessionInfo> out;
  e.ForkSession("", id, [&](absl::StatusOr<SessionInfo> r) {
    out = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

inline absl::StatusOr<std::string> Export(Engine& e, const std::string& id) {
  absl::Notification done;
  absl::StatusOr<std::string> out;
  e.ExportSession("", id, [&](absl::StatusOr<std::string> r) {
    out = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

inline absl::StatusOr<SessionInfo> Import(Engine& e, std::string bytes) {
  absl::Notification done;
  absl::StatusOr<SessionInfo> out;
  e.ImportSession("", std::move(bytes), [&](absl::StatusOr<SessionInfo> r) {
    out = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

inline absl::StatusOr<SessionInfo> ForkAt(Engine& e, const std::string& id, uint64_t version) {
  absl::Notification done;
  absl::StatusOr<SessionInfo> out;
  e.ForkSessionAt("", id, version, [&](absl::StatusOr<SessionInfo> r) {
    out = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

inline absl::StatusOr<SessionInfo> Rewind(Engine& e, const std::string& id, uint64_t version) {
  absl::Notification done;
  absl::StatusOr<SessionInfo> out;
  e.RewindSession("", id, version, [&](absl::StatusOr<SessionInfo> r) {
    out = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}


}  // namespace xlstmd::core::engine_testing

#endif  // XLSTMD_TESTS_ENGINE_ENGINE_HARNESS_H_
