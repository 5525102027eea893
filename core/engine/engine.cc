#include "core/engine/engine_impl.h"

namespace xlstmd::core {

namespace {

void RandomBytes(void* dst, size_t n) {
  auto* p = static_cast<uint8_t*>(dst);
  while (n > 0) {
    const ssize_t got = getrandom(p, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      // getrandom only fails on kernels older than 3.17; nothing sensible to fall back to.
      XLSTMD_CHECK(false && "getrandom failed");
    }
    p += got;
    n -= static_cast<size_t>(got);
  }
}

// 128 random bits as 22 characters of unpadded base64url: unguessable and safe in URLs.
std::string NewSessionId() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint8_t bytes[16];
  RandomBytes(bytes, sizeof(bytes));
  std::string id;
  id.reserve(22);
  uint32_t acc = 0;
  int bits = 0;
  for (uint8_t b : bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      id.push_back(kAlphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) id.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  return id;
}

uint64_t RandomSeed() {
  uint64_t seed = 0;
  while (seed == 0) RandomBytes(&seed, sizeof(seed));
  return seed;
}

}  // namespace

absl::Status Engine::Impl::Start() {
  XLSTMD_RETURN_IF_ERROR(model_->AllocateSlots(options_.resident_slots));
  for (int32_t s = options_.resident_slots - 1; s >= 0; --s) free_slots_.push_back(s);
  fingerprint_ = StateFingerprint::For(model_->weights_digest(), model_->state_layout());
  state_bytes_ = model_->state_layout().bytes_per_slot();
  snapshot_bytes_ = MaxSnapshotBytes(model_->state_layout());
  if (options_.state_dir.empty()) {
    // Without a disk tier every committed state must fit in slots + the host budget, even
    // when every slot holds a running turn's working copy.
    const int64_t host_states = options_.host_state_bytes / std::max<int64_t>(1, state_bytes_);
    const int64_t cap = host_states + options_.resident_slots -
                        std::min(options_.max_batch, options_.resident_slots);
    if (cap < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the host state budget of ", options_.host_state_bytes, " bytes holds no session state (",
          state_bytes_, " bytes each) beside the running turns; raise it or set a state dir"));
    }
    session_cap_ = static_cast<int32_t>(std::min<int64_t>(cap, options_.max_sessions));
  } else {
    session_cap_ = options_.max_sessions;
    SnapshotDir::Options dopts;
    dopts.max_file_bytes = snapshot_bytes_;
    XLSTMD_ASSIGN_OR_RETURN(dir_, SnapshotDir::Open(options_.state_dir, dopts));
    XLSTMD_RETURN_IF_ERROR(IndexStateDir());
  }
  if (!options_.redis_url.empty()) {
    XLSTMD_RETURN_IF_ERROR(ConnectRedis());
    // Redis is where idle states spill when there is no disk tier, so RAM does not cap the
    // session count.
    session_cap_ = options_.max_sessions;
  }
  io_ = std::make_unique<IoPool>(options_.io_threads);
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<TurnStream>> Engine::Impl::StartTurn(TurnRequest req,
                                                                    std::function<void()> wakeup) {
  const auto now = SteadyClock::now();
  if (req.request_id.size() > static_cast<size_t>(options_.max_request_id_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id is longer than ", options_.max_request_id_bytes, " bytes"));
  }
  // Another server may have advanced (or created, or deleted) the session.
  XLSTMD_RETURN_IF_ERROR(RefreshFromRedis(req.owner, req.session_id));
  // Sampling first: it needs no session and a bad request should not touch one.
  SamplingConfig sampling = std::move(req.sampling);
  if (sampling.max_tokens > options_.sampling.max_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat("max_tokens ", sampling.max_tokens,
                                                     " exceeds the server limit of ",
                                                     options_.sampling.max_tokens));
  }
  XLSTMD_RETURN_IF_ERROR(ValidateSamplingConfig(sampling, model_->vocab_size(), options_.sampling));
  if (!req.message.has_value()) {
    if (req.tokens.empty()) {
      return absl::InvalidArgumentError("the turn has no input: give a message or tokens");
    }
    for (int32_t id : req.tokens) {
      if (id < 0 || id >= model_->vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "token id ", id, " is outside the vocabulary [0, ", model_->vocab_size(), ")"));
      }
    }
    if (req.tokens.size() > static_cast<size_t>(options_.max_prompt_tokens)) {
      return PromptTooLong(req.tokens.size());
    }
  } else if (absl::Status s = ValidateUtf8(*req.message); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("message is not valid UTF-8: ", s.message()));
  }

  auto turn = std::make_unique<Turn>();
  turn->session_id = req.session_id;
  turn->owner = req.owner;
  turn->request_id = req.request_id;
  turn->enqueued = now;

  // Reserve the session: from here on it is busy, so its flags cannot change under us.
  bool session_start_done = false, reply_open = false;
  {
    absl::MutexLock lock(&mu_);
    if (draining_ || stopping_) return Unavailable();
    SessionMeta* meta = FindLocked(req.owner, req.session_id);
    if (meta == nullptr) return SessionNotFound(req.session_id);
    // A retry of a committed request must learn that it committed, whatever else changed.
    if (!req.request_id.empty()) {
      if (auto it = meta->request_versions.find(req.request_id);
          it != meta->request_versions.end()) {
        return absl::AlreadyExistsError(absl::StrCat("request_id ", req.request_id,
                                                     " was already committed as version ",
                                                     it->second, " of session ", req.session_id));
      }
    }
    if (meta->info.turn_running) {
      return absl::AbortedError(
          absl::StrCat("session ", req.session_id, " already has a turn running"));
    }
    if (req.expected_version.has_value() && *req.expected_version != meta->info.version) {
      return absl::AbortedError(absl::StrCat("session ", req.session_id, " is at version ",
                                             meta->info.version, ", not the expected ",
                                             *req.expected_version));
    }
    if (static_cast<int32_t>(queue_.size()) >= options_.queue_depth) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the turn queue is full (", options_.queue_depth, " waiting); retry later"));
    }
    meta->info.turn_running = true;
    turn->base_version = meta->info.version;
    if (options_.keep_turn_checkpoints > 0) {
      Checkpoint cp;
      cp.version = meta->info.version;
      cp.token_count = meta->info.token_count;
      cp.session_start_done = meta->session_start_done;
      cp.reply_open = meta->reply_open;
      turn->checkpoint = std::move(cp);
    }
    session_start_done = meta->session_start_done;
    reply_open = meta->reply_open;
  }

  // Tokenize outside the lock (it can take milliseconds for a long message).
  absl::Status status;
  if (req.message.has_value()) {
    turn->is_message = true;
    if (!session_start_done) {
      auto start = EncodeSessionStart(template_, *tokenizer_, "");
      if (!start.ok()) {
        status = start.status();
      } else {
        turn->input = std::move(*start);
        turn->adds_session_start = true;
      }
    }
    if (status.ok()) {
      auto ids = EncodeUserTurn(template_, *tokenizer_, *req.message, reply_open);
      if (!ids.ok()) {
        status = absl::InvalidArgumentError(ids.status().message());
      } else {
        turn->input.insert(turn->input.end(), ids->begin(), ids->end());
      }
    }
    if (status.ok()) status = CheckIdsInVocab(turn->input);
    if (status.ok() && turn->input.size() > static_cast<size_t>(options_.max_prompt_tokens)) {
      status = PromptTooLong(turn->input.size());
    }
  } else {
    turn->input = std::move(req.tokens);
  }
  turn->seed = sampling.seed != 0 ? sampling.seed : RandomSeed();
  turn->max_tokens = EffectiveMaxTokens(sampling, options_.sampling);
  turn->sampling = std::move(sampling);

  absl::MutexLock lock(&mu_);
  SessionMeta* meta = FindLocked(req.owner, req.session_id);
  XLSTMD_CHECK(meta != nullptr);  // busy sessions are never deleted
  if (status.ok() && (draining_ || stopping_)) status = Unavailable();
  if (status.ok() && static_cast<int32_t>(queue_.size()) >= options_.queue_depth) {
    status = absl::ResourceExhaustedError(
        absl::StrCat("the turn queue is full (", options_.queue_depth, " waiting); retry later"));
  }
  if (!status.ok()) {
    meta->info.turn_running = false;
    return status;
  }
  auto stream = std::make_shared<TurnStream>(options_.stream_buffer_events, std::move(wakeup));
  std::shared_ptr<Signal> signal = signal_;
  stream->set_room_callback([signal] { signal->Notify(); });
  stream->set_cancel_callback([signal] { signal->Notify(); });
  turn->stream = stream;
  queue_.push_back(std::move(turn));
  signal_->Notify();
  return stream;
}

void Engine::Impl::CreateSession(std::string owner, std::string system_prompt,
                                 std::function<void(absl::StatusOr<SessionInfo>)> done) {
  absl::Status status;
  std::vector<int32_t> ids;
  if (absl::Status s = ValidateUtf8(system_prompt); !s.ok()) {
    return done(absl::InvalidArgumentError(
        absl::StrCat("system_prompt is not valid UTF-8: ", s.message())));
  }
  if (!system_prompt.empty()) {
    auto start = EncodeSessionStart(template_, *tokenizer_, system_prompt);
    if (!start.ok()) return done(absl::InvalidArgumentError(start.status().message()));
    ids = std::move(*start);
    if (absl::Status s = CheckIdsInVocab(ids); !s.ok()) return done(s);
    if (ids.size() > static_cast<size_t>(options_.max_prompt_tokens)) {
      return done(PromptTooLong(ids.size()));
    }
  }
  // `done` runs after the lock is released: it may do real work (finish an RPC).
  absl::StatusOr<SessionInfo> result = EnqueueCreate(owner, std::move(ids), done);
  if (!result.ok() || !result->session_id.empty()) done(std::move(result));
}

// Registers a session without a prefill (returns its info), or queues the prefill of its
// session-start ids (returns an empty info; `done` is then called on completion).
absl::StatusOr<SessionInfo> Engine::Impl::EnqueueCreate(
    const std::string& owner, std::vector<int32_t> ids,
    std::function<void(absl::StatusOr<SessionInfo>)>& done) {
  absl::MutexLock lock(&mu_);
  if (draining_ || stopping_) return Unavailable();
  XLSTMD_RETURN_IF_ERROR(CanAddSessionLocked());
  if (ids.empty()) {
    // Nothing to prefill: the zero state is version 0, and the first message turn will
    // carry the session-start ids.
    SessionInfo info = InsertSessionLocked(owner).info;
    const bool sync = dir_ != nullptr && options_.durability == EngineOptions::Durability::kSync;
    if (!sync && redis_ == nullptr) return info;
    // Under sync the ack waits for the file, so a crash cannot forget an acknowledged session;
    // with Redis it waits for Redis, so another server can serve it as soon as it exists.
    commands_.push_back([this, info, done = std::move(done)]() mutable {
      AckWhenStored(info.session_id, info, /*new_session=*/true, ExpectedVersion::Absent(),
                    std::move(done));
    });
    signal_->Notify();
    return SessionInfo{};
  }
  if (static_cast<int32_t>(queue_.size()) >= options_.queue_depth) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the turn queue is full (", options_.queue_depth, " waiting); retry later"));
  }
  auto turn = std::make_unique<Turn>();
  turn->owner = owner;
  turn->input = std::move(ids);
  turn->create_only = true;
  turn->create_done = std::move(done);
  turn->enqueued = SteadyClock::now();
  ++pending_creates_;
  queue_.push_back(std::move(turn));
  signal_->Notify();
  return SessionInfo{};
}

void Engine::Impl::ForkSession(std::string owner, std::string id,
                               std::function<void(absl::StatusOr<SessionInfo>)> done) {
  if (absl::Status s = RefreshFromRedis(owner, id); !s.ok()) return done(s);
  Command([this, owner = std::move(owner), id = std::move(id), done = std::move(done)] {
    SessionInfo info;
    absl::Status refused;
    {
      absl::MutexLock lock(&mu_);
      SessionMeta* src = FindLocked(owner, id);
      if (draining_ || stopping_) {
        refused = Unavailable();
      } else if (src == nullptr) {
        refused = SessionNotFound(id);
      } else {
        refused = CanAddSessionLocked();
      }
    }
    if (!refused.ok()) return done(refused);
    {
      absl::MutexLock lock(&mu_);
      // Only the engine thread deletes sessions, and this is the engine thread.
      SessionMeta* src = FindLocked(owner, id);
      const SessionMeta copy_src = *src;
      SessionMeta& meta = InsertSessionLocked(owner);
      meta.info.version = copy_src.info.version;
      meta.info.token_count = copy_src.info.token_count;
      meta.session_start_done = copy_src.session_start_done;
      meta.reply_open = copy_src.reply_open;
      info = meta.info;
    }
    // Copy the committed state; a fork of a resident session goes to host memory rather
    // than taking a slot a turn may need.
    if (auto it = states_.find(id); it != states_.end()) {
      SessionState& copy = states_[info.session_id];
      it = states_.find(id);  // the insertion may have rehashed
      copy.version = it->second.version;
      copy.last_used = ++tick_;
      if (auto host = StateCopy(it->second)) {
        SetHost(copy, std::move(host));
        EnforceHostBudget();
      } else {
        // Only on disk: read it (off this thread); the fork is answered once it is loaded.
        return ForkFromDisk(id, info, std::move(done));
      }
    }
    AckWhenStored(info.session_id, info, /*new_session=*/true, ExpectedVersion::Absent(),
                  std::move(done));
  });
}

void Engine::Impl::RewindSession(std::string owner, std::string id, uint64_t version,
                                 std::function<void(absl::StatusOr<SessionInfo>)> done) {
  if (absl::Status s = RefreshFromRedis(owner, id); !s.ok()) return done(s);
  Command([this, owner = std::move(owner), id = std::move(id), version,
           done = std::move(done)]() mutable {
    absl::Status refused;
    SessionInfo info;
    {
      absl::MutexLock lock(&mu_);
      SessionMeta* m = FindLocked(owner, id);
      if (m == nullptr) {
        refused = SessionNotFound(id);
      } else if (m->info.turn_running) {
        refused = absl::AbortedError(absl::StrCat("session ", id, " has a turn running"));
      } else {
        info = m->info;
      }
    }
    if (!refused.ok()) return done(refused);
    if (version == info.version) return done(info);  // already there
    SessionState& st = states_[id];
    auto cp = std::find_if(st.checkpoints.begin(), st.checkpoints.end(),
                           [&](const Checkpoint& c) { return c.version == version; });
    if (cp == st.checkpoints.end()) {
      std::string kept;
      for (const Checkpoint& c : st.checkpoints)
        absl::StrAppend(&kept, kept.empty() ? "" : ", ", c.version);
      return done(absl::FailedPreconditionError(
          absl::StrCat("version ", version, " of session ", id,
                       " is not kept (kept: ", kept.empty() ? "none" : kept, "; the server keeps ",
                       options_.keep_turn_checkpoints, " earlier versions)")));
    }
    Checkpoint target = std::move(*cp);
    // The target and everything newer leave the checkpoint list; older ones stay.
    const size_t drop = st.checkpoints.end() - cp;
    st.checkpoints.erase(cp, st.checkpoints.end());
    host_bytes_ -= state_bytes_ * static_cast<int64_t>(drop);
    if (st.slot >= 0) {
      FreeSlot(st.slot);
      st.slot = -1;
      AdjustResident(-1);
    }
    SetHost(st, std::move(target.state));
    st.version = target.version;
    st.last_used = ++tick_;
    {
      absl::MutexLock lock(&mu_);
      SessionMeta* m = FindLocked(owner, id);
      m->info.version = target.version;
      m->info.token_count = target.token_count;
      m->info.updated_unix_ms = UnixMs();
      m->session_start_done = target.session_start_done;
      m->reply_open = target.reply_open;
      // Requests committed after the target are undone, so they may run again.
      std::deque<std::string> order;
      for (const std::string& r : m->request_order) {
        if (m->request_versions[r] <= target.version) {
          order.push_back(r);
        } else {
          m->request_versions.erase(r);
        }
      }
      m->request_order = std::move(order);
      last_active_[id] = SteadyClock::now();
      info = m->info;
    }
    // The file may hold a newer version with the same number after a later commit, so
    // it is rewritten whatever the durability mode (it is no longer this state).
    ++st.gen;
    EnforceHostBudget();
    // Versions go backwards here, which a version check cannot express: overwrite.
    AckWhenStored(id, info, /*new_session=*/false, ExpectedVersion::Any(), std::move(done));
  });
}

void Engine::Impl::ExportSession(std::string owner, std::string id,
                                 std::function<void(absl::StatusOr<std::string>)> done) {
  if (absl::Status s = RefreshFromRedis(owner, id); !s.ok()) return done(s);
  Command([this, owner = std::move(owner), id = std::move(id), done = std::move(done)]() mutable {
    SnapshotMeta meta;
    absl::Status refused;
    {
      absl::MutexLock lock(&mu_);
      SessionMeta* m = FindLocked(owner, id);
      if (m == nullptr) {
        refused = SessionNotFound(id);
      } else if (m->info.turn_running) {
        refused = absl::AbortedError(absl::StrCat(
            "session ", id, " has a turn running; export it when the turn has finished"));
      } else {
        meta = MetaLocked(*m);
      }
    }
    if (!refused.ok()) return done(refused);
    auto it = states_.find(id);
    std::shared_ptr<const std::vector<float>> state =
        it == states_.end() ? std::make_shared<std::vector<float>>(FloatsPerSlot(), 0.0f)
                            : StateCopy(it->second);
    io_->Submit([this, id, meta = std::move(meta), state, done = std::move(done)] {
      if (state) {
        done(EncodeSnapshot(meta, fingerprint_, model_->state_layout(), *state));
        return;
      }
      // Only on disk: read and verify it in full (a corrupt file is quarantined, never
      // handed out), then encode it with the current metadata.
      std::vector<float> disk_state(FloatsPerSlot());
      absl::Status status = ReadStoredState(id, meta.version, absl::MakeSpan(disk_state));
      if (!status.ok()) return done(status);
      done(EncodeSnapshot(meta, fingerprint_, model_->state_layout(), disk_state));
    });
  });
}

void Engine::Impl::ImportSession(std::string owner, std::string snapshot,
                                 std::function<void(absl::StatusOr<SessionInfo>)> done) {
  if (snapshot.size() > snapshot_bytes_) {
    return done(absl::ResourceExhaustedError(absl::StrCat("the snapshot is ", snapshot.size(),
                                                          " bytes; this model's are at most ",
                                                          snapshot_bytes_)));
  }
  auto state = std::make_shared<std::vector<float>>(FloatsPerSlot());
  absl::StatusOr<SnapshotMeta> meta =
      DecodeSnapshotInto(snapshot, fingerprint_, model_->state_layout(), absl::MakeSpan(*state));
  if (!meta.ok()) {
    // A corrupt upload is the caller's bad argument; a foreign model stays a precondition.
    if (absl::IsDataLoss(meta.status())) {
      return done(absl::InvalidArgumentError(
          absl::StrCat("the snapshot is corrupt: ", meta.status().message())));
    }
    return done(meta.status());
  }
  Command([this, owner = std::move(owner), meta = *std::move(meta), state,
           done = std::move(done)]() mutable {
    SessionInfo info;
    absl::Status refused;
    {
      absl::MutexLock lock(&mu_);
      refused = draining_ || stopping_ ? Unavailable() : CanAddSessionLocked();
    }
    if (!refused.ok()) return done(refused);
    {
      absl::MutexLock lock(&mu_);
      SessionMeta& m = InsertSessionLocked(owner);
      m.info.version = meta.version;
      m.info.token_count = meta.token_count;
      m.session_start_done = (meta.flags & kFlagSessionStartDone) != 0;
      m.reply_open = (meta.flags & kFlagReplyOpen) != 0;
      info = m.info;
    }
    SessionState& st = states_[info.session_id];
    st.version = info.version;
    st.last_used = ++tick_;
    SetHost(st, std::move(state));
    EnforceHostBudget();
    AckWhenStored(info.session_id, info, /*new_session=*/true, ExpectedVersion::Absent(),
                  std::move(done));
  });
}

void Engine::Impl::DeleteSession(std::string owner, std::string id,
                                 std::function<void(absl::Status)> done) {
  if (absl::Status s = RefreshFromRedis(owner, id); !s.ok()) return done(s);
  Command([this, owner = std::move(owner), id = std::move(id), done = std::move(done)]() mutable {
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      SessionMeta* meta = FindLocked(owner, id);
      if (meta == nullptr) {
        status = SessionNotFound(id);
      } else if (meta->info.turn_running) {
        status = absl::AbortedError(
            absl::StrCat("session ", id, " has a turn running; cancel it first"));
      } else if (redis_ != nullptr) {
        meta->info.turn_running = true;  // busy while Redis forgets it
      }
    }
    if (!status.ok()) return done(status);
    if (redis_ == nullptr) return EraseSession(id, std::move(done));
    // Redis first: once it is gone there, no server can adopt it back; if that fails, the
    // session is left exactly as it was.
    io_->Submit([this, id, done = std::move(done)]() mutable {
      absl::Status s = DeleteShared(id);
      PostCompletion([this, id, s, done = std::move(done)]() mutable {
        if (s.ok()) return EraseSession(id, std::move(done));
        {
          absl::MutexLock lock(&mu_);
          if (auto m = sessions_.find(id); m != sessions_.end())
            m->second.info.turn_running = false;
        }
        done(s);
      });
    });
  });
}

void Engine::Impl::EraseSession(const std::string& id, std::function<void(absl::Status)> done) {
  {
    absl::MutexLock lock(&mu_);
    if (auto m = sessions_.find(id); m != sessions_.end()) {
      ForgetSessionLocked(m->second);
      sessions_.erase(m);
    }
    last_active_.erase(id);
  }
  DropState(id);
  if (dir_ == nullptr) return done(absl::OkStatus());
  // Answer only once the file is gone, so a crash cannot bring the session back.
  io_->Submit([this, id, done = std::move(done)] {
    absl::Status s = dir_->Remove(id);
    if (!s.ok() && !absl::IsNotFound(s)) {
      spdlog::warn("could not remove the snapshot of deleted session {}: {}", base::LogSessionId(id), base::LogStatus(s, id));
    }
    done(absl::OkStatus());
  });
}

absl::StatusOr<SessionInfo> Engine::Impl::GetSession(const std::string& owner,
                                                     const std::string& id) {
  XLSTMD_RETURN_IF_ERROR(RefreshFromRedis(owner, id));
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.info.owner != owner) return SessionNotFound(id);
  return it->second.info;
}

std::vector<SessionInfo> Engine::Impl::ListSessions(const std::string& owner,
                                                    const std::string& after_id,
                                                    int32_t limit) const {
  std::vector<SessionInfo> out;
  absl::MutexLock lock(&mu_);
  for (auto it = sessions_.upper_bound(after_id);
       it != sessions_.end() && static_cast<int32_t>(out.size()) < limit; ++it) {
    if (it->second.info.owner == owner) out.push_back(it->second.info);
  }
  return out;
}

void Engine::Impl::BeginDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool Engine::Impl::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

bool Engine::Impl::WaitIdle(int64_t timeout_ms) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return queue_.empty() && running_turns_ == 0 && pending_creates_ == 0;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), absl::Milliseconds(timeout_ms));
}

void Engine::Impl::CancelAll(absl::Status reason) {
  {
    absl::MutexLock lock(&mu_);
    cancel_all_ = std::move(reason);
  }
  signal_->Notify();
}

EngineStats Engine::Impl::stats() const {
  absl::MutexLock lock(&mu_);
  EngineStats s;
  s.queued_turns = static_cast<int32_t>(queue_.size());
  s.running_turns = running_turns_;
  s.sessions = static_cast<int32_t>(sessions_.size());
  s.resident_sessions = resident_sessions_;
  s.steps = steps_;
  s.generated_tokens = generated_tokens_;
  s.host_sessions = host_sessions_.load(std::memory_order_relaxed);
  s.host_state_bytes = host_bytes_.load(std::memory_order_relaxed);
  s.snapshot_writes = snapshot_writes_;
  s.snapshot_write_failures = snapshot_write_failures_;
  s.restores_from_disk = restores_from_disk_;
  s.restores_from_redis = restores_from_redis_;
  s.redis_enabled = redis_ != nullptr;
  s.redis_sessions = redis_sessions_;
  s.redis_state_bytes =
      static_cast<uint64_t>(redis_sessions_) * static_cast<uint64_t>(state_bytes_);
  if (redis_ != nullptr) {
    const RedisStoreStats r = redis_->Stats();
    s.redis_writes = r.puts;
    s.redis_write_conflicts = r.put_conflicts;
    s.redis_failures = r.unavailable + r.data_loss;
  }
  if (dir_ != nullptr) {
    const SnapshotDirStats d = dir_->Stats();
    s.disk_sessions = d.files;
    s.disk_state_bytes = d.bytes;
    for (const auto& [reason, n] : d.quarantined_by_reason) s.quarantined_snapshots += n;
  }
  return s;
}

absl::Status Engine::Impl::Unavailable() {
  return absl::UnavailableError("the server is shutting down and admits no new work");
}

absl::Status Engine::Impl::SessionNotFound(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("session '", id, "' not found"));
}

absl::Status Engine::Impl::PromptTooLong(size_t n) const {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the turn's input is ", n, " tokens, over the limit of ", options_.max_prompt_tokens));
}

absl::Status Engine::Impl::CheckIdsInVocab(const std::vector<int32_t>& ids) const {
  for (int32_t id : ids) {
    if (id < 0 || id >= model_->vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the tokenizer produced id ", id, ", outside the model's vocabulary of ",
                       model_->vocab_size(), "; the tokenizer does not match the model"));
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::Impl::CanAddSessionLocked() const {
  const int64_t n = static_cast<int64_t>(sessions_.size()) + pending_creates_;
  if (n >= options_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server holds its maximum of ", options_.max_sessions, " sessions"));
  }
  if (n >= session_cap_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server holds ", session_cap_,
                     " sessions, all that fit in its slots and host "
                     "state budget (no state dir to spill to)"));
  }
  if (dir_ != nullptr && options_.disk_state_bytes > 0 &&
      static_cast<uint64_t>(n + 1) * snapshot_bytes_ >
          static_cast<uint64_t>(options_.disk_state_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat("the disk state budget of ",
                                                     options_.disk_state_bytes, " bytes is full (",
                                                     snapshot_bytes_, " bytes per session)"));
  }
  return absl::OkStatus();
}

SessionMeta* Engine::Impl::FindLocked(const std::string& owner, const std::string& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.info.owner != owner) return nullptr;
  return &it->second;
}

SessionMeta& Engine::Impl::InsertSessionLocked(const std::string& owner) {
  std::string id = NewSessionId();
  while (sessions_.count(id) != 0) id = NewSessionId();
  SessionMeta& meta = sessions_[id];
  meta.info.session_id = id;
  meta.info.owner = owner;
  meta.info.created_unix_ms = meta.info.updated_unix_ms = UnixMs();
  last_active_[id] = SteadyClock::now();
  return meta;
}

void Engine::Impl::Command(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    commands_.push_back(std::move(fn));
  }
  signal_->Notify();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<XlstmModel> model,
                                                       std::unique_ptr<Tokenizer> tokenizer,
                                                       ChatTemplate chat_template,
                                                       const EngineOptions& options) {
  if (model == nullptr || tokenizer == nullptr) {
    return absl::InvalidArgumentError("Engine::Create needs a model and a tokenizer");
  }
  auto positive = [](int64_t v, const char* name) -> absl::Status {
    if (v < 1) return absl::InvalidArgumentError(absl::StrCat(name, " must be >= 1, got ", v));
    return absl::OkStatus();
  };
  for (auto [v, name] : {std::pair<int64_t, const char*>{options.resident_slots, "resident_slots"},
                         {options.max_batch, "max_batch"},
                         {options.prefill_token_budget, "prefill_token_budget"},
                         {options.prefill_piece, "prefill_piece"},
                         {options.prefill_chunk_size, "prefill_chunk_size"},
                         {options.queue_depth, "queue_depth"},
                         {options.max_prompt_tokens, "max_prompt_tokens"},
                         {options.max_sessions, "max_sessions"},
                         {options.stream_buffer_events, "stream_buffer_events"}}) {
    if (absl::Status s = positive(v, name); !s.ok()) return s;
  }
  if (options.idle_ttl_ms < 0) return absl::InvalidArgumentError("idle_ttl_ms must be >= 0");
  if (options.max_turn_ms < 0) return absl::InvalidArgumentError("max_turn_ms must be >= 0");
  if (options.io_threads < 1) return absl::InvalidArgumentError("io_threads must be >= 1");
  if (options.keep_turn_checkpoints < 0) {
    return absl::InvalidArgumentError("keep_turn_checkpoints must be >= 0");
  }
  if (options.host_state_bytes < 0 || options.disk_state_bytes < 0) {
    return absl::InvalidArgumentError("state byte budgets must be >= 0");
  }
  for (int32_t id : chat_template.stop_token_ids) {
    if (id < 0 || id >= model->vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat template stop token id ", id, " is outside the model's vocabulary"));
    }
  }
  auto impl = std::make_unique<Impl>(std::move(model), std::move(tokenizer),
                                     std::move(chat_template), options);
  if (absl::Status s = impl->Start(); !s.ok()) return s;
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

absl::StatusOr<std::shared_ptr<TurnStream>> Engine::StartTurn(TurnRequest request,
                                                              std::function<void()> wakeup) {
  return impl_->StartTurn(std::move(request), std::move(wakeup));
}
void Engine::CreateSession(std::string owner, std::string system_prompt,
                           std::function<void(absl::StatusOr<SessionInfo>)> done) {
  impl_->CreateSession(std::move(owner), std::move(system_prompt), std::move(done));
}
void Engine::ForkSession(std::string owner, std::string id,
                         std::function<void(absl::StatusOr<SessionInfo>)> done) {
  impl_->ForkSession(std::move(owner), std::move(id), std::move(done));
}
void Engine::DeleteSession(std::string owner, std::string id,
                           std::function<void(absl::Status)> done) {
  impl_->DeleteSession(std::move(owner), std::move(id), std::move(done));
}
absl::StatusOr<SessionInfo> Engine::GetSession(const std::string& owner,
                                               const std::string& id) const {
  return impl_->GetSession(owner, id);
}
std::vector<SessionInfo> Engine::ListSessions(const std::string& owner, const std::string& after_id,
                                              int32_t limit) const {
  return impl_->ListSessions(owner, after_id, limit);
}
void Engine::BeginDrain() { impl_->BeginDrain(); }
bool Engine::draining() const { return impl_->draining(); }
bool Engine::WaitIdle(int64_t timeout_ms) { return impl_->WaitIdle(timeout_ms); }
void Engine::CancelAll(absl::Status reason) { impl_->CancelAll(std::move(reason)); }
const XlstmModel& Engine::model() const { return impl_->model(); }
const Tokenizer& Engine::tokenizer() const { return impl_->tokenizer(); }
const ChatTemplate& Engine::chat_template() const { return impl_->chat_template(); }
const EngineOptions& Engine::options() const { return impl_->options(); }
EngineStats Engine::stats() const { return impl_->stats(); }
void Engine::ExportSession(std::string owner, std::string id,
                           std::function<void(absl::StatusOr<std::string>)> done) {
  impl_->ExportSession(std::move(owner), std::move(id), std::move(done));
}
void Engine::ImportSession(std::string owner, std::string snapshot,
                           std::function<void(absl::StatusOr<SessionInfo>)> done) {
  impl_->ImportSession(std::move(owner), std::move(snapshot), std::move(done));
}
uint64_t Engine::max_snapshot_bytes() const { return impl_->max_snapshot_bytes(); }
void Engine::RewindSession(std::string owner, std::string id, uint64_t version,
                           std::function<void(absl::StatusOr<SessionInfo>)> done) {
  impl_->RewindSession(std::move(owner), std::move(id), version, std::move(done));
}
bool Engine::FlushToDisk(int64_t timeout_ms) { return impl_->FlushToDisk(timeout_ms); }

}  // namespace xlstmd::core
