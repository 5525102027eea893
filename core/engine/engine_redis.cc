// The shared Redis tier (docs/redis-tier.md): adoption of sessions other daemons wrote,
// compare-and-set commits, deletes. Redis calls block, so they run on the caller's thread
// (lookups before an operation) or on the I/O pool (writes), never on the engine thread.
#include "core/engine/engine_impl.h"

namespace xlstmd::core {

absl::Status Engine::Impl::ConnectRedis() {
  RedisStore::Options ropts;
  ropts.key_prefix = RedisStore::KeyPrefixFor(fingerprint_.Id());
  ropts.pool.connect_timeout_ms = options_.redis_timeout_ms;
  ropts.pool.io_timeout_ms = options_.redis_timeout_ms;
  ropts.pool.max_connections = std::max(1, options_.redis_connections);
  ropts.max_snapshot_bytes = snapshot_bytes_;
  // Redis forgets a session idle past the TTL by itself; every write restarts the clock.
  ropts.idle_ttl_ms = options_.idle_ttl_ms;
  absl::StatusOr<std::unique_ptr<RedisStore>> store =
      RedisStore::Connect(options_.redis_url, std::move(ropts));
  if (!store.ok()) return store.status();
  redis_ = *std::move(store);
  spdlog::info("shared Redis tier at {} (keys {}*)", redis_->address(), redis_->key_prefix());
  return absl::OkStatus();
}

absl::Status Engine::Impl::RefreshFromRedis(const std::string& owner, const std::string& id) {
  if (redis_ == nullptr || !RedisStore::IsValidSessionId(id)) return absl::OkStatus();
  bool known = false;
  std::string local_generation;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(id);
    if (it != sessions_.end()) {
      // Another tenant's or busy: the operation's own checks answer (NOT_FOUND, ABORTED).
      if (it->second.info.owner != owner || it->second.info.turn_running) {
        return absl::OkStatus();
      }
      known = true;
      local_generation = it->second.redis_generation;
    }
  }
  absl::StatusOr<RedisManifest> manifest = redis_->GetManifest(id);
  if (!manifest.ok()) {
    if (absl::IsNotFound(manifest.status())) {
      if (known && !local_generation.empty()) {
        // Redis held it and no longer does: deleted by another daemon, or expired.
        absl::MutexLock lock(&mu_);
        auto it = sessions_.find(id);
        if (it != sessions_.end() && !it->second.info.turn_running &&
            it->second.redis_generation == local_generation) {
          ForgetSessionLocked(it->second);
          sessions_.erase(it);
          last_active_.erase(id);
          commands_.push_back([this, id] { DropState(id); });
          signal_->Notify();
        }
      }
      return absl::OkStatus();  // unknown everywhere: the operation answers NOT_FOUND
    }
    spdlog::warn("Redis lookup of session {} failed: {}", id, manifest.status().ToString());
    if (known) return absl::OkStatus();  // go on with the local state; a commit re-checks
    return absl::UnavailableError(absl::StrCat(
        "the shared Redis tier could not be reached to look up session ", id, "; retry"));
  }
  if (manifest->owner != owner) return absl::OkStatus();  // another tenant's: NOT_FOUND
  if (known && manifest->generation == local_generation) return absl::OkStatus();

  absl::StatusOr<RedisSnapshot> snap = redis_->Get(id);
  if (!snap.ok()) {
    if (absl::IsNotFound(snap.status())) return absl::OkStatus();  // deleted meanwhile
    spdlog::error("Redis read of session {} failed: {}", id, snap.status().ToString());
    return absl::Status(snap.status().code(),
                        absl::StrCat("could not read session ", id,
                                     " from the shared Redis tier: ", snap.status().message()));
  }
  auto state = std::make_shared<std::vector<float>>(FloatsPerSlot());
  absl::StatusOr<SnapshotMeta> meta =
      DecodeSnapshotInto(snap->bytes, fingerprint_, model_->state_layout(), absl::MakeSpan(*state));
  if (meta.ok() && (meta->session_id != id || meta->version != snap->manifest.version)) {
    meta = absl::DataLossError(
        absl::StrCat("it holds session ", meta->session_id, " version ", meta->version));
  }
  if (!meta.ok()) {
    spdlog::error("Redis snapshot of session {} is unusable: {}", id, meta.status().ToString());
    return absl::DataLossError(absl::StrCat("the shared Redis tier's state of session ", id,
                                            " is unusable: ", meta.status().message()));
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(id);
    if (it != sessions_.end() && (it->second.info.owner != owner || it->second.info.turn_running)) {
      return absl::OkStatus();  // raced with another call; its checks answer
    }
    if (it == sessions_.end()) {
      if (absl::Status s = CanAddSessionLocked(); !s.ok()) return s;
      it = sessions_.emplace(id, SessionMeta{}).first;
      it->second.info.session_id = id;
      it->second.info.owner = owner;
      it->second.info.created_unix_ms = meta->created_unix_ms;
    }
    SessionMeta& m = it->second;
    m.info.version = meta->version;
    m.info.token_count = meta->token_count;
    m.info.updated_unix_ms = meta->updated_unix_ms;
    m.session_start_done = (meta->flags & kFlagSessionStartDone) != 0;
    m.reply_open = (meta->flags & kFlagReplyOpen) != 0;
    m.request_order.clear();
    m.request_versions.clear();
    for (const CommittedRequest& r : meta->recent_requests) {
      m.request_order.push_back(r.request_id);
      m.request_versions[r.request_id] = r.version;
    }
    SetRedisGenerationLocked(m, snap->manifest.generation);
    last_active_[id] = SteadyClock::now();
    // Commands run before the next admission, so a turn queued after this sees the state.
    commands_.push_back([this, id, version = meta->version, generation = snap->manifest.generation,
                         state]() mutable {
      InstallAdopted(id, version, std::move(generation), std::move(state));
    });
  }
  signal_->Notify();
  return absl::OkStatus();
}

void Engine::Impl::InstallAdopted(const std::string& id, uint64_t version, std::string generation,
                                  std::shared_ptr<const std::vector<float>> state) {
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(id);
    // Deleted, or adopted again since (a newer command follows): nothing to install.
    if (it == sessions_.end() || it->second.redis_generation != generation) return;
    ++restores_from_redis_;
  }
  SessionState& st = states_[id];
  if (st.slot >= 0) {
    FreeSlot(st.slot);
    st.slot = -1;
    AdjustResident(-1);
  }
  host_bytes_ -= state_bytes_ * static_cast<int64_t>(st.checkpoints.size());
  st.checkpoints.clear();  // versions of the history another daemon replaced
  SetHost(st, std::move(state));
  st.version = version;
  ++st.gen;
  st.redis_gen = st.gen;
  st.last_used = ++tick_;
  if (dir_ != nullptr && options_.durability != EngineOptions::Durability::kNone) {
    StartWrite(id);
  }
  EnforceHostBudget();
}

void Engine::Impl::AckWhenStored(const std::string& id, SessionInfo info, bool new_session,
                                 ExpectedVersion expected,
                                 std::function<void(absl::StatusOr<SessionInfo>)> done) {
  if (redis_ == nullptr) return AckWhenDurable(id, info, new_session, std::move(done));
  SessionState& st = states_[id];
  std::shared_ptr<const std::vector<float>> state = StateCopy(st);
  SnapshotMeta meta;
  {
    absl::MutexLock lock(&mu_);
    auto m = sessions_.find(id);
    if (m == sessions_.end()) return done(absl::NotFoundError("the session was deleted"));
    meta = MetaLocked(m->second);
  }
  if (!state) {
    // Only on disk (a fork or rewind right after a spill): store what the file holds.
    auto loaded = std::make_shared<std::vector<float>>(FloatsPerSlot());
    if (absl::Status s = ReadStoredState(id, st.version, absl::MakeSpan(*loaded)); !s.ok()) {
      return done(s);
    }
    state = std::move(loaded);
  }
  meta.version = st.version;
  const uint64_t gen = st.gen;
  io_->Submit([this, id, info, new_session, expected, meta = std::move(meta), state, gen,
               done = std::move(done)]() mutable {
    absl::StatusOr<RedisManifest> written = absl::InternalError("not written");
    absl::StatusOr<SnapshotParts> parts =
        EncodeSnapshotParts(meta, fingerprint_, model_->state_layout(), absl::MakeSpan(*state));
    if (!parts.ok()) {
      written = parts.status();
    } else {
      const std::string_view payload(reinterpret_cast<const char*>(parts->payload.data()),
                                     parts->payload.size() * sizeof(float));
      const std::string_view pieces[] = {parts->head, payload, parts->tail};
      RedisPutRequest req;
      req.session_id = id;
      req.expected = expected;
      req.new_version = meta.version;
      req.owner = meta.owner;
      req.updated_unix_ms = meta.updated_unix_ms;
      written = redis_->Put(req, pieces);
    }
    PostCompletion([this, id, info, new_session, gen, written = std::move(written),
                    done = std::move(done)]() mutable {
      if (!written.ok()) {
        spdlog::error("Redis write of session {} failed: {}", id, written.status().ToString());
        if (new_session) {
          {
            absl::MutexLock lock(&mu_);
            sessions_.erase(id);
            last_active_.erase(id);
          }
          DropState(id);
        }
        const absl::StatusCode code = absl::IsAborted(written.status())
                                          ? absl::StatusCode::kAborted
                                          : absl::StatusCode::kUnavailable;
        return done(absl::Status(code, absl::StrCat("session ", id,
                                                    " could not be stored in the shared Redis "
                                                    "tier: ",
                                                    written.status().message())));
      }
      {
        absl::MutexLock lock(&mu_);
        auto m = sessions_.find(id);
        if (m != sessions_.end()) SetRedisGenerationLocked(m->second, written->generation);
      }
      auto it = states_.find(id);
      if (it != states_.end() && it->second.gen == gen) it->second.redis_gen = gen;
      AckWhenDurable(id, info, new_session, std::move(done));
    });
  });
}

void Engine::Impl::StartSharedCommit(Turn& t) {
  SnapshotMeta meta;
  ExpectedVersion expected = ExpectedVersion::Absent();
  {
    absl::MutexLock lock(&mu_);
    SessionMeta* m = FindLocked(t.owner, t.session_id);
    if (m == nullptr) {
      RollBack(t, absl::InternalError("session vanished during its turn"));
      RemoveActive(&t);
      return;
    }
    meta = MetaLocked(*m);
    expected = RedisExpectedLocked(*m);
  }
  ApplyCommitToMeta(t, &meta);
  auto state = std::make_shared<std::vector<float>>(FloatsPerSlot());
  model_->ReadSlot(t.slot, state->data());
  t.phase = Turn::Phase::kPersisting;
  const uint64_t seq = t.seq;
  io_->Submit([this, seq, expected, meta = std::move(meta), state] {
    absl::StatusOr<RedisManifest> written = absl::InternalError("not written");
    absl::StatusOr<SnapshotParts> parts =
        EncodeSnapshotParts(meta, fingerprint_, model_->state_layout(), absl::MakeSpan(*state));
    if (!parts.ok()) {
      written = parts.status();
    } else {
      const std::string_view payload(reinterpret_cast<const char*>(parts->payload.data()),
                                     parts->payload.size() * sizeof(float));
      const std::string_view pieces[] = {parts->head, payload, parts->tail};
      RedisPutRequest req;
      req.session_id = meta.session_id;
      req.expected = expected;
      req.new_version = meta.version;
      req.owner = meta.owner;
      req.updated_unix_ms = meta.updated_unix_ms;
      written = redis_->Put(req, pieces);
    }
    PostCompletion([this, seq, written = std::move(written)]() mutable {
      OnSharedCommit(seq, std::move(written));
    });
  });
}

void Engine::Impl::OnSharedCommit(uint64_t seq, absl::StatusOr<RedisManifest> written) {
  Turn* t = FindActive(seq);
  XLSTMD_CHECK(t != nullptr);  // persisting turns are never dropped
  if (!written.ok()) {
    absl::Status reason;
    if (absl::IsAborted(written.status())) {
      reason = absl::AbortedError(
          absl::StrCat("session ", t->session_id, " was changed by another server meanwhile (",
                       written.status().message(), "); this turn was rolled back: retry it"));
    } else {
      spdlog::error("Redis commit of session {} failed: {}", t->session_id,
                    written.status().ToString());
      reason = absl::UnavailableError(absl::StrCat(
          "the turn could not be stored in the shared Redis tier, so it was rolled back: ",
          written.status().message()));
    }
    RollBack(*t, std::move(reason));
    RemoveActive(t);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    if (SessionMeta* m = FindLocked(t->owner, t->session_id)) {
      SetRedisGenerationLocked(*m, written->generation);
    }
  }
  t->shared = true;
  Finalize(*t);  // the disk write under sync, else the commit
}

void Engine::Impl::DeleteShared(const std::string& id, std::function<void(absl::Status)> done) {
  io_->Submit([this, id, done = std::move(done)] {
    absl::Status s = redis_->Delete(id, ExpectedVersion::Any());
    if (s.ok() || absl::IsNotFound(s)) return done(absl::OkStatus());
    spdlog::error("Redis delete of session {} failed: {}", id, s.ToString());
    done(absl::UnavailableError(
        absl::StrCat("session ", id,
                     " was deleted on this server but the shared Redis tier could not be "
                     "reached (",
                     s.message(), "); retry the delete")));
  });
}

}  // namespace xlstmd::core
