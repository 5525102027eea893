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

absl::Status Engine::Impl::RunOnEngine(std::function<absl::Status()> fn) {
  struct Shared {
    absl::Notification done;
    absl::Status status;
  };
  auto shared = std::make_shared<Shared>();
  Command([fn = std::move(fn), shared] {
    shared->status = fn();
    shared->done.Notify();
  });
  if (!shared->done.WaitForNotificationWithTimeout(absl::Seconds(30))) {
    return absl::UnavailableError("the server is busy or shutting down; retry");
  }
  return shared->status;
}

absl::Status Engine::Impl::RedisUnavailable(const std::string& id, const absl::Status& cause) {
  // Redis errors name its address (and chunk keys): the log gets them, the client does not.
  spdlog::error("Redis call for session {} failed: {}", base::LogSessionId(id),
                base::LogStatus(cause, id));
  return absl::UnavailableError(
      absl::StrCat("the shared Redis tier could not serve session ", id, "; retry"));
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
        // Redis held it and no longer does. Changes to sessions happen on the engine thread
        // only, which the engine's two-step commands rely on.
        return RunOnEngine([this, id, local_generation] {
          ForgetMissingFromRedis(id, local_generation);
          return absl::OkStatus();
        });
      }
      return absl::OkStatus();  // unknown everywhere: the operation answers NOT_FOUND
    }
    if (known) {
      spdlog::warn("Redis lookup of session {} failed: {}", base::LogSessionId(id),
                   base::LogStatus(manifest.status(), id));
      return absl::OkStatus();  // go on with the local state; a commit re-checks
    }
    return RedisUnavailable(id, manifest.status());
  }
  if (manifest->owner != owner) return absl::OkStatus();  // another tenant's: NOT_FOUND
  if (known && manifest->generation == local_generation) return absl::OkStatus();

  absl::StatusOr<RedisSnapshot> snap = redis_->Get(id);
  if (!snap.ok()) {
    if (absl::IsNotFound(snap.status())) return absl::OkStatus();  // deleted meanwhile
    if (known && absl::IsDataLoss(snap.status())) {
      // An unreadable shared copy must not block the local one (nor its deletion).
      spdlog::error("Redis copy of session {} is unreadable, using the local one: {}",
                    base::LogSessionId(id), base::LogStatus(snap.status(), id));
      return absl::OkStatus();
    }
    return RedisUnavailable(id, snap.status());
  }
  auto state = std::make_shared<std::vector<float>>(FloatsPerSlot());
  absl::StatusOr<SnapshotMeta> meta =
      DecodeSnapshotInto(snap->bytes, fingerprint_, model_->state_layout(), absl::MakeSpan(*state));
  if (meta.ok() && (meta->session_id != id || meta->version != snap->manifest.version)) {
    meta = absl::DataLossError(
        absl::StrCat("it holds session ", meta->session_id, " version ", meta->version));
  }
  if (!meta.ok()) {
    spdlog::error("Redis snapshot of session {} is unusable: {}", base::LogSessionId(id),
                  base::LogStatus(meta.status(), id));
    if (known) return absl::OkStatus();
    return absl::DataLossError(
        absl::StrCat("the shared Redis tier's state of session ", id, " is unusable"));
  }
  // Metadata and state change together on the engine thread, so no command ever sees one
  // daemon's metadata with another's state.
  return RunOnEngine([this, owner, id, meta = *std::move(meta),
                      generation = snap->manifest.generation, state]() mutable {
    return InstallAdopted(owner, id, meta, std::move(generation), std::move(state));
  });
}

void Engine::Impl::ForgetMissingFromRedis(const std::string& id, const std::string& generation) {
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(id);
    if (it == sessions_.end() || it->second.info.turn_running ||
        it->second.redis_generation != generation) {
      return;  // changed meanwhile
    }
    if (dir_ != nullptr) {
      // Redis is a cache: it may have restarted or evicted the session. The disk tier holds
      // committed turns, so keep the session; its next commit stores it in Redis again.
      spdlog::warn("Redis no longer holds session {}; keeping this server's copy",
                   base::LogSessionId(id));
      ForgetSessionLocked(it->second);
      it->second.redis_generation.clear();
      return;
    }
    // Without a disk tier Redis was the store of record: deleted on another server.
    ForgetSessionLocked(it->second);
    sessions_.erase(it);
    last_active_.erase(id);
  }
  DropState(id);
}

absl::Status Engine::Impl::InstallAdopted(const std::string& owner, const std::string& id,
                                          const SnapshotMeta& meta, std::string generation,
                                          std::shared_ptr<const std::vector<float>> state) {
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(id);
    if (it != sessions_.end() && (it->second.info.owner != owner || it->second.info.turn_running ||
                                  it->second.redis_generation == generation)) {
      return absl::OkStatus();  // raced with another call; its own checks answer
    }
    if (it == sessions_.end()) {
      XLSTMD_RETURN_IF_ERROR(CanAddSessionLocked());
      it = sessions_.emplace(id, SessionMeta{}).first;
      it->second.info.session_id = id;
      it->second.info.owner = owner;
      it->second.info.created_unix_ms = meta.created_unix_ms;
    }
    SessionMeta& m = it->second;
    m.info.version = meta.version;
    m.info.token_count = meta.token_count;
    m.info.updated_unix_ms = meta.updated_unix_ms;
    m.session_start_done = (meta.flags & kFlagSessionStartDone) != 0;
    m.reply_open = (meta.flags & kFlagReplyOpen) != 0;
    m.request_order.clear();
    m.request_versions.clear();
    for (const CommittedRequest& r : meta.recent_requests) {
      m.request_order.push_back(r.request_id);
      m.request_versions[r.request_id] = r.version;
    }
    SetRedisGenerationLocked(m, std::move(generation));
    last_active_[id] = SteadyClock::now();
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
  st.version = meta.version;
  ++st.gen;
  st.redis_gen = st.gen;
  st.last_used = ++tick_;
  if (dir_ != nullptr && options_.durability != EngineOptions::Durability::kNone) {
    StartWrite(id);
  }
  EnforceHostBudget();
  return absl::OkStatus();
}

void Engine::Impl::AckWhenStored(const std::string& id, SessionInfo info, bool new_session,
                                 ExpectedVersion expected,
                                 std::function<void(absl::StatusOr<SessionInfo>)> done) {
  SnapshotMeta meta;
  bool found = false;
  {
    absl::MutexLock lock(&mu_);
    if (auto m = sessions_.find(id); m != sessions_.end()) {
      found = true;
      meta = MetaLocked(m->second);
      // Busy until acknowledged: no turn, delete or rewind can run on a session whose store
      // is in flight (a new one may already show in ListSessions).
      m->second.info.turn_running = true;
    }
  }
  if (!found) return done(SessionNotFound(id));
  // Clears the busy mark, then answers.
  auto finish = [this, id, done = std::move(done)](absl::StatusOr<SessionInfo> result) mutable {
    {
      absl::MutexLock lock(&mu_);
      if (auto m = sessions_.find(id); m != sessions_.end()) m->second.info.turn_running = false;
    }
    done(std::move(result));
  };
  if (redis_ == nullptr) return AckWhenDurable(id, info, new_session, std::move(finish));
  SessionState& st = states_[id];
  std::shared_ptr<const std::vector<float>> state = StateCopy(st);
  if (!state) {
    // Only on disk (a fork or rewind right after a spill): store what the file holds.
    auto loaded = std::make_shared<std::vector<float>>(FloatsPerSlot());
    if (absl::Status s = ReadStoredState(id, st.version, absl::MakeSpan(*loaded)); !s.ok()) {
      return finish(s);
    }
    state = std::move(loaded);
  }
  meta.version = st.version;
  const uint64_t gen = st.gen;
  io_->Submit([this, id, info, new_session, expected, meta = std::move(meta), state, gen,
               finish = std::move(finish)]() mutable {
    absl::StatusOr<RedisManifest> written = PutSnapshot(meta, expected, *state);
    PostCompletion([this, id, info, new_session, gen, written = std::move(written),
                    finish = std::move(finish)]() mutable {
      if (!written.ok()) {
        const absl::Status reason =
            absl::IsAborted(written.status())
                ? absl::AbortedError(absl::StrCat(
                      "session ", id, " was changed in the shared Redis tier meanwhile"))
                : RedisUnavailable(id, written.status());
        bool erase = false;
        {
          absl::MutexLock lock(&mu_);
          if (auto m = sessions_.find(id); m != sessions_.end()) {
            if (new_session) {
              erase = true;
              ForgetSessionLocked(m->second);
              sessions_.erase(m);
              last_active_.erase(id);
            } else {
              // The local change (a rewind) stands but Redis did not take it: a generation
              // that matches nothing makes the next operation adopt Redis' copy again.
              SetRedisGenerationLocked(m->second, "stale");
            }
          }
        }
        if (erase) DropState(id);
        return finish(reason);
      }
      {
        absl::MutexLock lock(&mu_);
        auto m = sessions_.find(id);
        if (m == sessions_.end()) return finish(SessionNotFound(id));
        SetRedisGenerationLocked(m->second, written->generation);
      }
      auto it = states_.find(id);
      if (it != states_.end() && it->second.gen == gen) it->second.redis_gen = gen;
      AckWhenDurable(id, info, new_session, std::move(finish));
    });
  });
}

absl::StatusOr<RedisManifest> Engine::Impl::PutSnapshot(const SnapshotMeta& meta,
                                                        const ExpectedVersion& expected,
                                                        const std::vector<float>& state) {
  XLSTMD_ASSIGN_OR_RETURN(
      SnapshotParts parts,
      EncodeSnapshotParts(meta, fingerprint_, model_->state_layout(), absl::MakeConstSpan(state)));
  const std::string_view payload(reinterpret_cast<const char*>(parts.payload.data()),
                                 parts.payload.size() * sizeof(float));
  const std::string_view pieces[] = {parts.head, payload, parts.tail};
  RedisPutRequest req;
  req.session_id = meta.session_id;
  req.expected = expected;
  req.new_version = meta.version;
  req.owner = meta.owner;
  req.updated_unix_ms = meta.updated_unix_ms;
  return redis_->Put(req, pieces);
}

void Engine::Impl::StartSharedCommit(Turn& t) {
  ExpectedVersion expected = ExpectedVersion::Absent();
  std::optional<SnapshotMeta> meta = BeginPersisting(t, &expected);
  if (!meta.has_value()) return;
  auto state = std::make_shared<std::vector<float>>(FloatsPerSlot());
  model_->ReadSlot(t.slot, state->data());
  const uint64_t seq = t.seq;
  io_->Submit([this, seq, expected, meta = *std::move(meta), state] {
    absl::StatusOr<RedisManifest> written = PutSnapshot(meta, expected, *state);
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
      reason = absl::AbortedError(absl::StrCat("session ", t->session_id,
                                               " was changed by another server meanwhile; this "
                                               "turn was rolled back: retry it"));
    } else {
      spdlog::error("Redis commit of session {} failed: {}", base::LogSessionId(t->session_id),
                    base::LogStatus(written.status(), t->session_id));
      // An interrupted commit may have landed: a generation that matches nothing makes the
      // next operation read back whatever Redis holds.
      {
        absl::MutexLock lock(&mu_);
        if (SessionMeta* m = FindLocked(t->owner, t->session_id)) {
          SetRedisGenerationLocked(*m, "stale");
        }
      }
      reason = absl::UnavailableError(
          "the turn could not be stored in the shared Redis tier, so it was rolled back "
          "(the server log has the error); retry");
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

absl::Status Engine::Impl::DeleteShared(const std::string& id) {
  absl::Status s = redis_->Delete(id, ExpectedVersion::Any());
  if (s.ok() || absl::IsNotFound(s)) return absl::OkStatus();
  return RedisUnavailable(id, s);
}

}  // namespace xlstmd::core
