// Clock: where the engine reads time. Injected through EngineOptions so that tests advance a
// FakeClock instead of sleeping, and every deadline, idle expiry and latency figure the engine
// computes comes from one source.
//
// Thread rules: Now() and UnixMs() are called from any engine thread (scheduler, I/O pool,
// callers of the engine API) and must be thread-safe. A clock must outlive every engine that
// uses it.
#ifndef XLSTMD_CORE_ENGINE_CLOCK_H_
#define XLSTMD_CORE_ENGINE_CLOCK_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace xlstmd::core {

using SteadyClock = std::chrono::steady_clock;

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time: deadlines, idle expiry, latencies.
  virtual SteadyClock::time_point Now() const = 0;
  // Wall time in milliseconds since the epoch: what session metadata records.
  virtual int64_t UnixMs() const = 0;
  // Registers `wake`, called whenever this clock jumps forward (never for a real clock): a
  // scheduler that sleeps until its next deadline must then look at the time again. `wake`
  // must be cheap and may be called after its registrant is gone, so it should hold its
  // target by shared_ptr.
  virtual void OnJump(std::function<void()> wake) {}
};

// The process's steady and system clocks.
Clock& RealClock();

// A clock that moves only when told to (tests).
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t unix_ms = 1'700'000'000'000) : unix_ms_(unix_ms) {}

  SteadyClock::time_point Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  int64_t UnixMs() const override {
    absl::MutexLock lock(&mu_);
    return unix_ms_;
  }
  void OnJump(std::function<void()> wake) override {
    absl::MutexLock lock(&mu_);
    wakes_.push_back(std::move(wake));
  }
  void Advance(std::chrono::milliseconds d) {
    std::vector<std::function<void()>> wakes;
    {
      absl::MutexLock lock(&mu_);
      now_ += d;
      unix_ms_ += d.count();
      wakes = wakes_;
    }
    for (auto& w : wakes) w();
  }

 private:
  mutable absl::Mutex mu_;
  SteadyClock::time_point now_ ABSL_GUARDED_BY(mu_){};
  int64_t unix_ms_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> wakes_ ABSL_GUARDED_BY(mu_);
};

inline double MsBetween(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_CLOCK_H_
