// Session commands (fork, rewind, export, import, delete): each runs on the engine thread,
// after a Redis refresh where Redis is on, over the session index and the state tiers.
#include "absl/strings/str_cat.h"
#include "core/engine/engine_impl.h"

namespace xlstmd::core {

void Engine::Impl::ForkSession(std::string owner, std::string id, InfoDone done) {
  tiers_->Refresh(owner, id, [this, owner, id, done = std::move(done)](absl::Status s) mutable {
    if (!s.ok()) return done(s);
    if (scheduler_->draining()) return done(ServerUnavailable());
    std::optional<SessionMeta> src = index_->Peek(id);
    if (!src.has_value() || src->info.owner != owner) return done(SessionNotFound(id));
    absl::StatusOr<SessionInfo> info = index_->Create(owner, &*src);
    if (!info.ok()) return done(info.status());
    tiers_->Fork(id, *info, std::move(done));
  });
}

void Engine::Impl::ForkSessionAt(std::string owner, std::string id, uint64_t version,
                                 InfoDone done) {
  tiers_->Refresh(owner, id, [this, owner, id, version, done = std::move(done)](
                                 absl::Status s) mutable {
    if (!s.ok()) return done(s);
    if (scheduler_->draining()) return done(ServerUnavailable());
    std::optional<SessionMeta> src = index_->Peek(id);
    if (!src.has_value() || src->info.owner != owner) return done(SessionNotFound(id));
    if (src->info.version == version) {
      absl::StatusOr<SessionInfo> info = index_->Create(owner, &*src);
      if (!info.ok()) return done(info.status());
      return tiers_->Fork(id, *info, std::move(done));
    }
    absl::StatusOr<RewindPoint> point = tiers_->FindRewindPoint(id, version);
    if (!point.ok()) return done(point.status());
    SessionMeta at = *src;
    at.RewindTo(*point, clock_->UnixMs());
    absl::StatusOr<SessionInfo> info = index_->Create(owner, &at);
    if (!info.ok()) return done(info.status());
    tiers_->ForkFromState(*info, point->state, std::move(done));
  });
}

void Engine::Impl::RewindSession(std::string owner, std::string id, uint64_t version,
                                 InfoDone done) {
  tiers_->Refresh(owner, id, [this, owner, id, version,
                              done = std::move(done)](absl::Status s) mutable {
    if (!s.ok()) return done(s);
    // Claimed in the same critical section as the idle check: a turn claiming the session on
    // a gRPC thread in between would otherwise run on top of the rewound state. The claim is
    // handed on to AckWhenStored (which keeps a session busy until its store is acknowledged
    // and then releases it), so there is no moment a turn could claim it mid-rewind.
    absl::StatusOr<SessionMeta> meta =
        index_->CheckIdle(owner, id, "has a turn running", /*mark_busy=*/true);
    if (!meta.ok()) return done(meta.status());
    if (version == meta->info.version) {  // already there
      index_->Release(id);
      return done(meta->info);
    }
    absl::StatusOr<SessionInfo> info = tiers_->Rewind(id, version);
    if (!info.ok()) {
      index_->Release(id);
      return done(info.status());
    }
    // The info was read while this call held the session busy; the caller gets it as it is
    // once the rewind is stored and the claim released (no turn running).
    InfoDone report = [done = std::move(done)](absl::StatusOr<SessionInfo> r) mutable {
      if (r.ok()) r->turn_running = false;
      done(std::move(r));
    };
    // Versions go backwards here, which a version check cannot express: overwrite.
    tiers_->AckWhenStored(id, *info, /*new_session=*/false, ExpectedVersion::Any(),
                          std::move(report));
  });
}

void Engine::Impl::ExportSession(std::string owner, std::string id,
                                 std::function<void(absl::StatusOr<std::string>)> done) {
  tiers_->Refresh(owner, id, [this, owner, id, done = std::move(done)](absl::Status s) mutable {
    if (!s.ok()) return done(s);
    absl::StatusOr<SessionMeta> meta = index_->CheckIdle(
        owner, id, "has a turn running; export it when the turn has finished", false);
    if (!meta.ok()) return done(meta.status());
    tiers_->Export(id, meta->ToSnapshot(), std::move(done));
  });
}

void Engine::Impl::ImportSession(std::string owner, std::string snapshot, InfoDone done) {
  if (snapshot.size() > snapshot_bytes_) {
    return done(absl::ResourceExhaustedError(absl::StrCat("the snapshot is ", snapshot.size(),
                                                          " bytes; this model's are at most ",
                                                          snapshot_bytes_)));
  }
  // Decoding checks and hashes the whole state (128 MiB for a 7B model): an I/O thread's
  // work, not the calling (gRPC) thread's.
  const StateCodec* codec = &tiers_->codec();
  tiers_->RunOnIo([this, codec, owner = std::move(owner), snapshot = std::move(snapshot),
                   done = std::move(done)]() mutable {
    MutableHostState state = tiers_->NewState(/*zero=*/true);
    absl::StatusOr<SnapshotMeta> meta = DecodeSnapshotInto(snapshot, codec->fingerprint,
                                                           *codec->layout, state->span());
    snapshot = std::string();  // its memory is not needed while the scheduler installs it
    if (!meta.ok()) {
      // A corrupt upload is the caller's bad argument; a foreign model stays a precondition.
      if (absl::IsDataLoss(meta.status())) {
        return done(absl::InvalidArgumentError(
            absl::StrCat("the snapshot is corrupt: ", meta.status().message())));
      }
      return done(meta.status());
    }
    scheduler_->Post([this, owner = std::move(owner), meta = *std::move(meta), state,
                      done = std::move(done)]() mutable {
      if (scheduler_->draining()) return done(ServerUnavailable());
      const SessionMeta from = SessionMeta::FromSnapshot(meta);
      absl::StatusOr<SessionInfo> info = index_->Create(owner, &from);
      if (!info.ok()) return done(info.status());
      tiers_->Install(info->session_id, info->version, std::move(state), /*from_redis=*/false);
      tiers_->AckWhenStored(info->session_id, *info, /*new_session=*/true,
                            ExpectedVersion::Absent(), std::move(done));
    });
  });
}

void Engine::Impl::DeleteSession(std::string owner, std::string id, StatusDone done) {
  tiers_->Refresh(owner, id, [this, owner, id, done = std::move(done)](absl::Status s) mutable {
    if (!s.ok()) return done(s);
    // Claimed in the same critical section as the idle check (a turn claiming it in between
    // on a gRPC thread would otherwise run on an erased session); with Redis it stays
    // claimed while Redis forgets it. Erase takes the claim away with the session.
    absl::StatusOr<SessionMeta> meta = index_->CheckIdle(
        owner, id, "has a turn running; cancel it first", /*mark_busy=*/true);
    if (!meta.ok()) return done(meta.status());
    if (!tiers_->has_redis()) return tiers_->Erase(id, std::move(done));
    // Redis first: once it is gone there, no server can adopt it back; if that fails, the
    // session is left exactly as it was.
    tiers_->DeleteShared(id, [this, id, done = std::move(done)](absl::Status s) mutable {
      if (s.ok()) return tiers_->Erase(id, std::move(done));
      index_->Release(id);
      done(s);
    });
  });
}

}  // namespace xlstmd::core
