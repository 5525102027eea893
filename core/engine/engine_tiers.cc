#include "core/engine/engine_impl.h"

namespace xlstmd::core {

// Startup: registers every valid snapshot's session from its header; the states load
// lazily on their first turn. Foreign or corrupt files are quarantined, never loaded.
absl::Status Engine::Impl::IndexStateDir() {
  XLSTMD_ASSIGN_OR_RETURN(SnapshotScanResult scan, dir_->Scan());
  int64_t loaded = 0;
  for (const SnapshotFileInfo& f : scan.files) {
    absl::StatusOr<SnapshotMeta> meta = ReadSnapshotHead(f.session_id, f.bytes);
    if (meta.ok() && meta->session_id != f.session_id) {
      meta = absl::DataLossError(
          absl::StrCat("file of session ", f.session_id, " holds session ", meta->session_id));
    }
    if (!meta.ok()) {
      spdlog::warn("state dir: quarantining snapshot of session {}: {}",
                   base::LogSessionId(f.session_id), base::LogStatus(meta.status(), f.session_id));
      (void)dir_->Quarantine(f.session_id, SnapshotErrorReason(meta.status()),
                             meta.status().ToString());
      continue;
    }
    absl::MutexLock lock(&mu_);
    SessionMeta& m = sessions_[meta->session_id];
    m.info.session_id = meta->session_id;
    m.info.owner = meta->owner;
    m.info.version = meta->version;
    m.info.token_count = meta->token_count;
    m.info.created_unix_ms = meta->created_unix_ms;
    m.info.updated_unix_ms = meta->updated_unix_ms;
    m.session_start_done = (meta->flags & kFlagSessionStartDone) != 0;
    m.reply_open = (meta->flags & kFlagReplyOpen) != 0;
    for (const CommittedRequest& r : meta->recent_requests) {
      m.request_order.push_back(r.request_id);
      m.request_versions[r.request_id] = r.version;
    }
    last_active_[meta->session_id] = SteadyClock::now();
    SessionState& st = states_[meta->session_id];
    st.version = meta->version;
    st.disk_version = static_cast<int64_t>(meta->version);
    st.disk_gen = st.gen;
    st.nonzero = true;
    ++loaded;
  }
  spdlog::info("state dir {}: {} sessions indexed, {} leftover temp files removed, {} quarantined",
               dir_->path().string(), loaded, scan.temps_removed,
               scan.quarantined + static_cast<int64_t>(scan.files.size()) - loaded);
  return absl::OkStatus();
}

// The header of a session's snapshot file, reading only as much as the header needs.
absl::StatusOr<SnapshotMeta> Engine::Impl::ReadSnapshotHead(const std::string& id,
                                                            uint64_t file_bytes) {
  std::ifstream in(dir_->FilePath(id), std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open the snapshot of ", id));
  std::string prefix;
  size_t want = 64 << 10;
  while (true) {
    const size_t have = prefix.size();
    prefix.resize(want);
    in.read(prefix.data() + have, static_cast<std::streamsize>(want - have));
    prefix.resize(have + static_cast<size_t>(in.gcount()));
    absl::StatusOr<SnapshotHeadInfo> head =
        DecodeSnapshotHead(prefix, fingerprint_, model_->state_layout());
    if (head.ok()) {
      // The header states the exact size, so a torn or padded file is found at startup
      // rather than on the session's first turn.
      if (head->total_bytes != file_bytes) {
        return absl::DataLossError(absl::StrCat("snapshot of ", id, " is ", file_bytes,
                                                " bytes, its header says ", head->total_bytes));
      }
      return head->meta;
    }
    // OUT_OF_RANGE: the header is longer than what was read so far.
    if (head.status().code() != absl::StatusCode::kOutOfRange || !in || want >= snapshot_bytes_) {
      if (head.status().code() == absl::StatusCode::kOutOfRange) {
        return absl::DataLossError(
            absl::StrCat("snapshot of ", id, " is truncated: ", head.status().message()));
      }
      return head.status();
    }
    want = std::min<size_t>(want * 4, snapshot_bytes_);
  }
}

absl::Status Engine::Impl::ReadStoredState(const std::string& id, uint64_t version,
                                           absl::Span<float> state, bool from_redis) {
  if (dir_ == nullptr && redis_ == nullptr) {
    return absl::DataLossError(
        absl::StrCat("the committed state of session ", id, " is in no tier"));
  }
  // Without a disk tier a state that left RAM can only be in Redis.
  if (from_redis || dir_ == nullptr) {
    absl::StatusOr<RedisSnapshot> snap = redis_->Get(id);
    absl::Status status = snap.status();
    if (snap.ok()) {
      absl::StatusOr<SnapshotMeta> meta =
          DecodeSnapshotInto(snap->bytes, fingerprint_, model_->state_layout(), state);
      if (!meta.ok()) {
        status = meta.status();
      } else if (meta->session_id != id || meta->version != version) {
        status = absl::AbortedError(absl::StrCat("Redis holds version ", meta->version, ", not ",
                                                 version, " (another server changed the session)"));
      }
    }
    if (status.ok()) return status;
    spdlog::error("reading session {} from Redis: {}", base::LogSessionId(id), base::LogStatus(status, id));
    if (absl::IsAborted(status) || absl::IsUnavailable(status)) {
      return absl::Status(status.code(), absl::StrCat("could not restore session ", id,
                                                      " from the shared Redis tier: ",
                                                      status.message(), "; retry"));
    }
    return absl::DataLossError(absl::StrCat("the shared Redis tier's state of session ", id,
                                            " is unusable: ", status.message()));
  }
  absl::StatusOr<std::string> bytes = dir_->Read(id);
  if (!bytes.ok()) {
    // The file's errors name server paths: they go to the log, not to the client.
    spdlog::error("reading the snapshot of session {}: {}", base::LogSessionId(id), base::LogStatus(bytes.status(), id));
    return absl::DataLossError(
        absl::IsNotFound(bytes.status())
            ? absl::StrCat("the stored state of session ", id,
                           " is gone (it was found corrupt and quarantined, or removed)")
            : absl::StrCat("the stored state of session ", id, " could not be read"));
  }
  absl::Status status;
  absl::StatusOr<SnapshotMeta> meta =
      DecodeSnapshotInto(*bytes, fingerprint_, model_->state_layout(), state);
  if (!meta.ok()) {
    status = meta.status();
  } else if (meta->session_id != id) {
    status = absl::DataLossError(absl::StrCat("the snapshot holds session ", meta->session_id));
  } else if (meta->version != version) {
    // A newer write replaced the file meanwhile: not corruption, nothing to quarantine.
    return absl::AbortedError(absl::StrCat("session ", id, " changed while it was read (version ",
                                           meta->version, ", expected ", version, "); retry"));
  }
  if (status.ok()) return status;
  if (absl::IsDataLoss(status) || absl::IsFailedPrecondition(status)) {
    spdlog::warn("quarantining the snapshot of session {}: {}", base::LogSessionId(id), base::LogStatus(status, id));
    (void)dir_->Quarantine(id, SnapshotErrorReason(status), status.ToString());
  }
  return absl::DataLossError(
      absl::StrCat("the stored state of session ", id, " is unusable: ", status.message()));
}

void Engine::Impl::ForkFromDisk(const std::string& src, SessionInfo info,
                                std::function<void(absl::StatusOr<SessionInfo>)> done) {
  const uint64_t version = states_[info.session_id].version;
  io_->Submit([this, src, info, version, done = std::move(done)]() mutable {
    auto state = std::make_shared<std::vector<float>>(FloatsPerSlot());
    const absl::Status status = ReadStoredState(src, version, absl::MakeSpan(*state));
    PostCompletion([this, info, state, status, done = std::move(done)]() mutable {
      auto it = states_.find(info.session_id);
      if (!status.ok() || it == states_.end()) {
        {
          absl::MutexLock lock(&mu_);
          sessions_.erase(info.session_id);
          last_active_.erase(info.session_id);
        }
        DropState(info.session_id);
        return done(status.ok() ? absl::NotFoundError("the fork was deleted while it loaded")
                                : status);
      }
      SetHost(it->second, std::move(state));
      EnforceHostBudget();
      AckWhenStored(info.session_id, info, /*new_session=*/true, ExpectedVersion::Absent(),
                    std::move(done));
    });
  });
}

bool Engine::Impl::FlushToDisk(int64_t timeout_ms) {
  if (dir_ == nullptr) return true;
  absl::Notification queued;
  Command([this, &queued] {
    std::vector<std::string> ids;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [id, meta] : sessions_) {
        if (!meta.info.turn_running) ids.push_back(id);
      }
    }
    for (const std::string& id : ids) {
      states_[id];  // a zero-state session gets an entry, so it is written too
      StartWrite(id);
    }
    queued.Notify();
  });
  const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  if (!queued.WaitForNotificationWithDeadline(deadline)) return false;
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return writes_in_flight_ == 0; };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

bool Engine::Impl::Durable(const SessionState& st) { return st.disk_gen == st.gen; }

void Engine::Impl::SetHost(SessionState& st, std::shared_ptr<const std::vector<float>> host) {
  if (st.host) {
    host_bytes_ -= state_bytes_;
    host_sessions_.fetch_sub(1, std::memory_order_relaxed);
  }
  st.host = std::move(host);
  if (st.host) st.nonzero = true;
  if (st.host) {
    host_bytes_ += state_bytes_;
    host_sessions_.fetch_add(1, std::memory_order_relaxed);
  }
}

// Host copies over the budget leave RAM: a durable one is dropped (its snapshot is on
// disk); another is written to disk first and dropped when that completes.
void Engine::Impl::EnforceHostBudget() {
  if (host_bytes_ <= options_.host_state_bytes) return;
  // Checkpoints are a convenience: they go first, least recently used sessions' first.
  std::vector<std::pair<uint64_t, std::string>> with_checkpoints;
  for (auto& [id, st] : states_) {
    if (!st.checkpoints.empty()) with_checkpoints.emplace_back(st.last_used, id);
  }
  std::sort(with_checkpoints.begin(), with_checkpoints.end());
  for (const auto& [used, id] : with_checkpoints) {
    SessionState& st = states_[id];
    while (!st.checkpoints.empty() && host_bytes_ > options_.host_state_bytes) {
      st.checkpoints.pop_front();
      host_bytes_ -= state_bytes_;
    }
    if (host_bytes_ <= options_.host_state_bytes) return;
  }
  std::vector<std::pair<uint64_t, std::string>> lru;
  for (auto& [id, st] : states_) {
    if (st.host) lru.emplace_back(st.last_used, id);
  }
  std::sort(lru.begin(), lru.end());
  for (const auto& [used, id] : lru) {
    if (host_bytes_ <= options_.host_state_bytes) break;
    SessionState& st = states_[id];
    if (Durable(st) || InRedis(st)) {
      SetHost(st, nullptr);
      ++spills_to_disk_;
      if (options_.observer != nullptr) {  // metrics hook
        options_.observer->OnEviction(EvictionReason::kHostBudget);
        options_.observer->OnSpill(Durable(st) ? StateTier::kDisk : StateTier::kRedis);
      }
    } else if (dir_ != nullptr) {
      StartWrite(id);
    }
  }
}

// A free slot, evicting the least recently used resident committed state if needed: to
// nothing when its snapshot is on disk, else to host RAM within the budget. -1 when no
// slot can be freed until a spill write completes (the caller retries later).
int32_t Engine::Impl::TakeSlot() {
  if (free_slots_.empty()) {
    std::string victim;
    uint64_t oldest = std::numeric_limits<uint64_t>::max();
    for (auto& [id, st] : states_) {
      if (st.slot >= 0 && st.last_used < oldest) {
        oldest = st.last_used;
        victim = id;
      }
    }
    // Admission keeps running turns below the slot count, so a committed one exists.
    XLSTMD_CHECK(!victim.empty());
    SessionState& st = states_[victim];
    if (!Durable(st) && !InRedis(st)) {
      if (host_bytes_ + state_bytes_ > options_.host_state_bytes) EnforceHostBudget();
      if (host_bytes_ + state_bytes_ > options_.host_state_bytes) {
        if (dir_ != nullptr) StartWrite(victim);
        return -1;
      }
      auto copy = std::make_shared<std::vector<float>>(FloatsPerSlot());
      model_->ReadSlot(st.slot, copy->data());
      SetHost(st, std::move(copy));
    }
    free_slots_.push_back(st.slot);
    st.slot = -1;
    AdjustResident(-1);
    if (options_.observer != nullptr) {  // metrics hook
      options_.observer->OnEviction(EvictionReason::kSlotPressure);
      options_.observer->OnSpill(st.host       ? StateTier::kHost
                                 : Durable(st) ? StateTier::kDisk
                                               : StateTier::kRedis);
    }
  }
  const int32_t slot = free_slots_.back();
  free_slots_.pop_back();
  return slot;
}

void Engine::Impl::FreeSlot(int32_t slot) {
  if (slot >= 0) free_slots_.push_back(slot);
}

void Engine::Impl::DropState(const std::string& id) {
  auto it = states_.find(id);
  if (it == states_.end()) return;
  if (it->second.slot >= 0) {
    FreeSlot(it->second.slot);
    AdjustResident(-1);
  }
  SetHost(it->second, nullptr);
  host_bytes_ -= state_bytes_ * static_cast<int64_t>(it->second.checkpoints.size());
  const bool on_disk = it->second.disk_version >= 0 || it->second.write_in_flight;
  states_.erase(it);
  NotifyDurable(id, absl::OkStatus());
  // A write still in flight re-creates the file; its completion removes it again.
  if (dir_ != nullptr && on_disk) {
    io_->Submit([this, id] {
      absl::Status s = dir_->Remove(id);
      if (!s.ok() && !absl::IsNotFound(s)) {
        spdlog::warn("could not remove the snapshot of deleted session {}: {}", base::LogSessionId(id), base::LogStatus(s, id));
      }
    });
  }
}

void Engine::Impl::AdjustResident(int32_t delta) {
  absl::MutexLock lock(&mu_);
  resident_sessions_ += delta;
}

// The session's snapshot metadata as committed (or, for a sync commit, as it will be).
SnapshotMeta Engine::Impl::MetaLocked(const SessionMeta& m) const {
  SnapshotMeta out;
  out.session_id = m.info.session_id;
  out.owner = m.info.owner;
  out.version = m.info.version;
  out.token_count = m.info.token_count;
  out.created_unix_ms = m.info.created_unix_ms;
  out.updated_unix_ms = m.info.updated_unix_ms;
  out.flags =
      (m.session_start_done ? kFlagSessionStartDone : 0) | (m.reply_open ? kFlagReplyOpen : 0);
  for (const std::string& r : m.request_order) {
    out.recent_requests.push_back({r, m.request_versions.at(r)});
  }
  return out;
}

// The committed state of `st` as host floats (a copy of the slot, the shared host copy, or
// zeros), or null when it is only on disk.
std::shared_ptr<const std::vector<float>> Engine::Impl::StateCopy(const SessionState& st) {
  if (st.slot >= 0) {
    auto copy = std::make_shared<std::vector<float>>(FloatsPerSlot());
    model_->ReadSlot(st.slot, copy->data());
    return copy;
  }
  if (st.host) return st.host;
  if (!st.nonzero) return std::make_shared<std::vector<float>>(FloatsPerSlot(), 0.0f);
  return nullptr;
}

// Writes the session's committed state to the disk tier in the background, one write per
// session at a time (a newer commit during a write is written after it).
void Engine::Impl::StartWrite(const std::string& id) {
  if (dir_ == nullptr) return;
  auto it = states_.find(id);
  if (it == states_.end()) return;
  SessionState& st = it->second;
  if (st.write_in_flight) {
    st.write_again = true;
    return;
  }
  if (Durable(st)) return;
  std::shared_ptr<const std::vector<float>> state = StateCopy(st);
  if (!state) return;  // only on disk already
  SnapshotMeta meta;
  {
    absl::MutexLock lock(&mu_);
    auto m = sessions_.find(id);
    if (m == sessions_.end()) return;
    meta = MetaLocked(m->second);
  }
  meta.version = st.version;  // the state's own version (the meta may be ahead in sync mode)
  st.write_in_flight = true;
  const uint64_t gen = st.gen;
  SubmitWrite(std::move(meta), std::move(state), [this, id, gen](uint64_t version, absl::Status s) {
    OnWriteDone(id, version, gen, std::move(s));
  });
}

// Encodes and writes on an I/O thread; `done(version, status)` runs on the engine thread.
void Engine::Impl::SubmitWrite(SnapshotMeta meta, std::shared_ptr<const std::vector<float>> state,
                               std::function<void(uint64_t, absl::Status)> done) {
  {
    absl::MutexLock lock(&mu_);
    ++writes_in_flight_;
  }
  io_->Submit([this, meta = std::move(meta), state = std::move(state), done = std::move(done)] {
    absl::Status status;
    absl::StatusOr<SnapshotParts> parts =
        EncodeSnapshotParts(meta, fingerprint_, model_->state_layout(), absl::MakeSpan(*state));
    if (!parts.ok()) {
      status = parts.status();
    } else {
      const std::string_view payload(reinterpret_cast<const char*>(parts->payload.data()),
                                     parts->payload.size() * sizeof(float));
      const std::string_view pieces[] = {parts->head, payload, parts->tail};
      status = dir_->Write(meta.session_id, pieces);
    }
    const uint64_t version = meta.version;
    PostCompletion([this, done, version, status] {
      // First the follow-ups (a newer version's write), then the count: FlushToDisk waits
      // for zero and must not see it between a write and its successor.
      {
        absl::MutexLock lock(&mu_);
        if (status.ok()) {
          ++snapshot_writes_;
        } else {
          ++snapshot_write_failures_;
        }
      }
      done(version, status);
      absl::MutexLock lock(&mu_);
      --writes_in_flight_;
    });
  });
}

void Engine::Impl::OnWriteDone(const std::string& id, uint64_t version, uint64_t gen,
                               absl::Status status) {
  auto it = states_.find(id);
  if (it == states_.end()) {
    // Deleted while writing: the write just re-created the file.
    if (status.ok()) {
      io_->Submit([this, id] { (void)dir_->Remove(id); });
    }
    NotifyDurable(id, status);
    return;
  }
  SessionState& st = it->second;
  st.write_in_flight = false;
  if (status.ok()) {
    st.disk_version = static_cast<int64_t>(version);
    st.disk_gen = gen;
  } else {
    // The state stays in memory; a later commit, flush or spill writes it again (a new temp
    // file: a failed fsync is never retried on the same descriptor).
    spdlog::error("snapshot write for session {} (version {}) failed: {}", base::LogSessionId(id),
                  version, base::LogStatus(status, id));
  }
  NotifyDurable(id, status);
  if (states_.count(id) == 0) return;  // a waiter dropped the session
  if (pending_sync_writes_.count(id) != 0) {
    RunPendingWrite(id);  // a sync commit waited behind this write; it supersedes it
  } else if (st.write_again) {
    st.write_again = false;
    StartWrite(id);
  }
  EnforceHostBudget();
}

// Reads the snapshot on an I/O thread; the turn continues when it is in the slot.
void Engine::Impl::WhenDurable(const std::string& id, std::function<void(absl::Status)> done) {
  auto it = states_.find(id);
  if (it == states_.end()) return done(absl::NotFoundError("the session was deleted"));
  if (dir_ == nullptr) return done(absl::FailedPreconditionError("no disk tier"));
  if (Durable(it->second)) return done(absl::OkStatus());
  durable_waiters_[id].push_back({it->second.gen, std::move(done)});
  StartWrite(id);
}

void Engine::Impl::NotifyDurable(const std::string& id, const absl::Status& write_status) {
  auto w = durable_waiters_.find(id);
  if (w == durable_waiters_.end()) return;
  auto it = states_.find(id);
  std::vector<std::pair<std::function<void(absl::Status)>, absl::Status>> ready;
  std::vector<DurableWaiter> waiting;
  for (DurableWaiter& d : w->second) {
    if (it == states_.end()) {
      ready.emplace_back(std::move(d.done), absl::NotFoundError("the session was deleted"));
    } else if (!write_status.ok()) {
      ready.emplace_back(std::move(d.done), write_status);
    } else if (it->second.disk_gen >= d.gen) {
      ready.emplace_back(std::move(d.done), absl::OkStatus());
    } else {
      waiting.push_back(std::move(d));
    }
  }
  if (waiting.empty()) {
    durable_waiters_.erase(w);
  } else {
    w->second = std::move(waiting);
  }
  // Called after the map is consistent: a callback may delete the session (DropState).
  for (auto& [done, status] : ready) done(status);
}

void Engine::Impl::AckWhenDurable(const std::string& id, SessionInfo info, bool new_session,
                                  std::function<void(absl::StatusOr<SessionInfo>)> done) {
  if (dir_ == nullptr || options_.durability == EngineOptions::Durability::kNone) {
    return done(info);
  }
  bool exists;
  {
    absl::MutexLock lock(&mu_);
    exists = sessions_.count(id) != 0;
  }
  if (!exists) return done(SessionNotFound(id));  // deleted while it was stored elsewhere
  states_[id];  // a zero-state session gets an entry, so that it is written too
  if (options_.durability == EngineOptions::Durability::kAsync) {
    StartWrite(id);
    return done(info);
  }
  WhenDurable(id, [this, id, info, new_session, done = std::move(done)](absl::Status s) {
    if (s.ok()) return done(info);
    if (new_session && !absl::IsNotFound(s)) {
      {
        absl::MutexLock lock(&mu_);
        if (auto m = sessions_.find(id); m != sessions_.end()) ForgetSessionLocked(m->second);
        sessions_.erase(id);
        last_active_.erase(id);
      }
      DropState(id);
      // A copy Redis already took would otherwise outlive the refused session.
      if (redis_ != nullptr) io_->Submit([this, id] { (void)DeleteShared(id); });
    }
    spdlog::error("session {} could not be made durable: {}", base::LogSessionId(id), base::LogStatus(s, id));
    done(absl::UnavailableError(absl::StrCat(
        "session ", id, " could not be written to the disk tier (the server log has the error)")));
  });
}

void Engine::Impl::StartRestore(Turn& t, bool from_redis) {
  const uint64_t seq = t.seq;
  const std::string id = t.session_id;
  const uint64_t version = t.base_version;
  io_->Submit([this, seq, id, version, from_redis] {
    const auto start = SteadyClock::now();
    auto state = std::make_shared<std::vector<float>>(FloatsPerSlot());
    const absl::Status status = ReadStoredState(id, version, absl::MakeSpan(*state), from_redis);
    const double ms = MsBetween(start, SteadyClock::now());
    PostCompletion([this, seq, state, status, ms, from_redis] {
      OnRestored(seq, state, status, ms, from_redis);
    });
  });
}

void Engine::Impl::OnRestored(uint64_t seq, std::shared_ptr<std::vector<float>> state,
                              absl::Status status, double ms, bool from_redis) {
  Turn* t = FindActive(seq);
  if (t == nullptr || t->phase != Turn::Phase::kRestoring) return;  // cancelled meanwhile
  if (!status.ok()) {
    FailTurns({t}, status);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    ++(from_redis ? restores_from_redis_ : restores_from_disk_);
    restore_ms_total_ += ms;
  }
  if (options_.observer != nullptr) {  // metrics hook
    options_.observer->OnRestore(from_redis ? StateTier::kRedis : StateTier::kDisk, ms / 1000);
  }
  model_->WriteSlot(t->slot, state->data());
  BeginRunning(*t);
}

void Engine::Impl::RunPendingWrite(const std::string& id) {
  auto p = pending_sync_writes_.find(id);
  if (p == pending_sync_writes_.end()) {
    auto it = states_.find(id);
    if (it != states_.end() && it->second.write_again) {
      it->second.write_again = false;
      StartWrite(id);
    }
    return;
  }
  auto write = std::move(p->second);
  pending_sync_writes_.erase(p);
  states_[id].write_in_flight = true;
  write();
}

}  // namespace xlstmd::core
