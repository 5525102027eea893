#include "core/engine/turn_stream.h"

#include <chrono>
#include <utility>

namespace xlstmd::core {

TurnStream::TurnStream(int32_t capacity, std::function<void()> wakeup)
    : capacity_(capacity < 1 ? 1 : capacity), wakeup_(std::move(wakeup)) {}

bool TurnStream::TryPop(TurnEvent* event) {
  bool made_room = false;
  {
    absl::MutexLock lock(&mu_);
    if (events_.empty()) return false;
    made_room = static_cast<int32_t>(events_.size()) == capacity_;
    *event = std::move(events_.front());
    events_.pop_front();
  }
  // A full buffer paused the turn; tell the engine it may run again. Outside the lock: the
  // callback takes the engine's mutex.
  if (made_room && on_room_) on_room_();
  return true;
}

bool TurnStream::Done() const {
  absl::MutexLock lock(&mu_);
  return closed_ && events_.empty();
}

absl::Status TurnStream::final_status() const {
  absl::MutexLock lock(&mu_);
  return final_status_;
}

void TurnStream::Cancel(absl::Status reason) {
  {
    absl::MutexLock lock(&mu_);
    if (closed_ || cancel_requested_.load(std::memory_order_relaxed)) return;
    cancel_reason_ = std::move(reason);
    cancel_requested_.store(true, std::memory_order_release);
  }
  if (on_cancel_) on_cancel_();
}

absl::Status TurnStream::cancel_reason() const {
  absl::MutexLock lock(&mu_);
  return cancel_reason_;
}

void TurnStream::DetachWakeup() {
  absl::MutexLock lock(&wake_mu_);
  wakeup_ = nullptr;
}

bool TurnStream::HasRoom() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int32_t>(events_.size()) < capacity_;
}

void TurnStream::Push(TurnEvent event) {
  event.pushed_at = std::chrono::steady_clock::now();
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    events_.push_back(std::move(event));
  }
  Wake();
}

void TurnStream::Close(absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    final_status_ = std::move(status);
  }
  Wake();
}

bool TurnStream::closed() const {
  absl::MutexLock lock(&mu_);
  return closed_;
}

void TurnStream::Wake() {
  absl::MutexLock lock(&wake_mu_);
  if (wakeup_) wakeup_();
}

}  // namespace xlstmd::core
