// ByteBudget: bytes of snapshots in flight (imports being received, exports being sent),
// shared by every call, so a crowd of stalled ImportSession / ExportSession streams cannot
// pin unbounded memory: a call that would pass the limit is refused at once
// (RESOURCE_EXHAUSTED). The first holder may always take what it needs, so a limit below one
// snapshot admits them one at a time instead of never. Thread-safe.
#ifndef XLSTMD_SERVER_BYTE_BUDGET_H_
#define XLSTMD_SERVER_BYTE_BUDGET_H_

#include <atomic>
#include <cstdint>

namespace xlstmd::server {

class ByteBudget {
 public:
  explicit ByteBudget(uint64_t limit) : limit_(limit) {}
  bool TryTake(uint64_t n) {
    uint64_t cur = in_flight_.load(std::memory_order_relaxed);
    do {
      if (cur != 0 && (n > limit_ || cur > limit_ - n)) return false;
    } while (!in_flight_.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed));
    return true;
  }
  void Give(uint64_t n) { in_flight_.fetch_sub(n, std::memory_order_relaxed); }
  uint64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> in_flight_{0};
};

// Bytes taken from a budget, given back when the holder goes (a reactor's OnDone).
class BudgetHold {
 public:
  BudgetHold() = default;
  BudgetHold(const BudgetHold&) = delete;
  BudgetHold& operator=(const BudgetHold&) = delete;
  ~BudgetHold() { Release(); }
  bool Take(ByteBudget* budget, uint64_t n) {
    Release();
    if (budget == nullptr || !budget->TryTake(n)) return false;
    budget_ = budget;
    bytes_ = n;
    return true;
  }
  // Keeps only `n` of the bytes held (n <= held).
  void ShrinkTo(uint64_t n) {
    if (budget_ == nullptr || n >= bytes_) return;
    budget_->Give(bytes_ - n);
    bytes_ = n;
  }
  void Release() {
    if (budget_ != nullptr) budget_->Give(bytes_);
    budget_ = nullptr;
    bytes_ = 0;
  }

 private:
  ByteBudget* budget_ = nullptr;
  uint64_t bytes_ = 0;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_BYTE_BUDGET_H_
