#include "core/engine/engine_impl.h"

namespace xlstmd::core {

void Engine::Impl::Loop() {
  auto last_sweep = SteadyClock::now();
  while (true) {
    std::vector<std::function<void()>> commands;
    std::vector<std::function<void()>> completions;
    std::vector<std::unique_ptr<Turn>> admitted;
    std::vector<std::unique_ptr<Turn>> dropped;
    std::optional<absl::Status> cancel_all;
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      stopping = stopping_;
      commands.swap(commands_);
      completions.swap(completions_);
      if (cancel_all_.has_value()) {
        cancel_all = std::move(cancel_all_);
        cancel_all_.reset();
      }
      // A queued turn whose client left must release its session (and queue place) now,
      // not when it would have been admitted.
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (!(*it)->create_only && (*it)->stream->cancel_requested()) {
          dropped.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      const int32_t cap = std::min(options_.max_batch, options_.resident_slots);
      while (!stopping && !cancel_all && !queue_.empty() &&
             static_cast<int32_t>(active_.size() + admitted.size()) < cap) {
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      running_turns_ = static_cast<int32_t>(active_.size() + admitted.size());
    }
    for (auto& done : completions) done();
    for (auto& t : dropped) RollBack(*t, t->stream->cancel_reason());
    for (auto& cmd : commands) cmd();
    if (stopping || cancel_all) {
      const absl::Status reason =
          cancel_all ? *cancel_all : absl::UnavailableError("the server is shutting down");
      for (auto& t : admitted) RollBack(*t, reason);
      admitted.clear();
      // A turn whose final state is being persisted commits: its write is in flight.
      std::vector<std::unique_ptr<Turn>> persisting;
      for (auto& t : active_) {
        if (t->phase == Turn::Phase::kPersisting) {
          persisting.push_back(std::move(t));
        } else {
          RollBack(*t, reason);
        }
      }
      active_ = std::move(persisting);
      std::deque<std::unique_ptr<Turn>> queued;
      {
        absl::MutexLock lock(&mu_);
        queued.swap(queue_);
      }
      for (auto& t : queued) RollBack(*t, reason);
      UpdateRunning();
      if (stopping) {
        // Let the I/O pool finish (its completions are dropped: nobody reads them now).
        io_.reset();
        return;
      }
      continue;
    }
    for (size_t i = 0; i < admitted.size(); ++i) {
      if (Admit(admitted[i])) continue;
      // No slot can be freed until a spill write completes: put the rest back, in order.
      absl::MutexLock lock(&mu_);
      for (size_t j = admitted.size(); j-- > i;) queue_.push_front(std::move(admitted[j]));
      break;
    }
    DropCancelled();
    const bool prefilled = PrefillPieces();
    const bool stepped = DecodeStep();
    UpdateRunning();

    const auto now = SteadyClock::now();
    if (options_.idle_ttl_ms > 0 && now - last_sweep > std::chrono::seconds(1)) {
      last_sweep = now;
      SweepIdle(now);
    }
    if (!prefilled && !stepped) signal_->Wait(absl::Seconds(1));
  }
}

void Engine::Impl::UpdateRunning() {
  absl::MutexLock lock(&mu_);
  running_turns_ = static_cast<int32_t>(active_.size());
}

// Runs `fn` on the engine thread at its next iteration (from an I/O thread).
void Engine::Impl::PostCompletion(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    completions_.push_back(std::move(fn));
  }
  signal_->Notify();
}

// Takes a slot and loads the committed state into it; false when no slot is available yet.
bool Engine::Impl::Admit(std::unique_ptr<Turn>& t) {
  const int32_t slot = TakeSlot();
  if (slot < 0) return false;
  t->admitted = SteadyClock::now();
  t->slot = slot;
  t->seq = ++turn_seq_;
  // The turn works on a copy, so the committed state survives a cancel untouched.
  auto it = t->create_only ? states_.end() : states_.find(t->session_id);
  Turn* turn = t.get();
  active_.push_back(std::move(t));
  if (it == states_.end() || (it->second.slot < 0 && !it->second.host && !it->second.nonzero)) {
    model_->ResetSlot(turn->slot);
  } else if (it->second.slot >= 0) {
    model_->CopySlot(it->second.slot, turn->slot);
    it->second.last_used = ++tick_;
    if (options_.observer != nullptr) {  // metrics hook
      options_.observer->OnRestore(StateTier::kResident,
                                   MsBetween(turn->admitted, SteadyClock::now()) / 1000);
    }
  } else if (it->second.host) {
    model_->WriteSlot(turn->slot, it->second.host->data());
    it->second.last_used = ++tick_;
    if (options_.observer != nullptr) {  // metrics hook
      options_.observer->OnRestore(StateTier::kHost,
                                   MsBetween(turn->admitted, SteadyClock::now()) / 1000);
    }
  } else if (Durable(it->second) && dir_ != nullptr) {
    turn->phase = Turn::Phase::kRestoring;
    StartRestore(*turn, /*from_redis=*/false);
    return true;
  } else if (InRedis(it->second)) {
    turn->phase = Turn::Phase::kRestoring;
    StartRestore(*turn, /*from_redis=*/true);
    return true;
  } else {
    FailTurns({turn}, absl::DataLossError(absl::StrCat("the committed state of session ",
                                                       turn->session_id, " is in no tier")));
    return true;
  }
  BeginRunning(*turn);
  return true;
}

Turn* Engine::Impl::FindActive(uint64_t seq) {
  for (auto& a : active_) {
    if (a->seq == seq) return a.get();
  }
  return nullptr;
}

// The turn's state is in its slot: set up sampling and streaming and start prefilling.
void Engine::Impl::BeginRunning(Turn& turn) {
  Turn* t = &turn;
  t->phase = Turn::Phase::kPrefill;
  if (t->create_only) return;
  if (t->checkpoint.has_value()) {
    auto copy = std::make_shared<std::vector<float>>(FloatsPerSlot());
    model_->ReadSlot(t->slot, copy->data());
    t->checkpoint->state = std::move(copy);
  }
  auto sampler = Sampler::Create(t->sampling, static_cast<int32_t>(model_->vocab_size()), t->seed,
                                 options_.sampling);
  if (!sampler.ok()) {
    // Validated in StartTurn; reaching here is a bug, reported rather than crashed on.
    FailTurns({t}, absl::InternalError(sampler.status().message()));
    return;
  }
  t->sampler.emplace(std::move(*sampler));
  t->sampler->Observe(t->input);
  std::vector<int32_t> stop_ids = t->sampling.stop_token_ids;
  std::vector<std::string> stop_strings = t->sampling.stop;
  if (t->is_message) {
    // The template's stops end a chat reply; a raw-token turn stops only where asked.
    stop_ids.insert(stop_ids.end(), template_.stop_token_ids.begin(),
                    template_.stop_token_ids.end());
    stop_strings.insert(stop_strings.end(), template_.stop_strings.begin(),
                        template_.stop_strings.end());
  }
  t->stop.emplace(std::move(stop_ids), std::move(stop_strings), t->max_tokens);
  t->detok.emplace(*tokenizer_);
  TurnEvent started;
  started.kind = TurnEvent::Kind::kStarted;
  started.input_ids = t->input;
  started.base_version = t->base_version;
  t->stream->Push(std::move(started));
}

void Engine::Impl::DropCancelled() {
  const auto now = SteadyClock::now();
  const auto limit = std::chrono::milliseconds(options_.max_turn_ms);
  for (size_t i = 0; i < active_.size();) {
    Turn& t = *active_[i];
    // A turn being persisted has finished: it commits whatever the client does now.
    const bool stoppable = !t.create_only && t.phase != Turn::Phase::kPersisting;
    if (stoppable && t.stream->cancel_requested()) {
      RollBack(t, t.stream->cancel_reason());
    } else if (stoppable && options_.max_turn_ms > 0 && now - t.enqueued > limit) {
      RollBack(t, absl::DeadlineExceededError(absl::StrCat(
                      "the turn ran past the server's limit of ", options_.max_turn_ms, " ms")));
    } else {
      ++i;
      continue;
    }
    active_.erase(active_.begin() + static_cast<ptrdiff_t>(i));
  }
}

// Leaves the session exactly at its committed version.
void Engine::Impl::RollBack(Turn& t, absl::Status reason) {
  FreeSlot(t.slot);
  t.slot = -1;
  if (t.create_only) {
    {
      absl::MutexLock lock(&mu_);
      --pending_creates_;
    }
    t.create_done(reason);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    if (SessionMeta* meta = FindLocked(t.owner, t.session_id)) meta->info.turn_running = false;
  }
  t.stream->Close(std::move(reason));
}

// One prompt piece for each prefilling turn, in admission order, within the token budget
// (at least one piece). Piece boundaries depend only on the turn, never on the load.
bool Engine::Impl::PrefillPieces() {
  std::vector<Turn*> turns;
  std::vector<PrefillSequence> seqs;
  int64_t budget = options_.prefill_token_budget;
  for (auto& t : active_) {
    if (t->phase != Turn::Phase::kPrefill) continue;
    const size_t n = std::min<size_t>(options_.prefill_piece, t->input.size() - t->prefilled);
    if (!seqs.empty() && static_cast<int64_t>(n) > budget) break;
    seqs.push_back({absl::MakeConstSpan(t->input).subspan(t->prefilled, n), t->slot});
    turns.push_back(t.get());
    budget -= static_cast<int64_t>(n);
  }
  if (seqs.empty()) return false;
  PrefillOptions popts;
  popts.chunk_size = options_.prefill_chunk_size;
  popts.logits = LogitsMode::kLast;
  absl::Status s = model_->Prefill(seqs, popts, &logits_);
  if (!s.ok()) {
    FailTurns(turns, ModelError(s));
    return true;
  }
  const size_t vocab = static_cast<size_t>(model_->vocab_size());
  std::vector<Turn*> created;
  for (size_t i = 0; i < turns.size(); ++i) {
    Turn& t = *turns[i];
    t.prefilled += seqs[i].tokens.size();
    if (t.prefilled < t.input.size()) continue;
    t.prefill_done = SteadyClock::now();
    if (t.create_only) {
      created.push_back(&t);
      continue;
    }
    t.phase = Turn::Phase::kDecode;
    SampleAndEmit(t, absl::MakeConstSpan(logits_).subspan(i * vocab, vocab));
  }
  for (Turn* t : created) CommitCreate(*t);
  return true;
}

bool Engine::Impl::DecodeStep() {
  std::vector<Turn*> turns;
  std::vector<int32_t> tokens, slots;
  for (auto& t : active_) {
    if (t->phase != Turn::Phase::kDecode) continue;
    // A full stream pauses only its own turn; the final feed emits no delta, so it runs.
    if (!t->final_pending && !t->stream->HasRoom()) continue;
    if (static_cast<int32_t>(turns.size()) >= options_.max_batch) break;
    turns.push_back(t.get());
    tokens.push_back(t->pending_token);
    slots.push_back(t->slot);
  }
  if (turns.empty()) return false;
  const auto step_start = SteadyClock::now();  // metrics hook
  absl::Status s = model_->Step(tokens, slots, &logits_);
  if (!s.ok()) {
    FailTurns(turns, ModelError(s));
    return true;
  }
  if (options_.observer != nullptr) {  // metrics hook
    options_.observer->OnDecodeStep(static_cast<int32_t>(turns.size()),
                                    MsBetween(step_start, SteadyClock::now()) / 1000);
  }
  {
    absl::MutexLock lock(&mu_);
    ++steps_;
  }
  const size_t vocab = static_cast<size_t>(model_->vocab_size());
  std::vector<Turn*> done;
  for (size_t i = 0; i < turns.size(); ++i) {
    Turn& t = *turns[i];
    if (t.final_pending) {
      done.push_back(&t);
    } else {
      SampleAndEmit(t, absl::MakeConstSpan(logits_).subspan(i * vocab, vocab));
    }
  }
  for (Turn* t : done) Finalize(*t);
  return true;
}

void Engine::Impl::SampleAndEmit(Turn& t, absl::Span<const float> logits) {
  SampleInfo info;
  const int32_t id = t.sampler->Sample(logits, t.sampling.logprobs > 0 ? &info : nullptr);
  if (t.generated.empty()) t.first_token = SteadyClock::now();
  t.generated.push_back(id);
  {
    absl::MutexLock lock(&mu_);
    ++generated_tokens_;
  }
  // Ids past the tokenizer's vocabulary (a model with a padded embedding) have no text.
  std::string piece;
  if (id < tokenizer_->vocab_size()) {
    if (auto p = t.detok->Push(id); p.ok()) piece = std::move(*p);
  }
  StopChecker::Step step = t.stop->Feed(id, piece);
  TurnEvent delta;
  delta.kind = TurnEvent::Kind::kDelta;
  delta.text = std::move(step.text);
  if (step.finished()) {
    t.finish = step.finish;
    // Bytes of an unfinished character become U+FFFD at the end, unless they lie past a
    // stop string (which cut them off).
    std::string tail = t.detok->Finish();
    if (step.finish != FinishReason::kStopString) delta.text += tail;
    t.final_pending = true;
  }
  delta.token_ids.push_back(id);
  if (t.sampling.logprobs > 0) {
    delta.logprobs.push_back({id, info.logprob});
    delta.top_logprobs = std::move(info.top_logprobs);
  }
  t.pending_token = id;
  t.stream->Push(std::move(delta));
}

void Engine::Impl::FailTurns(const std::vector<Turn*>& turns, const absl::Status& reason) {
  for (Turn* t : turns) RollBack(*t, reason);
  std::erase_if(active_, [&](const std::unique_ptr<Turn>& a) {
    return std::find(turns.begin(), turns.end(), a.get()) != turns.end();
  });
}

absl::Status Engine::Impl::ModelError(const absl::Status& s) {
  return absl::InternalError(absl::StrCat("model error: ", s.message()));
}

void Engine::Impl::RemoveActive(Turn* t) {
  std::erase_if(active_, [t](const std::unique_ptr<Turn>& a) { return a.get() == t; });
}

// The turn's final token has been fed. With sync durability its state is written first
// and the commit follows the write; otherwise it commits now.
void Engine::Impl::Finalize(Turn& t) {
  if (redis_ != nullptr && !t.shared) {
    StartSharedCommit(t);  // Redis first: a version conflict must roll back before anything
    return;
  }
  if (options_.durability != EngineOptions::Durability::kSync || dir_ == nullptr) {
    Commit(t);
    return;
  }
  std::optional<SnapshotMeta> meta = BeginPersisting(t, nullptr);
  if (!meta.has_value()) return;
  auto state = std::make_shared<std::vector<float>>(FloatsPerSlot());
  model_->ReadSlot(t.slot, state->data());
  // An async write of an older version may still be running for this session; the sync
  // write waits behind it so the file only ever moves forward.
  SessionState& st = states_[t.session_id];
  const uint64_t seq = t.seq;
  auto write = [this, seq, meta = *std::move(meta), state]() mutable {
    SubmitWrite(std::move(meta), std::move(state),
                [this, seq](uint64_t version, absl::Status s) { OnPersisted(seq, version, s); });
  };
  if (st.write_in_flight) {
    pending_sync_writes_[t.session_id] = std::move(write);
  } else {
    st.write_in_flight = true;
    write();
  }
}

void Engine::Impl::OnPersisted(uint64_t seq, uint64_t version, absl::Status status) {
  Turn* t = FindActive(seq);
  XLSTMD_CHECK(t != nullptr);  // persisting turns are never dropped
  SessionState& st = states_[t->session_id];
  st.write_in_flight = false;
  if (!status.ok()) {
    spdlog::error("sync snapshot of session {} version {} failed: {}",
                  base::LogSessionId(t->session_id), version,
                  base::LogStatus(status, t->session_id));
    const std::string id = t->session_id;
    absl::Status reason = absl::UnavailableError(
        "the turn could not be written to the disk tier, so it was rolled back here (the "
        "server log has the error)");
    if (t->shared) {
      // Redis already holds the turn: other servers will serve it. Here, the next operation
      // on the session adopts it from Redis again (a generation that matches nothing).
      absl::MutexLock lock(&mu_);
      if (SessionMeta* m = FindLocked(t->owner, t->session_id)) {
        SetRedisGenerationLocked(*m, "stale");
      }
      reason = absl::UnavailableError(
          "the turn is stored in the shared Redis tier but could not be written to this "
          "server's disk tier (the server log has the error); read the session again");
    }
    RollBack(*t, std::move(reason));
    RemoveActive(t);
    RunPendingWrite(id);
    return;
  }
  const std::string id = t->session_id;
  Commit(*t);
  auto it = states_.find(id);
  if (it != states_.end()) {
    it->second.disk_version = static_cast<int64_t>(version);
    it->second.disk_gen = it->second.gen;  // the file holds exactly the state just committed
    NotifyDurable(id, absl::OkStatus());
  }
  if (states_.count(id) != 0) RunPendingWrite(id);
}

std::optional<SnapshotMeta> Engine::Impl::BeginPersisting(Turn& t, ExpectedVersion* expected) {
  std::optional<SnapshotMeta> meta;
  {
    absl::MutexLock lock(&mu_);
    if (SessionMeta* m = FindLocked(t.owner, t.session_id)) {
      meta = MetaLocked(*m);
      if (expected != nullptr) *expected = RedisExpectedLocked(*m);
    }
  }
  if (!meta.has_value()) {  // a bug: busy sessions are never deleted; RollBack takes mu_
    RollBack(t, absl::InternalError("session vanished during its turn"));
    RemoveActive(&t);
    return std::nullopt;
  }
  ApplyCommitToMeta(t, &*meta);
  t.phase = Turn::Phase::kPersisting;
  return meta;
}

// What a commit of `t` does to the session's snapshot metadata.
void Engine::Impl::ApplyCommitToMeta(const Turn& t, SnapshotMeta* meta) const {
  meta->version += 1;
  meta->token_count += t.input.size() + t.generated.size();
  meta->updated_unix_ms = UnixMs();
  if (t.adds_session_start) meta->flags |= kFlagSessionStartDone;
  meta->flags = t.is_message ? (meta->flags | kFlagReplyOpen) : (meta->flags & ~kFlagReplyOpen);
  if (!t.request_id.empty()) {
    meta->recent_requests.push_back({t.request_id, meta->version});
    if (meta->recent_requests.size() > kRequestIdsPerSession) {
      meta->recent_requests.erase(meta->recent_requests.begin());
    }
  }
}

// The turn's slot becomes the session's committed state.
void Engine::Impl::Commit(Turn& t) {
  const auto now = SteadyClock::now();
  TurnEvent fin;
  fin.kind = TurnEvent::Kind::kFinished;
  fin.finish_reason = t.finish;
  fin.usage.prompt_tokens = static_cast<uint32_t>(t.input.size());
  fin.usage.completion_tokens = static_cast<uint32_t>(t.generated.size());
  fin.usage.queue_ms = MsBetween(t.enqueued, t.admitted);
  fin.usage.prefill_ms = MsBetween(t.admitted, t.prefill_done);
  fin.usage.first_token_ms = MsBetween(t.enqueued, t.first_token);
  fin.usage.total_ms = MsBetween(t.enqueued, now);
  bool exists;
  {
    absl::MutexLock lock(&mu_);
    SessionMeta* meta = FindLocked(t.owner, t.session_id);
    exists = meta != nullptr;
    if (exists) {
      fin.usage.history_tokens = meta->info.token_count;  // metrics hook: prefill avoided
      meta->info.version += 1;
      meta->info.token_count += t.input.size() + t.generated.size();
      meta->info.updated_unix_ms = UnixMs();
      meta->info.turn_running = false;
      if (t.adds_session_start) meta->session_start_done = true;
      meta->reply_open = t.is_message;
      if (!t.request_id.empty()) {
        meta->request_versions[t.request_id] = meta->info.version;
        meta->request_order.push_back(t.request_id);
        if (meta->request_order.size() > kRequestIdsPerSession) {
          meta->request_versions.erase(meta->request_order.front());
          meta->request_order.pop_front();
        }
      }
      fin.session_version = meta->info.version;
      last_active_[t.session_id] = now;
    }
  }
  if (!exists) {
    // Busy sessions are never deleted, so this is a bug; fail the turn rather than crash.
    RollBack(t, absl::InternalError("session vanished during its turn"));
    RemoveActive(&t);
    return;
  }
  InstallCommitted(t.session_id, t.slot, fin.session_version);
  t.slot = -1;
  if (t.shared) {
    SessionState& committed = states_[t.session_id];
    committed.redis_gen = committed.gen;
  }
  if (t.checkpoint.has_value() && t.checkpoint->state) {
    SessionState& st = states_[t.session_id];
    st.checkpoints.push_back(std::move(*t.checkpoint));
    host_bytes_ += state_bytes_;
    while (static_cast<int32_t>(st.checkpoints.size()) > options_.keep_turn_checkpoints) {
      st.checkpoints.pop_front();
      host_bytes_ -= state_bytes_;
    }
    EnforceHostBudget();
  }
  t.stream->Push(std::move(fin));
  t.stream->Close(absl::OkStatus());
  RemoveActive(&t);
}

void Engine::Impl::InstallCommitted(const std::string& id, int32_t slot, uint64_t version) {
  SessionState& st = states_[id];
  if (st.slot >= 0) {
    FreeSlot(st.slot);
  } else {
    AdjustResident(+1);
  }
  st.slot = slot;
  st.nonzero = true;
  SetHost(st, nullptr);
  st.version = version;
  ++st.gen;
  st.last_used = ++tick_;
  if (options_.durability == EngineOptions::Durability::kAsync) StartWrite(id);
}

void Engine::Impl::CommitCreate(Turn& t) {
  SessionInfo info;
  {
    absl::MutexLock lock(&mu_);
    --pending_creates_;
    SessionMeta& meta = InsertSessionLocked(t.owner);
    meta.info.token_count = t.input.size();
    meta.session_start_done = true;
    info = meta.info;
  }
  InstallCommitted(info.session_id, t.slot, 0);
  t.slot = -1;
  auto done = std::move(t.create_done);
  RemoveActive(&t);
  AckWhenStored(info.session_id, info, /*new_session=*/true, ExpectedVersion::Absent(),
                std::move(done));
}

void Engine::Impl::SweepIdle(SteadyClock::time_point now) {
  std::vector<std::string> expired;
  {
    absl::MutexLock lock(&mu_);
    const auto ttl = std::chrono::milliseconds(options_.idle_ttl_ms);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      auto act = last_active_.find(it->first);
      const bool idle = act != last_active_.end() && now - act->second > ttl;
      if (!it->second.info.turn_running && idle) {
        expired.push_back(it->first);
        last_active_.erase(act);
        ForgetSessionLocked(it->second);
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& id : expired) DropState(id);
  if (options_.observer != nullptr) {  // metrics hook
    for (size_t i = 0; i < expired.size(); ++i) {
      options_.observer->OnEviction(EvictionReason::kIdleTtl);
    }
  }
}

}  // namespace xlstmd::core
