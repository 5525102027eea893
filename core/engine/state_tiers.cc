// The host tier and the moves between slots and host memory; construction and stats.
#include "core/engine/state_tiers.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/check.h"
#include "core/base/log_id.h"
#include "core/base/status_macros.h"
#include "spdlog/spdlog.h"

namespace xlstmd::core {

StateTiers::StateTiers(const TierOptions& options, StateCodec codec, SlotStore* slots,
                       SlotPool* pool, SessionIndex* index, const Clock* clock, PostFn post)
    : options_(options),
      codec_(std::move(codec)),
      slots_(slots),
      pool_(pool),
      index_(index),
      clock_(clock),
      post_(std::move(post)),
      state_bytes_(static_cast<int64_t>(slots->floats_per_slot() * sizeof(float))),
      own_host_pool_(options.state_pool != nullptr
                      ? nullptr
                      : std::make_unique<HostStatePool>(slots->floats_per_slot(), 0, nullptr)),
      host_pool_(options.state_pool != nullptr ? options.state_pool : own_host_pool_.get()) {}

StateTiers::~StateTiers() {
  lookups_.reset();
  io_.reset();
}

absl::StatusOr<std::unique_ptr<StateTiers>> StateTiers::Create(const TierOptions& options,
                                                               StateCodec codec,
                                                               SlotStore* slots, SlotPool* pool,
                                                               SessionIndex* index,
                                                               const Clock* clock, PostFn post) {
  std::unique_ptr<StateTiers> t(
      new StateTiers(options, std::move(codec), slots, pool, index, clock, std::move(post)));
  if (!options.state_dir.empty()) {
    SnapshotDir::Options dopts;
    dopts.max_file_bytes = t->codec_.snapshot_bytes;
    XLSTMD_ASSIGN_OR_RETURN(t->dir_, SnapshotDir::Open(options.state_dir, dopts));
    XLSTMD_RETURN_IF_ERROR(t->IndexStateDir());
  }
  if (!options.redis_url.empty()) {
    XLSTMD_RETURN_IF_ERROR(t->ConnectRedis());
    t->lookups_ = std::make_unique<IoPool>(std::max(1, options.io_threads));
  }
  t->io_ = std::make_unique<IoPool>(options.io_threads);
  return t;
}

bool StateTiers::Durable(const Entry& st) { return st.disk_gen == st.gen; }

// A state Redis holds may leave host RAM when there is no disk tier to spill to.
bool StateTiers::InRedis(const Entry& st) const {
  return redis_ != nullptr && dir_ == nullptr && st.redis_gen == st.gen;
}

void StateTiers::SetHost(Entry& st, HostState host) {
  if (st.host) {
    host_bytes_ -= state_bytes_;
    host_sessions_.fetch_sub(1, std::memory_order_relaxed);
  }
  st.host = std::move(host);
  if (st.host) {
    st.nonzero = true;
    host_bytes_ += state_bytes_;
    host_sessions_.fetch_add(1, std::memory_order_relaxed);
  }
}

void StateTiers::DropRewindPoints(Entry& st, size_t n) {
  n = std::min(n, st.rewind_points.size());
  for (size_t i = 0; i < n; ++i) st.rewind_points.pop_front();
  host_bytes_ -= state_bytes_ * static_cast<int64_t>(n);
}

void StateTiers::Spilled(EvictionReason reason, StateTier to) {
  if (options_.observer == nullptr) return;  // metrics hook
  options_.observer->OnEviction(reason);
  options_.observer->OnSpill(to);
}

// Rewind points are a convenience: they leave first, least recently used sessions' first.
// True once the budget holds.
bool StateTiers::EvictRewindPoints() {
  std::vector<std::pair<uint64_t, std::string>> order;
  for (auto& [id, st] : states_) {
    if (!st.rewind_points.empty()) order.emplace_back(st.last_used, id);
  }
  std::sort(order.begin(), order.end());
  for (const auto& [used, id] : order) {
    Entry& st = states_[id];
    while (!st.rewind_points.empty() && host_bytes_ > options_.host_state_bytes) {
      DropRewindPoints(st, 1);
    }
    if (host_bytes_ <= options_.host_state_bytes) return true;
  }
  return host_bytes_ <= options_.host_state_bytes;
}

// Host copies over the budget leave RAM: one a slower tier holds is dropped; another is
// written to disk first and dropped when that completes.
void StateTiers::EnforceHostBudget() {
  if (host_bytes_ <= options_.host_state_bytes) return;
  if (EvictRewindPoints()) return;
  std::vector<std::pair<uint64_t, std::string>> lru;
  for (auto& [id, st] : states_) {
    if (st.host) lru.emplace_back(st.last_used, id);
  }
  std::sort(lru.begin(), lru.end());
  for (const auto& [used, id] : lru) {
    if (host_bytes_ <= options_.host_state_bytes) break;
    Entry& st = states_[id];
    if (Durable(st) || InRedis(st)) {
      SetHost(st, nullptr);
      Spilled(EvictionReason::kHostBudget, Durable(st) ? StateTier::kDisk : StateTier::kRedis);
    } else if (dir_ != nullptr) {
      StartWrite(id);
    }
  }
}

int32_t StateTiers::TakeSlot() {
  int32_t slot = pool_->Take();
  if (slot >= 0) return slot;
  // Admission keeps running turns below the slot count, so a resident state exists.
  std::optional<std::string> victim = pool_->LeastRecentlyUsed();
  XLSTMD_CHECK(victim.has_value());
  Entry& st = states_[*victim];
  if (!Durable(st) && !InRedis(st)) {
    if (host_bytes_ + state_bytes_ > options_.host_state_bytes) EnforceHostBudget();
    if (host_bytes_ + state_bytes_ > options_.host_state_bytes) {
      if (dir_ != nullptr) StartWrite(*victim);
      return -1;
    }
    SetHost(st, ReadSlotAsync(pool_->ResidentSlot(*victim)));
  }
  pool_->Evict(*victim);
  Spilled(EvictionReason::kSlotPressure, st.host       ? StateTier::kHost
                                         : Durable(st) ? StateTier::kDisk
                                                       : StateTier::kRedis);
  return pool_->Take();
}

void StateTiers::LoadInto(const std::string& id, uint64_t version, int32_t slot,
                          std::function<bool()> wanted, StatusDone done) {
  const auto start = clock_->Now();
  auto it = states_.find(id);
  auto restored = [&](StateTier from) {
    it->second.last_used = ++tick_;
    if (options_.observer != nullptr) {  // metrics hook
      options_.observer->OnRestore(from, MsBetween(start, clock_->Now()) / 1000);
    }
  };
  if (it == states_.end() ||
      (pool_->ResidentSlot(id) < 0 && !it->second.host && !it->second.nonzero)) {
    slots_->Reset(slot);
  } else if (const int32_t resident = pool_->ResidentSlot(id); resident >= 0) {
    slots_->Copy(resident, slot);
    pool_->Touch(id);
    restored(StateTier::kResident);
  } else if (it->second.host) {
    slots_->WriteAsync(slot, it->second.host);
    restored(StateTier::kHost);
  } else if (Durable(it->second) && dir_ != nullptr) {
    return StartRestore(id, version, slot, /*from_redis=*/false, std::move(wanted),
                        std::move(done));
  } else if (InRedis(it->second)) {
    return StartRestore(id, version, slot, /*from_redis=*/true, std::move(wanted),
                        std::move(done));
  } else {
    return done(absl::DataLossError(
        absl::StrCat("the committed state of session ", id, " is in no tier")));
  }
  done(absl::OkStatus());
}

HostState StateTiers::CaptureSlot(int32_t slot) { return ReadSlotAsync(slot); }

// The scheduler goes on at once: the slot's next user is ordered after the copy on the
// device, and whoever reads the buffer first (host tier restore, snapshot encode on an I/O
// thread, Redis upload) waits for it there.
MutableHostState StateTiers::ReadSlotAsync(int32_t slot) {
  MutableHostState copy = host_pool_->Acquire(/*zero=*/false);
  const uint64_t fence = slots_->ReadAsync(slot, copy->data());
  if (fence != 0) {
    copy->SetPending([slots = slots_, fence] { return slots->WaitCopy(fence); });
  }
  return copy;
}

void StateTiers::InstallCommitted(const std::string& id, int32_t slot, uint64_t version) {
  Entry& st = states_[id];
  pool_->MakeResident(id, slot);
  st.nonzero = true;
  SetHost(st, nullptr);
  st.version = version;
  ++st.gen;
  st.last_used = ++tick_;
  if (options_.durability == Durability::kAsync) StartWrite(id);
}

void StateTiers::MarkShared(const std::string& id) {
  Entry& st = states_[id];
  st.redis_gen = st.gen;
}

void StateTiers::AddRewindPoint(const std::string& id, RewindPoint point) {
  if (!point.state) return;
  Entry& st = states_[id];
  st.rewind_points.push_back(std::move(point));
  host_bytes_ += state_bytes_;
  if (static_cast<int32_t>(st.rewind_points.size()) > options_.rewind_points) {
    DropRewindPoints(st, st.rewind_points.size() - options_.rewind_points);
  }
  EnforceHostBudget();
}

void StateTiers::Drop(const std::string& id) {
  auto it = states_.find(id);
  if (it == states_.end()) return;
  pool_->Evict(id);
  SetHost(it->second, nullptr);
  DropRewindPoints(it->second, it->second.rewind_points.size());
  const bool on_disk = it->second.disk_version >= 0 || it->second.write_in_flight;
  states_.erase(it);
  NotifyDurable(id, absl::OkStatus());
  // A write still in flight re-creates the file; its completion removes it again.
  if (dir_ != nullptr && on_disk) RemoveFile(id);
}

HostState StateTiers::StateCopy(const std::string& id, const Entry& st) {
  if (const int32_t slot = pool_->ResidentSlot(id); slot >= 0) return CaptureSlot(slot);
  if (st.host) return st.host;
  if (!st.nonzero) return host_pool_->Acquire(/*zero=*/true);
  return nullptr;
}

void StateTiers::Fork(const std::string& src, const SessionInfo& dst, InfoDone done) {
  auto it = states_.find(src);
  if (it != states_.end()) {
    // A fork of a resident session goes to host memory rather than taking a slot a turn
    // may need.
    HostState host = StateCopy(src, it->second);
    const uint64_t version = it->second.version;
    Entry& copy = states_[dst.session_id];
    copy.version = version;
    copy.last_used = ++tick_;
    if (!host) {
      // Only on disk: read it (off this thread); the fork is answered once it is loaded.
      copy.nonzero = true;
      io_->Submit([this, src, dst, version, done = std::move(done)]() mutable {
        MutableHostState state = host_pool_->Acquire(/*zero=*/true);
        const absl::Status status =
            ReadStoredState(src, version, state->span(), /*from_redis=*/false);
        post_([this, dst, state, status, done = std::move(done)]() mutable {
          auto it = states_.find(dst.session_id);
          if (!status.ok() || it == states_.end()) {
            index_->Erase(dst.session_id);
            Drop(dst.session_id);
            return done(status.ok() ? absl::NotFoundError("the fork was deleted while it loaded")
                                    : status);
          }
          SetHost(it->second, std::move(state));
          EnforceHostBudget();
          AckWhenStored(dst.session_id, dst, /*new_session=*/true, ExpectedVersion::Absent(),
                        std::move(done));
        });
      });
      return;
    }
    SetHost(copy, std::move(host));
    EnforceHostBudget();
  }
  AckWhenStored(dst.session_id, dst, /*new_session=*/true, ExpectedVersion::Absent(),
                std::move(done));
}

namespace {

absl::Status NotKept(const std::deque<RewindPoint>& points, const std::string& id,
                     uint64_t version, int32_t keep) {
  std::string kept;
  for (const RewindPoint& p : points) absl::StrAppend(&kept, kept.empty() ? "" : ", ", p.version);
  return absl::FailedPreconditionError(absl::StrCat(
      "version ", version, " of session ", id, " is not kept (kept: ", kept.empty() ? "none" : kept,
      "; the server keeps ", keep, " earlier versions)"));
}

}  // namespace

absl::StatusOr<RewindPoint> StateTiers::FindRewindPoint(const std::string& id, uint64_t version) {
  auto it = states_.find(id);
  if (it == states_.end()) return NotKept({}, id, version, options_.rewind_points);
  for (const RewindPoint& p : it->second.rewind_points) {
    // A point whose state the turn that left it has not copied out yet is not usable.
    if (p.version == version && p.state != nullptr) return p;
  }
  return NotKept(it->second.rewind_points, id, version, options_.rewind_points);
}

void StateTiers::ForkFromState(const SessionInfo& dst, HostState state, InfoDone done) {
  Entry& copy = states_[dst.session_id];
  copy.version = dst.version;
  copy.last_used = ++tick_;
  SetHost(copy, std::move(state));
  EnforceHostBudget();
  AckWhenStored(dst.session_id, dst, /*new_session=*/true, ExpectedVersion::Absent(),
                std::move(done));
}

absl::StatusOr<SessionInfo> StateTiers::Rewind(const std::string& id, uint64_t version) {
  Entry& st = states_[id];
  auto point = std::find_if(st.rewind_points.begin(), st.rewind_points.end(),
                            [&](const RewindPoint& p) { return p.version == version; });
  if (point == st.rewind_points.end()) {
    return NotKept(st.rewind_points, id, version, options_.rewind_points);
  }
  RewindPoint target = std::move(*point);
  // The target and everything newer leave the list; older ones stay.
  const size_t newer = static_cast<size_t>(st.rewind_points.end() - point);
  st.rewind_points.erase(point, st.rewind_points.end());
  host_bytes_ -= state_bytes_ * static_cast<int64_t>(newer);
  std::optional<SessionInfo> info = index_->Rewind(id, target);
  if (!info.has_value()) return SessionNotFound(id);
  pool_->Evict(id);
  SetHost(st, target.state);
  st.version = target.version;
  st.last_used = ++tick_;
  // The file may hold a newer version with the same number, so the state is no longer the
  // file's whatever the durability mode: a new generation.
  ++st.gen;
  EnforceHostBudget();
  return *info;
}

void StateTiers::Export(const std::string& id, SnapshotMeta meta,
                        std::function<void(absl::StatusOr<std::string>)> done) {
  auto it = states_.find(id);
  HostState state = it == states_.end()
                        ? host_pool_->Acquire(/*zero=*/true)
                        : StateCopy(id, it->second);
  io_->Submit([this, id, meta = std::move(meta), state, done = std::move(done)] {
    if (state) {
      if (absl::Status copied = state->copy_status(); !copied.ok()) return done(copied);
      return done(EncodeSnapshot(meta, codec_.fingerprint, *codec_.layout, state->span()));
    }
    // Only on disk: read and verify it in full (a corrupt file is quarantined, never handed
    // out), then encode it with the current metadata.
    std::vector<float> disk(slots_->floats_per_slot());
    absl::Status status = ReadStoredState(id, meta.version, absl::MakeSpan(disk), false);
    if (!status.ok()) return done(status);
    done(EncodeSnapshot(meta, codec_.fingerprint, *codec_.layout, disk));
  });
}

void StateTiers::Install(const std::string& id, uint64_t version, HostState state,
                         bool from_redis) {
  Entry& st = states_[id];
  pool_->Evict(id);
  // Another daemon's history replaced the versions kept here.
  DropRewindPoints(st, st.rewind_points.size());
  SetHost(st, std::move(state));
  st.version = version;
  ++st.gen;
  st.last_used = ++tick_;
  if (from_redis) {
    st.redis_gen = st.gen;
    ++restores_from_redis_;
    if (dir_ != nullptr && options_.durability != Durability::kNone) StartWrite(id);
  }
  EnforceHostBudget();
}

void StateTiers::Erase(const std::string& id, StatusDone done) {
  index_->Erase(id);
  Drop(id);
  if (dir_ == nullptr) return done(absl::OkStatus());
  // Answer only once the file is gone, so a crash cannot bring the session back.
  io_->Submit([this, id, done = std::move(done)] {
    absl::Status s = dir_->Remove(id);
    if (!s.ok() && !absl::IsNotFound(s)) {
      spdlog::warn("could not remove the snapshot of deleted session {}: {}",
                   base::LogSessionId(id), base::LogStatus(s, id));
    }
    done(absl::OkStatus());
  });
}

TierStats StateTiers::Stats() const {
  TierStats s;
  s.host_sessions = host_sessions_.load(std::memory_order_relaxed);
  s.host_state_bytes = host_bytes_.load(std::memory_order_relaxed);
  s.snapshot_writes = snapshot_writes_.load(std::memory_order_relaxed);
  s.snapshot_write_failures = snapshot_write_failures_.load(std::memory_order_relaxed);
  s.restores_from_disk = restores_from_disk_.load(std::memory_order_relaxed);
  s.restores_from_redis = restores_from_redis_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace xlstmd::core
