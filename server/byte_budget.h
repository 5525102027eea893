// ByteBudget: bytes of snapshots in flight (imports being received, exports being sent),
// shared by every call, so a crowd of stalled ImportSession / ExportSession streams cannot
// pin unbounded memory: a call that would pass the limit is refused at once
// (RESOURCE_EXHAUSTED). The first holder may always take what it needs, so a limit below one
// snapshot admits them one at a time instead of never. Thread-safe.
#ifndef XLSTMD_SERVER_BYTE_BUDGET_H_
#define XLSTMD_SERVER_BYTE_BUDGET_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/base/retry.h"

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

// The same rule per tenant, with a limit per tenant (0 = no quota): one tenant's imports
// and exports cannot take the whole shared budget from the others. Thread-safe.
class TenantByteBudget {
 public:
  TenantByteBudget(uint64_t default_limit, std::map<std::string, uint64_t> overrides)
      : default_limit_(default_limit), overrides_(std::move(overrides)) {}
  uint64_t LimitFor(const std::string& tenant) const {
    auto it = overrides_.find(tenant);
    return it == overrides_.end() ? default_limit_ : it->second;
  }
  bool TryTake(const std::string& tenant, uint64_t n) {
    const uint64_t limit = LimitFor(tenant);
    absl::MutexLock lock(&mu_);
    uint64_t& cur = in_flight_[tenant];
    if (limit != 0 && cur != 0 && (n > limit || cur > limit - n)) return false;
    cur += n;
    return true;
  }
  void Give(const std::string& tenant, uint64_t n) {
    absl::MutexLock lock(&mu_);
    auto it = in_flight_.find(tenant);
    if (it == in_flight_.end()) return;
    it->second -= n;
    if (it->second == 0) in_flight_.erase(it);  // idle tenants cost nothing
  }
  uint64_t in_flight(const std::string& tenant) const {
    absl::MutexLock lock(&mu_);
    auto it = in_flight_.find(tenant);
    return it == in_flight_.end() ? 0 : it->second;
  }

 private:
  const uint64_t default_limit_;
  const std::map<std::string, uint64_t> overrides_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, uint64_t> in_flight_ ABSL_GUARDED_BY(mu_);
};

// Both budgets a snapshot call is charged against (--snapshot-bytes-in-flight and the
// tenant's --tenant-snapshot-bytes quota). Not owned.
struct SnapshotBudgets {
  ByteBudget* shared = nullptr;
  TenantByteBudget* tenants = nullptr;  // nullptr = no per-tenant quotas
};

// Bytes a snapshot call holds in both budgets, given back when the reactor goes.
class SnapshotHold {
 public:
  SnapshotHold() = default;
  SnapshotHold(const SnapshotHold&) = delete;
  SnapshotHold& operator=(const SnapshotHold&) = delete;
  ~SnapshotHold() { Release(); }

  // OK, or RESOURCE_EXHAUSTED naming the budget that is full (nothing is then held).
  absl::Status Take(const SnapshotBudgets& budgets, const std::string& tenant, uint64_t n) {
    Release();
    if (!shared_.Take(budgets.shared, n)) {
      return base::CapacityError(absl::StrCat(
          "snapshot bytes in flight are at their limit (",
          budgets.shared == nullptr ? 0 : budgets.shared->limit(),
          " bytes held by other imports and exports; --snapshot-bytes-in-flight); retry later"),
          base::kShedSnapshotBytes);
    }
    if (budgets.tenants != nullptr) {
      if (!budgets.tenants->TryTake(tenant, n)) {
        shared_.Release();
        return base::CapacityError(absl::StrCat(
            "tenant ", tenant.empty() ? "(anonymous)" : tenant,
            "'s snapshot bytes in flight are at its quota (", budgets.tenants->LimitFor(tenant),
            " bytes; --tenant-snapshot-bytes or max_snapshot_bytes= in the API-key file); "
            "retry later"),
            base::kShedTenantSnapshotBytes);
      }
      tenants_ = budgets.tenants;
      tenant_ = tenant;
      tenant_bytes_ = n;
    }
    return absl::OkStatus();
  }
  // Keeps only `n` of the bytes held (n <= held).
  void ShrinkTo(uint64_t n) {
    shared_.ShrinkTo(n);
    if (tenants_ != nullptr && n < tenant_bytes_) {
      tenants_->Give(tenant_, tenant_bytes_ - n);
      tenant_bytes_ = n;
    }
  }
  void Release() {
    shared_.Release();
    if (tenants_ != nullptr) tenants_->Give(tenant_, tenant_bytes_);
    tenants_ = nullptr;
    tenant_bytes_ = 0;
  }

 private:
  BudgetHold shared_;
  TenantByteBudget* tenants_ = nullptr;
  std::string tenant_;
  uint64_t tenant_bytes_ = 0;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_BYTE_BUDGET_H_
