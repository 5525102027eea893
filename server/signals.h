// ShutdownSignals: SIGTERM/SIGINT delivered to a dedicated thread through sigwait, so no
// work ever happens in a signal handler. Construct it first thing in main, before any other
// thread exists: it blocks both signals in the calling thread, and every thread started
// afterwards (gRPC's, the engine's) inherits that mask, leaving sigwait the only taker.
//
// The first signal starts the drain; a second one cuts the grace period short.
// Thread-safe.
#ifndef XLSTMD_SERVER_SIGNALS_H_
#define XLSTMD_SERVER_SIGNALS_H_

#include <atomic>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace xlstmd::server {

class ShutdownSignals {
 public:
  ShutdownSignals();
  ~ShutdownSignals();  // stops and joins the waiting thread
  ShutdownSignals(const ShutdownSignals&) = delete;
  ShutdownSignals& operator=(const ShutdownSignals&) = delete;

  // Shutdown signals received so far.
  int count() const { return count_.load(std::memory_order_acquire); }
  // Blocks until the first signal; returns its number.
  int WaitFirst();

 private:
  void Run();

  std::atomic<int> count_{0};
  std::atomic<bool> stopping_{false};
  absl::Mutex mu_;
  int first_signal_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_SIGNALS_H_
