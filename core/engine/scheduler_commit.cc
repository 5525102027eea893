// The ends of turns: rollback, and the commit path (Redis first, then the disk under sync
// durability, then the session's new version).
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/check.h"
#include "core/base/log_id.h"
#include "core/engine/scheduler.h"
#include "spdlog/spdlog.h"

namespace xlstmd::core {

// Leaves the session exactly at its committed version.
void Scheduler::RollBack(Turn& t, absl::Status reason) {
  tiers_->FreeSlot(t.slot);
  t.slot = -1;
  if (t.create_only) {
    index_->CancelCreate(t.owner);
    t.create_done(std::move(reason));
    return;
  }
  index_->Release(t.session_id);
  t.stream->Close(std::move(reason));
}

void Scheduler::FailTurns(const std::vector<Turn*>& turns, const absl::Status& reason) {
  for (Turn* t : turns) RollBack(*t, reason);
  std::erase_if(active_, [&](const std::unique_ptr<Turn>& a) {
    return std::find(turns.begin(), turns.end(), a.get()) != turns.end();
  });
}

// A forward call failed. INTERNAL comes from the backend itself (a sticky device error): the
// device's state is unknown, so every running and queued turn rolls back to its committed
// state, no new turn is admitted and /readyz fails. Anything else failed only these turns.
void Scheduler::ModelFailed(const std::vector<Turn*>& turns, const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInternal) {
    FailTurns(turns, absl::InternalError(absl::StrCat("model error: ", status.message())));
    return;
  }
  spdlog::critical("the compute backend failed: {}; this replica stops serving new turns",
                   std::string(status.message()));
  const absl::Status reason = absl::UnavailableError(
      absl::StrCat("the compute device failed (", status.message(), "); retry on another replica"));
  {
    absl::MutexLock lock(&mu_);
    device_error_ = reason;
  }
  device_failed_.store(true, std::memory_order_relaxed);
  std::vector<std::unique_ptr<Turn>> none;
  Shutdown(none, reason);
}

void Scheduler::FailNaN(const std::vector<Turn*>& poisoned) {
  if (poisoned.empty()) return;
  for (Turn* t : poisoned) {
    spdlog::error("session {}: the model produced NaN logits; the turn is rolled back and its "
                  "state discarded (a broken checkpoint or kernel)",
                  base::LogSessionId(t->session_id));
    if (options_.observer != nullptr) options_.observer->OnNaNLogits();
  }
  FailTurns(poisoned, absl::InternalError("the model produced NaN logits for this turn; it was "
                                          "rolled back and the session keeps its last version"));
}

void Scheduler::RemoveActive(Turn* t) {
  std::erase_if(active_, [t](const std::unique_ptr<Turn>& a) { return a.get() == t; });
}

// The turn's final token has been fed. Redis first (a version conflict must roll back before
// anything else sees the turn), then the disk under sync durability, then the commit.
void Scheduler::Finalize(Turn& t) {
  const bool share = tiers_->shares_commits() && !t.shared;
  if (!share && !tiers_->sync_commits()) return Commit(t);
  auto preview = index_->PreviewCommit(t.session_id, t.Delta());
  if (!preview.has_value()) {  // a bug: busy sessions are never deleted
    RollBack(t, absl::InternalError("session vanished during its turn"));
    return RemoveActive(&t);
  }
  t.phase = Turn::Phase::kPersisting;
  if (!t.final_state) t.final_state = tiers_->CaptureSlot(t.slot);
  const uint64_t seq = t.seq;
  if (share) {
    tiers_->ShareBeforeCommit(std::move(preview->first), preview->second, t.final_state,
                              [this, seq](absl::StatusOr<RedisManifest> written) {
                                OnShared(seq, std::move(written));
                              });
    return;
  }
  tiers_->PersistBeforeCommit(t.session_id, std::move(preview->first), t.final_state,
                              [this, seq](absl::StatusOr<uint64_t> digest) {
                                OnPersisted(seq, std::move(digest));
                              });
}

void Scheduler::OnShared(uint64_t seq, absl::StatusOr<RedisManifest> written) {
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
      index_->SetRedisGeneration(t->session_id, "stale");
      reason = absl::UnavailableError(
          "the turn could not be stored in the shared Redis tier, so it was rolled back "
          "(the server log has the error); retry");
    }
    RollBack(*t, std::move(reason));
    return RemoveActive(t);
  }
  index_->SetRedisGeneration(t->session_id, written->generation);
  t->shared = true;
  Finalize(*t);  // the disk write under sync, else the commit
}

void Scheduler::OnPersisted(uint64_t seq, absl::StatusOr<uint64_t> digest) {
  Turn* t = FindActive(seq);
  XLSTMD_CHECK(t != nullptr);  // persisting turns are never dropped
  if (digest.ok()) {
    t->durable_digest = *digest;
    return Commit(*t);
  }
  const absl::Status status = digest.status();
  spdlog::error("sync snapshot of session {} failed: {}", base::LogSessionId(t->session_id),
                base::LogStatus(status, t->session_id));
  absl::Status reason = absl::UnavailableError(
      "the turn could not be written to the disk tier, so it was rolled back here (the server "
      "log has the error)");
  if (t->shared) {
    // Redis already holds the turn: other servers will serve it. Here, the next operation on
    // the session adopts it from Redis again (a generation that matches nothing).
    index_->SetRedisGeneration(t->session_id, "stale");
    reason = absl::UnavailableError(
        "the turn is stored in the shared Redis tier but could not be written to this server's "
        "disk tier (the server log has the error); read the session again");
  }
  RollBack(*t, std::move(reason));
  RemoveActive(t);
}

// The turn's slot becomes the session's committed state.
void Scheduler::Commit(Turn& t) {
  const auto now = clock_->Now();
  std::optional<SessionIndex::Committed> committed = index_->Commit(t.session_id, t.Delta());
  if (!committed.has_value()) {
    // Busy sessions are never deleted, so this is a bug; fail the turn rather than crash.
    RollBack(t, absl::InternalError("session vanished during its turn"));
    return RemoveActive(&t);
  }
  TurnEvent fin;
  fin.kind = TurnEvent::Kind::kFinished;
  fin.finish_reason = t.finish;
  fin.usage.prompt_tokens = static_cast<uint32_t>(t.input.size());
  fin.usage.completion_tokens = static_cast<uint32_t>(t.generated.size());
  fin.usage.queue_ms = MsBetween(t.enqueued, t.admitted);
  fin.usage.prefill_ms = MsBetween(t.admitted, t.prefill_done);
  fin.usage.first_token_ms = MsBetween(t.enqueued, t.first_token);
  fin.usage.total_ms = MsBetween(t.enqueued, now);
  fin.usage.history_tokens = committed->history_tokens;  // metrics hook: prefill avoided
  fin.session_version = committed->version;
  fin.durable = t.durable_digest.has_value();
  fin.state_digest = t.durable_digest.value_or(0);
  tiers_->InstallCommitted(t.session_id, t.slot, committed->version);
  t.slot = -1;
  if (t.shared) tiers_->MarkShared(t.session_id);
  if (t.rewind_point.has_value()) tiers_->AddRewindPoint(t.session_id, *std::move(t.rewind_point));
  t.stream->Push(std::move(fin));
  t.stream->Close(absl::OkStatus());
  RemoveActive(&t);
}

void Scheduler::CommitCreate(Turn& t) {
  const SessionInfo info = index_->CompleteCreate(t.owner, t.input.size());
  tiers_->InstallCommitted(info.session_id, t.slot, 0);
  t.slot = -1;
  auto done = std::move(t.create_done);
  RemoveActive(&t);
  tiers_->AckWhenStored(info.session_id, info, /*new_session=*/true, ExpectedVersion::Absent(),
                        std::move(done));
}

}  // namespace xlstmd::core
