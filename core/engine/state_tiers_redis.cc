// The shared Redis tier (docs/redis-tier.md): adoption of sessions other daemons wrote,
// compare-and-set stores, deletes. Redis calls block, so they run on the I/O pool only; their
// results reach the session index and the tiers on the scheduler thread.
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/log_id.h"
#include "core/engine/state_tiers.h"
#include "spdlog/spdlog.h"

namespace xlstmd::core {

absl::Status StateTiers::ConnectRedis() {
  RedisStore::Options ropts;
  ropts.key_prefix = RedisStore::KeyPrefixFor(codec_.fingerprint.Id());
  ropts.pool.connect_timeout_ms = options_.redis_timeout_ms;
  ropts.pool.io_timeout_ms = options_.redis_timeout_ms;
  ropts.pool.max_connections = std::max(1, options_.redis_connections);
  ropts.max_snapshot_bytes = codec_.snapshot_bytes;
  // Redis forgets a session idle past the TTL by itself; every write restarts the clock.
  ropts.idle_ttl_ms = options_.idle_ttl_ms;
  absl::StatusOr<std::unique_ptr<RedisStore>> store =
      RedisStore::Connect(options_.redis_url, std::move(ropts));
  if (!store.ok()) return store.status();
  redis_ = *std::move(store);
  spdlog::info("shared Redis tier at {} (keys {}*)", redis_->address(), redis_->key_prefix());
  return absl::OkStatus();
}

absl::Status StateTiers::RedisUnavailable(const std::string& id, const absl::Status& cause) const {
  // Redis errors name its address (and chunk keys): the log gets them, the client does not.
  spdlog::error("Redis call for session {} failed: {}", base::LogSessionId(id),
                base::LogStatus(cause, id));
  return absl::UnavailableError(
      absl::StrCat("the shared Redis tier could not serve session ", id, "; retry"));
}

absl::Status StateTiers::ReadFromRedis(const std::string& id, uint64_t version,
                                       absl::Span<float> state) {
  absl::StatusOr<RedisSnapshot> snap = redis_->Get(id);
  absl::Status status = snap.status();
  if (snap.ok()) {
    absl::StatusOr<SnapshotMeta> meta =
        DecodeSnapshotInto(snap->bytes, codec_.fingerprint, *codec_.layout, state);
    if (!meta.ok()) {
      status = meta.status();
    } else if (meta->session_id != id || meta->version != version) {
      status = absl::AbortedError(absl::StrCat("Redis holds version ", meta->version, ", not ",
                                               version, " (another server changed the session)"));
    }
  }
  if (status.ok()) return status;
  spdlog::error("reading session {} from Redis: {}", base::LogSessionId(id),
                base::LogStatus(status, id));
  if (absl::IsAborted(status) || absl::IsUnavailable(status)) {
    return absl::Status(status.code(), absl::StrCat("could not restore session ", id,
                                                    " from the shared Redis tier: ",
                                                    status.message(), "; retry"));
  }
  return absl::DataLossError(absl::StrCat("the shared Redis tier's state of session ", id,
                                          " is unusable: ", status.message()));
}

absl::StatusOr<RedisManifest> StateTiers::PutSnapshot(const SnapshotMeta& meta,
                                                      const ExpectedVersion& expected,
                                                      absl::Span<const float> state) {
  absl::StatusOr<SnapshotParts> parts =
      EncodeSnapshotParts(meta, codec_.fingerprint, *codec_.layout, state);
  if (!parts.ok()) return parts.status();
  const std::string_view payload(reinterpret_cast<const char*>(parts->payload.data()),
                                 parts->payload.size() * sizeof(float));
  const std::string_view pieces[] = {parts->head, payload, parts->tail};
  RedisPutRequest req;
  req.session_id = meta.session_id;
  req.expected = expected;
  req.new_version = meta.version;
  req.owner = meta.owner;
  req.updated_unix_ms = meta.updated_unix_ms;
  return redis_->Put(req, pieces);
}

void StateTiers::Refresh(const std::string& owner, const std::string& id, StatusDone done) {
  if (redis_ == nullptr || !RedisStore::IsValidSessionId(id)) {
    return post_([done = std::move(done)] { done(absl::OkStatus()); });
  }
  lookups_->Submit([this, owner, id, done = std::move(done)]() mutable {
    RefreshOnIo(owner, id, std::move(done));
  });
}

// I/O thread: reads what Redis holds and hands the result to the scheduler thread.
void StateTiers::RefreshOnIo(const std::string& owner, const std::string& id, StatusDone done) {
  auto answer = [this, &done](absl::Status s) {
    post_([s, done = std::move(done)] { done(s); });
  };
  const std::optional<SessionMeta> local = index_->Peek(id);
  // Another tenant's or busy: the operation's own checks answer (NOT_FOUND, ABORTED).
  if (local.has_value() && (local->info.owner != owner || local->info.turn_running)) {
    return answer(absl::OkStatus());
  }
  const bool known = local.has_value();
  const std::string local_generation = known ? local->redis_generation : "";
  absl::StatusOr<RedisManifest> manifest = redis_->GetManifest(id);
  if (!manifest.ok()) {
    if (absl::IsNotFound(manifest.status())) {
      if (!known || local_generation.empty()) return answer(absl::OkStatus());
      // Redis held it and no longer does.
      return post_([this, id, local_generation, done = std::move(done)] {
        ForgetMissing(id, local_generation);
        done(absl::OkStatus());
      });
    }
    if (!known) return answer(RedisUnavailable(id, manifest.status()));
    spdlog::warn("Redis lookup of session {} failed: {}", base::LogSessionId(id),
                 base::LogStatus(manifest.status(), id));
    return answer(absl::OkStatus());  // go on with the local state; a commit re-checks
  }
  if (manifest->owner != owner) return answer(absl::OkStatus());  // another tenant's
  if (known && manifest->generation == local_generation) return answer(absl::OkStatus());

  absl::StatusOr<RedisSnapshot> snap = redis_->Get(id);
  if (!snap.ok()) {
    if (absl::IsNotFound(snap.status())) return answer(absl::OkStatus());  // deleted meanwhile
    if (known && absl::IsDataLoss(snap.status())) {
      // An unreadable shared copy must not block the local one (nor its deletion).
      spdlog::error("Redis copy of session {} is unreadable, using the local one: {}",
                    base::LogSessionId(id), base::LogStatus(snap.status(), id));
      return answer(absl::OkStatus());
    }
    return answer(RedisUnavailable(id, snap.status()));
  }
  MutableHostState state = host_pool_->Acquire(/*zero=*/true);
  absl::StatusOr<SnapshotMeta> meta = DecodeSnapshotInto(snap->bytes, codec_.fingerprint,
                                                         *codec_.layout, state->span());
  if (meta.ok() && (meta->session_id != id || meta->version != snap->manifest.version)) {
    meta = absl::DataLossError(
        absl::StrCat("it holds session ", meta->session_id, " version ", meta->version));
  }
  if (!meta.ok()) {
    spdlog::error("Redis snapshot of session {} is unusable: {}", base::LogSessionId(id),
                  base::LogStatus(meta.status(), id));
    return answer(known ? absl::OkStatus()
                        : absl::DataLossError(absl::StrCat(
                              "the shared Redis tier's state of session ", id, " is unusable")));
  }
  // Metadata and state change together on the scheduler thread, so no command ever sees one
  // daemon's metadata with another's state.
  post_([this, owner, id, meta = *std::move(meta), generation = snap->manifest.generation,
         state, done = std::move(done)]() mutable {
    Adopt(owner, id, meta, generation, std::move(state), std::move(done));
  });
}

void StateTiers::Adopt(const std::string& owner, const std::string& id, const SnapshotMeta& meta,
                       const std::string& generation, HostState state, StatusDone done) {
  bool changed = false;
  absl::Status s = index_->Adopt(owner, id, meta, generation, &changed);
  if (s.ok() && changed) Install(id, meta.version, std::move(state), /*from_redis=*/true);
  done(s);
}

void StateTiers::ForgetMissing(const std::string& id, const std::string& generation) {
  // Redis is a cache when a disk tier holds committed turns: it may have restarted or evicted
  // the session, so this daemon keeps it and its next commit stores it again. Without a disk
  // tier Redis was the store of record: the session was deleted on another server.
  const bool keep = dir_ != nullptr;
  const bool erased = index_->ForgetRedisCopy(id, generation, keep);
  if (erased) {
    Drop(id);
  } else if (keep) {
    spdlog::warn("Redis no longer holds session {}; keeping this server's copy",
                 base::LogSessionId(id));
  }
}

void StateTiers::AckWhenStored(const std::string& id, SessionInfo info, bool new_session,
                               ExpectedVersion expected, InfoDone done) {
  // Busy until acknowledged: no turn, delete or rewind can run on a session whose store is in
  // flight (a new one may already show in ListSessions).
  std::optional<SnapshotMeta> meta = index_->ClaimById(id);
  if (!meta.has_value()) return done(SessionNotFound(id));
  InfoDone finish = [this, id, done = std::move(done)](absl::StatusOr<SessionInfo> r) {
    index_->Release(id);
    done(std::move(r));
  };
  if (redis_ == nullptr) return AckWhenDurable(id, info, new_session, std::move(finish));
  Entry& st = states_[id];
  HostState state = StateCopy(id, st);  // null: only on disk (a fork or rewind after a spill)
  meta->version = st.version;
  const uint64_t gen = st.gen;
  io_->Submit([this, id, info, new_session, expected, meta = *std::move(meta), state, gen,
               finish = std::move(finish)]() mutable {
    absl::StatusOr<RedisManifest> written;
    absl::Status read;  // only on disk: what the file read said, passed on as it is
    if (state) {
      read = state->copy_status();  // a failed device copy is never shared
      if (read.ok()) written = PutSnapshot(meta, expected, state->span());
    } else {
      std::vector<float> disk(slots_->floats_per_slot());
      read = ReadStoredState(id, meta.version, absl::MakeSpan(disk), false);
      if (read.ok()) written = PutSnapshot(meta, expected, absl::MakeConstSpan(disk));
    }
    post_([this, id, info, new_session, gen, read, written = std::move(written),
           finish = std::move(finish)]() mutable {
      if (!read.ok()) {
        if (new_session && index_->Erase(id)) Drop(id);
        return finish(read);
      }
      OnStored(id, info, new_session, gen, std::move(written), std::move(finish));
    });
  });
}

void StateTiers::OnStored(const std::string& id, SessionInfo info, bool new_session,
                          uint64_t gen, absl::StatusOr<RedisManifest> written, InfoDone done) {
  if (!written.ok()) {
    const absl::Status reason =
        absl::IsAborted(written.status())
            ? absl::AbortedError(
                  absl::StrCat("session ", id, " was changed in the shared Redis tier meanwhile"))
            : RedisUnavailable(id, written.status());
    if (new_session) {
      if (index_->Erase(id)) Drop(id);
    } else {
      // The local change (a rewind) stands but Redis did not take it: a generation that
      // matches nothing makes the next operation adopt Redis' copy again.
      index_->SetRedisGeneration(id, "stale");
    }
    return done(reason);
  }
  if (!index_->Contains(id)) return done(SessionNotFound(id));
  index_->SetRedisGeneration(id, written->generation);
  auto it = states_.find(id);
  if (it != states_.end() && it->second.gen == gen) it->second.redis_gen = gen;
  AckWhenDurable(id, info, new_session, std::move(done));
}

void StateTiers::ShareBeforeCommit(SnapshotMeta meta, ExpectedVersion expected, HostState state,
                                   std::function<void(absl::StatusOr<RedisManifest>)> done) {
  io_->Submit([this, meta = std::move(meta), expected, state, done = std::move(done)]() mutable {
    const absl::Status copied = state->copy_status();  // a failed device copy is never shared
    absl::StatusOr<RedisManifest> written =
        copied.ok() ? PutSnapshot(meta, expected, state->span())
                    : absl::StatusOr<RedisManifest>(copied);
    post_([written = std::move(written), done = std::move(done)]() mutable {
      done(std::move(written));
    });
  });
}

void StateTiers::DeleteShared(const std::string& id, StatusDone done) {
  io_->Submit([this, id, done = std::move(done)]() mutable {
    absl::Status s = redis_->Delete(id, ExpectedVersion::Any());
    if (!s.ok() && !absl::IsNotFound(s)) s = RedisUnavailable(id, s);
    else s = absl::OkStatus();
    post_([s, done = std::move(done)] { done(s); });
  });
}

}  // namespace xlstmd::core
