// The disk tier: indexing the state dir at startup, snapshot writes (one per session at a
// time), restores, and the durability waits behind the sync mode.
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/check.h"
#include "core/base/log_id.h"
#include "core/base/status_macros.h"
#include "core/engine/state_tiers.h"
#include "spdlog/spdlog.h"

namespace xlstmd::core {

absl::Status StateTiers::IndexStateDir() {
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
    index_->Register(SessionMeta::FromSnapshot(*meta));
    Entry& st = states_[meta->session_id];
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

// Reads only as much of the file as the header needs.
absl::StatusOr<SnapshotMeta> StateTiers::ReadSnapshotHead(const std::string& id,
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
        DecodeSnapshotHead(prefix, codec_.fingerprint, *codec_.layout);
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
    const bool more = head.status().code() == absl::StatusCode::kOutOfRange;
    if (!more || !in || want >= codec_.snapshot_bytes) {
      if (more) {
        return absl::DataLossError(
            absl::StrCat("snapshot of ", id, " is truncated: ", head.status().message()));
      }
      return head.status();
    }
    want = std::min<size_t>(want * 4, codec_.snapshot_bytes);
  }
}

absl::Status StateTiers::ReadStoredState(const std::string& id, uint64_t version,
                                         absl::Span<float> state, bool from_redis) {
  if (dir_ == nullptr && redis_ == nullptr) {
    return absl::DataLossError(
        absl::StrCat("the committed state of session ", id, " is in no tier"));
  }
  // Without a disk tier a state that left RAM can only be in Redis.
  if (from_redis || dir_ == nullptr) return ReadFromRedis(id, version, state);
  absl::StatusOr<std::string> bytes = dir_->Read(id);
  if (!bytes.ok()) {
    // The file's errors name server paths: they go to the log, not to the client.
    spdlog::error("reading the snapshot of session {}: {}", base::LogSessionId(id),
                  base::LogStatus(bytes.status(), id));
    return absl::DataLossError(
        absl::IsNotFound(bytes.status())
            ? absl::StrCat("the stored state of session ", id,
                           " is gone (it was found corrupt and quarantined, or removed)")
            : absl::StrCat("the stored state of session ", id, " could not be read"));
  }
  absl::Status status;
  absl::StatusOr<SnapshotMeta> meta =
      DecodeSnapshotInto(*bytes, codec_.fingerprint, *codec_.layout, state);
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
    spdlog::warn("quarantining the snapshot of session {}: {}", base::LogSessionId(id),
                 base::LogStatus(status, id));
    (void)dir_->Quarantine(id, SnapshotErrorReason(status), status.ToString());
  }
  return absl::DataLossError(
      absl::StrCat("the stored state of session ", id, " is unusable: ", status.message()));
}

void StateTiers::StartRestore(const std::string& id, uint64_t version, int32_t slot,
                              bool from_redis, std::function<bool()> wanted,
                              StatusDone done) {
  io_->Submit([this, id, version, slot, from_redis, wanted = std::move(wanted),
               done = std::move(done)]() mutable {
    const auto start = clock_->Now();
    MutableHostState state = host_pool_->Acquire(/*zero=*/true);
    const absl::Status status = ReadStoredState(id, version, state->span(), from_redis);
    const double seconds = MsBetween(start, clock_->Now()) / 1000;
    post_([this, slot, state, status, seconds, from_redis, wanted = std::move(wanted),
           done = std::move(done)] {
      if (!wanted()) return;  // cancelled meanwhile: the slot is no longer the turn's
      if (!status.ok()) return done(status);
      ++(from_redis ? restores_from_redis_ : restores_from_disk_);
      if (options_.observer != nullptr) {  // metrics hook
        options_.observer->OnRestore(from_redis ? StateTier::kRedis : StateTier::kDisk, seconds);
      }
      slots_->WriteAsync(slot, state);
      done(absl::OkStatus());
    });
  });
}

void StateTiers::StartWrite(const std::string& id) {
  if (dir_ == nullptr) return;
  auto it = states_.find(id);
  if (it == states_.end()) return;
  Entry& st = it->second;
  if (st.write_in_flight) {
    st.write_again = true;
    return;
  }
  if (Durable(st)) return;
  HostState state = StateCopy(id, st);
  if (!state) return;  // only on disk already
  std::optional<SnapshotMeta> meta = index_->Snapshot(id);
  if (!meta.has_value()) return;
  meta->version = st.version;  // the state's own version (the index may be ahead under sync)
  st.write_in_flight = true;
  const uint64_t gen = st.gen;
  SubmitWrite(*std::move(meta), std::move(state),
              [this, id, gen](uint64_t version, absl::Status s, uint64_t) {
                OnWriteDone(id, version, gen, std::move(s));
              });
}

void StateTiers::SubmitWrite(SnapshotMeta meta, HostState state,
                             std::function<void(uint64_t, absl::Status, uint64_t)> done) {
  {
    absl::MutexLock lock(&writes_mu_);
    ++writes_in_flight_;
  }
  io_->Submit([this, meta = std::move(meta), state = std::move(state), done = std::move(done)] {
    absl::Status status = state->copy_status();  // a failed device copy is never written
    absl::StatusOr<SnapshotParts> parts =
        status.ok() ? EncodeSnapshotParts(meta, codec_.fingerprint, *codec_.layout, state->span())
                    : status;
    uint64_t digest = 0;
    if (!parts.ok()) {
      status = parts.status();
    } else {
      const std::string_view payload(reinterpret_cast<const char*>(parts->payload.data()),
                                     parts->payload.size() * sizeof(float));
      const std::string_view pieces[] = {parts->head, payload, parts->tail};
      status = dir_->Write(meta.session_id, pieces);
      if (status.ok() && parts->tail.size() >= sizeof(digest)) {
        std::memcpy(&digest, parts->tail.data() + parts->tail.size() - sizeof(digest),
                    sizeof(digest));  // the footer's last field, little-endian like the host
      }
    }
    const uint64_t version = meta.version;
    post_([this, done, version, status, digest] {
      ++(status.ok() ? snapshot_writes_ : snapshot_write_failures_);
      // First the follow-ups (a newer version's write), then the count: WaitWritesDone waits
      // for zero and must not see it between a write and its successor.
      done(version, status, digest);
      absl::MutexLock lock(&writes_mu_);
      --writes_in_flight_;
    });
  });
}

void StateTiers::OnWriteDone(const std::string& id, uint64_t version, uint64_t gen,
                             absl::Status status) {
  auto it = states_.find(id);
  if (it == states_.end()) {
    if (status.ok()) RemoveFile(id);  // deleted while writing: the write re-created the file
    NotifyDurable(id, status);
    return;
  }
  Entry& st = it->second;
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
  RunPendingWrite(id);
  EnforceHostBudget();
}

// A sync commit that waited behind a write runs now; else a write asked for meanwhile.
void StateTiers::RunPendingWrite(const std::string& id) {
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

void StateTiers::PersistBeforeCommit(const std::string& id, SnapshotMeta meta, HostState state,
                                     DigestDone done) {
  auto write = [this, id, meta = std::move(meta), state, done = std::move(done)]() mutable {
    SubmitWrite(std::move(meta), std::move(state),
                [this, id, done = std::move(done)](uint64_t version, absl::Status s,
                                                   uint64_t digest) {
                  auto it = states_.find(id);
                  if (it != states_.end()) it->second.write_in_flight = false;
                  // On success the caller installs the commit (a new generation).
                  done(s.ok() ? absl::StatusOr<uint64_t>(digest) : absl::StatusOr<uint64_t>(s));
                  it = states_.find(id);
                  if (s.ok() && it != states_.end()) {
                    it->second.disk_version = static_cast<int64_t>(version);
                    it->second.disk_gen = it->second.gen;  // the file holds exactly that state
                    NotifyDurable(id, absl::OkStatus());
                  }
                  if (states_.count(id) != 0) RunPendingWrite(id);
                });
  };
  // An async write of an older version may still be running for this session; the sync
  // write waits behind it so the file only ever moves forward.
  Entry& st = states_[id];
  if (st.write_in_flight) {
    pending_sync_writes_[id] = std::move(write);
  } else {
    st.write_in_flight = true;
    write();
  }
}

void StateTiers::WhenDurable(const std::string& id, StatusDone done) {
  auto it = states_.find(id);
  if (it == states_.end()) return done(absl::NotFoundError("the session was deleted"));
  if (dir_ == nullptr) return done(absl::FailedPreconditionError("no disk tier"));
  if (Durable(it->second)) return done(absl::OkStatus());
  durable_waiters_[id].push_back({it->second.gen, std::move(done)});
  StartWrite(id);
}

void StateTiers::NotifyDurable(const std::string& id, const absl::Status& write_status) {
  auto w = durable_waiters_.find(id);
  if (w == durable_waiters_.end()) return;
  auto it = states_.find(id);
  std::vector<std::pair<StatusDone, absl::Status>> ready;
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
  // Called after the map is consistent: a callback may delete the session (Drop).
  for (auto& [done, status] : ready) done(status);
}

void StateTiers::AckWhenDurable(const std::string& id, SessionInfo info, bool new_session,
                                InfoDone done) {
  if (dir_ == nullptr || options_.durability == Durability::kNone) return done(info);
  if (!index_->Contains(id)) return done(SessionNotFound(id));  // deleted meanwhile
  states_[id];  // a zero-state session gets an entry, so that it is written too
  if (options_.durability == Durability::kAsync) {
    StartWrite(id);
    return done(info);
  }
  WhenDurable(id, [this, id, info, new_session, done = std::move(done)](absl::Status s) {
    if (s.ok()) return done(info);
    if (new_session && !absl::IsNotFound(s)) {
      index_->Erase(id);
      Drop(id);
      // A copy Redis already took would otherwise outlive the refused session.
      if (redis_ != nullptr) DeleteShared(id, [](absl::Status) {});
    }
    spdlog::error("session {} could not be made durable: {}", base::LogSessionId(id),
                  base::LogStatus(s, id));
    done(absl::UnavailableError(absl::StrCat(
        "session ", id, " could not be written to the disk tier (the server log has the error)")));
  });
}

void StateTiers::RemoveFile(const std::string& id) {
  io_->Submit([this, id] {
    absl::Status s = dir_->Remove(id);
    if (!s.ok() && !absl::IsNotFound(s)) {
      spdlog::warn("could not remove the snapshot of deleted session {}: {}",
                   base::LogSessionId(id), base::LogStatus(s, id));
    }
  });
}

void StateTiers::StartFlush() {
  if (dir_ == nullptr) return;
  for (const std::string& id : index_->IdleIds()) {
    states_[id];  // a zero-state session gets an entry, so it is written too
    StartWrite(id);
  }
}

int64_t StateTiers::WritesInFlight() {
  absl::MutexLock lock(&writes_mu_);
  return writes_in_flight_;
}

bool StateTiers::WaitWritesDone(absl::Time deadline) {
  absl::MutexLock lock(&writes_mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(writes_mu_) { return writes_in_flight_ == 0; };
  return writes_mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

}  // namespace xlstmd::core
