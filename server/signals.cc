#include "server/signals.h"

#include <pthread.h>
#include <signal.h>

namespace xlstmd::server {
namespace {

sigset_t ShutdownSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

ShutdownSignals::ShutdownSignals() {
  const sigset_t set = ShutdownSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  thread_ = std::thread([this] { Run(); });
}

ShutdownSignals::~ShutdownSignals() {
  stopping_.store(true, std::memory_order_release);
  // Wakes the sigwait below; the signal is blocked everywhere, so it cannot kill us.
  pthread_kill(thread_.native_handle(), SIGTERM);
  thread_.join();
}

void ShutdownSignals::Run() {
  const sigset_t set = ShutdownSet();
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (stopping_.load(std::memory_order_acquire)) return;
    absl::MutexLock lock(&mu_);
    if (first_signal_ == 0) first_signal_ = sig;
    count_.fetch_add(1, std::memory_order_acq_rel);
  }
}

int ShutdownSignals::WaitFirst() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* first) { return *first != 0; }, &first_signal_));
  return first_signal_;
}

}  // namespace xlstmd::server
