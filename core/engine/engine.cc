// The Engine facade: option checks, wiring of the parts, turn admission (validation and
// tokenization on the caller's thread) and stats.
#include "core/engine/engine_impl.h"

#include <xxhash.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/base/random.h"
#include "core/base/retry.h"
#include "core/base/status_macros.h"
#include "core/base/utf8.h"

namespace xlstmd::core {
namespace {

// RFC 4122's text form, any version: 8-4-4-4-12 hex digits.
bool IsUuid(absl::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !absl::ascii_isxdigit(static_cast<unsigned char>(s[i]))) {
      return false;
    }
  }
  return true;
}

// What makes two requests with one request_id the same request (AIP-155: a reused id with a
// different body is an error, not a replay): the input and every sampling field, hashed with
// a fixed function so the fingerprint means the same after a restart or on another replica.
uint64_t RequestFingerprint(const TurnRequest& req) {
  std::string b;
  auto num = [&b](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  auto str = [&](const std::string& s) {
    num(static_cast<uint64_t>(s.size()));
    b += s;
  };
  num(static_cast<uint8_t>(req.message.has_value()));
  if (req.message.has_value()) str(*req.message);
  num(static_cast<uint64_t>(req.tokens.size()));
  for (int32_t id : req.tokens) num(id);
  const SamplingConfig& s = req.sampling;
  num(s.temperature);
  num(s.top_k);
  num(s.top_p);
  num(s.min_p);
  num(s.repetition_penalty);
  num(s.seed);
  num(s.max_tokens);
  num(s.logprobs);
  num(static_cast<uint64_t>(s.stop.size()));
  for (const std::string& stop : s.stop) str(stop);
  num(static_cast<uint64_t>(s.stop_token_ids.size()));
  for (int32_t id : s.stop_token_ids) num(id);
  // Not expected_version: a client whose reply was lost re-reads the session and retries
  // with the version it now sees; that retry must still learn that it committed.
  const uint64_t h = XXH3_64bits(b.data(), b.size());
  return h == 0 ? 1 : h;  // 0 means "unknown"
}

}  // namespace

Engine::Impl::Impl(std::unique_ptr<XlstmModel> model, std::unique_ptr<Tokenizer> tokenizer,
                   ChatTemplate chat_template, const EngineOptions& options)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      template_(std::move(chat_template)),
      options_(options),
      clock_(options.clock != nullptr ? options.clock : &RealClock()),
      adapter_(model_.get()) {}

Engine::Impl::~Impl() {
  if (scheduler_ != nullptr) scheduler_->Stop();
  // The model holds the sources of restores in flight; their deleters return them to the
  // pool through the adapter, both destroyed before the model.
  if (model_ != nullptr) model_->FinishUploads();
}

absl::Status Engine::Impl::Start() {
  XLSTMD_RETURN_IF_ERROR(model_->AllocateSlots(options_.resident_slots));
  // The forward buffers are sized once, for the largest call the scheduler makes: a decode
  // step of max_batch rows, or prompt pieces within the token budget (at least one piece).
  const int64_t forward_rows = std::max<int64_t>(
      options_.max_batch, std::max(options_.prefill_token_budget, options_.prefill_piece));
  XLSTMD_RETURN_IF_ERROR(model_->Reserve(forward_rows, options_.max_batch));
  state_bytes_ = model_->state_layout().bytes_per_slot();
  host_states_ = std::make_unique<HostStatePool>(adapter_.floats_per_slot(),
                                                 options_.pinned_state_bytes, &adapter_);
  snapshot_bytes_ = MaxSnapshotBytes(model_->state_layout());
  SessionIndex::Limits limits;
  limits.max_sessions = options_.max_sessions;
  limits.tenant_max_sessions = options_.tenant_max_sessions;
  limits.tenant_quotas = options_.tenant_quotas;
  limits.snapshot_bytes = snapshot_bytes_;
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
    // Redis is where idle states spill when there is no disk tier: RAM does not cap then.
    if (options_.redis_url.empty()) {
      limits.ram_cap = static_cast<int32_t>(std::min<int64_t>(cap, options_.max_sessions));
    }
  } else {
    limits.disk_budget_bytes = static_cast<uint64_t>(options_.disk_state_bytes);
  }
  index_ = std::make_unique<SessionIndex>(clock_, limits);
  pool_ = std::make_unique<SlotPool>(options_.resident_slots);
  const Scheduler::Options sopts{.max_batch = options_.max_batch,
                                 .slots = options_.resident_slots,
                                 .prefill_token_budget = options_.prefill_token_budget,
                                 .prefill_piece = options_.prefill_piece,
                                 .prefill_chunk_size = options_.prefill_chunk_size,
                                 .queue_depth = options_.queue_depth,
                                 .tenant_max_running = options_.tenant_max_running,
                                 .tenant_max_queued = options_.tenant_max_queued,
                                 .tenant_quotas = options_.tenant_quotas,
                                 .max_turn_ms = options_.max_turn_ms,
                                 .stalled_stream_ms = options_.stalled_stream_ms,
                                 .idle_ttl_ms = options_.idle_ttl_ms,
                                 .sampling = options_.sampling,
                                 .observer = options_.observer};
  scheduler_ = std::make_unique<Scheduler>(sopts, &adapter_, index_.get(), tokenizer_.get(),
                                           &template_, clock_);
  const TierOptions topts{.state_dir = options_.state_dir,
                          .durability = options_.durability,
                          .host_state_bytes = options_.host_state_bytes,
                          .io_threads = options_.io_threads,
                          .rewind_points = options_.keep_turn_checkpoints,
                          .redis_url = options_.redis_url,
                          .redis_timeout_ms = options_.redis_timeout_ms,
                          .redis_connections = options_.redis_connections,
                          .idle_ttl_ms = options_.idle_ttl_ms,
                          .observer = options_.observer,
                          .state_pool = host_states_.get()};
  StateCodec codec;
  codec.fingerprint = StateFingerprint::For(model_->weights_digest(), model_->state_layout());
  codec.layout = &model_->state_layout();
  codec.snapshot_bytes = snapshot_bytes_;
  Scheduler* scheduler = scheduler_.get();
  XLSTMD_ASSIGN_OR_RETURN(
      tiers_, StateTiers::Create(topts, std::move(codec), &adapter_, pool_.get(), index_.get(),
                                 clock_, [scheduler](std::function<void()> fn) {
                                   scheduler->Post(std::move(fn));
                                 }));
  scheduler_->Start(tiers_.get());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Turn>> Engine::Impl::NewTurn(TurnRequest& req) const {
  if (req.request_id.size() > static_cast<size_t>(options_.max_request_id_bytes)) {
    return base::FieldError("request_id", absl::StrCat("request_id is longer than ",
                                                       options_.max_request_id_bytes, " bytes"));
  }
  if (!req.request_id.empty() && !IsUuid(req.request_id)) {
    return base::FieldError("request_id",
                            "request_id must be a UUID (8-4-4-4-12 hex digits, e.g. from "
                            "uuid4()), so ids from different clients never collide");
  }
  const uint64_t fingerprint = req.request_id.empty() ? 0 : RequestFingerprint(req);
  // Sampling first: it needs no session and a bad request should not touch one.
  SamplingConfig& sampling = req.sampling;
  if (sampling.max_tokens > options_.sampling.max_tokens) {
    return base::FieldError("sampling.max_tokens",
                            absl::StrCat("max_tokens ", sampling.max_tokens,
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
        return base::FieldError("tokens.ids", absl::StrCat("token id ", id,
                                                           " is outside the vocabulary [0, ",
                                                           model_->vocab_size(), ")"));
      }
    }
    if (req.tokens.size() > static_cast<size_t>(options_.max_prompt_tokens)) {
      return PromptTooLong(req.tokens.size(), "tokens.ids");
    }
  } else if (absl::StripAsciiWhitespace(*req.message).empty()) {
    return base::FieldError("message", "message is empty or only whitespace");
  } else if (absl::Status s = ValidateUtf8(*req.message); !s.ok()) {
    return base::FieldError("message", absl::StrCat("message is not valid UTF-8: ", s.message()));
  }
  auto turn = std::make_unique<Turn>();
  turn->session_id = req.session_id;
  turn->owner = req.owner;
  turn->request_id = req.request_id;
  turn->request_fingerprint = fingerprint;
  turn->enqueued = clock_->Now();
  turn->seed = sampling.seed != 0 ? sampling.seed : base::RandomNonZeroU64();
  turn->max_tokens = EffectiveMaxTokens(sampling, options_.sampling);
  turn->sampling = std::move(sampling);
  return turn;
}

absl::Status Engine::Impl::EncodeMessage(const std::string& message, const SessionMeta& meta,
                                         Turn& turn) const {
  turn.is_message = true;
  if (!meta.session_start_done) {
    XLSTMD_ASSIGN_OR_RETURN(turn.input, EncodeSessionStart(template_, *tokenizer_, ""));
    turn.adds_session_start = true;
  }
  auto ids = EncodeUserTurn(template_, *tokenizer_, message, meta.reply_open);
  if (!ids.ok()) return absl::InvalidArgumentError(ids.status().message());
  turn.input.insert(turn.input.end(), ids->begin(), ids->end());
  XLSTMD_RETURN_IF_ERROR(CheckIdsInVocab(turn.input));
  if (turn.input.size() > static_cast<size_t>(options_.max_prompt_tokens)) {
    return PromptTooLong(turn.input.size(), "message");
  }
  return absl::OkStatus();
}

absl::Status Engine::Impl::ClaimAndQueue(TurnRequest req, std::unique_ptr<Turn> turn,
                                         bool reserved) {
  absl::Status status = reserved || !scheduler_->draining() ? absl::OkStatus() : ServerUnavailable();
  // From here on the session is busy, so its flags cannot change under us.
  absl::StatusOr<SessionMeta> meta =
      status.ok() ? index_->ClaimForTurn(req.owner, req.session_id,
                                         {req.request_id, req.expected_version,
                                          turn->request_fingerprint})
                  : absl::StatusOr<SessionMeta>(status);
  if (!meta.ok()) {
    if (reserved) scheduler_->CancelReservation();
    return meta.status();
  }
  turn->base_version = meta->info.version;
  if (options_.keep_turn_checkpoints > 0) turn->rewind_point = meta->ToRewindPoint();
  status = scheduler_->CheckAdmits(reserved);
  if (status.ok()) {
    // Tokenizing can take milliseconds for a long message: no lock is held.
    if (req.message.has_value()) {
      status = EncodeMessage(*req.message, *meta, *turn);
    } else {
      turn->input = std::move(req.tokens);
    }
  }
  if (status.ok()) {
    status = scheduler_->Enqueue(turn, reserved);
  } else if (reserved) {
    scheduler_->CancelReservation();
  }
  if (!status.ok()) index_->Release(req.session_id);
  return status;
}

absl::StatusOr<std::shared_ptr<TurnStream>> Engine::Impl::StartTurn(TurnRequest req,
                                                                    std::function<void()> wakeup) {
  XLSTMD_ASSIGN_OR_RETURN(std::unique_ptr<Turn> turn, NewTurn(req));
  // With Redis the turn is accepted before its session checks: reserve its admission (only a
  // drain refuses it here; a full queue is reported after the session checks, so a retry of a
  // committed request still learns it committed).
  if (tiers_->has_redis()) XLSTMD_RETURN_IF_ERROR(scheduler_->Reserve());
  auto stream = std::make_shared<TurnStream>(options_.stream_buffer_events, std::move(wakeup));
  std::shared_ptr<Signal> signal = scheduler_->signal();
  stream->set_room_callback([signal] { signal->Notify(); });
  stream->set_cancel_callback([signal] { signal->Notify(); });
  turn->stream = stream;
  if (!tiers_->has_redis()) {
    XLSTMD_RETURN_IF_ERROR(ClaimAndQueue(std::move(req), std::move(turn), /*reserved=*/false));
    return stream;
  }
  // Another server may have advanced (or created, or deleted) the session: look in Redis on
  // the I/O pool first; the session checks follow there, and their errors close the stream.
  const std::string owner = req.owner, id = req.session_id;
  auto pending = std::make_shared<std::pair<TurnRequest, std::unique_ptr<Turn>>>(
      std::move(req), std::move(turn));
  tiers_->Refresh(owner, id, [this, pending](absl::Status s) {
    if (s.ok() && absl::Now() > pending->first.deadline) {
      s = absl::DeadlineExceededError("the session lookup in Redis outlasted the deadline");
    }
    if (!s.ok()) {
      scheduler_->CancelReservation();
      return pending->second->stream->Close(s);
    }
    tiers_->SubmitLookup([this, pending] {
      std::shared_ptr<TurnStream> stream = pending->second->stream;
      absl::Status q = ClaimAndQueue(std::move(pending->first), std::move(pending->second),
                                     /*reserved=*/true);
      if (!q.ok()) stream->Close(q);
    });
  });
  return stream;
}

void Engine::Impl::CreateSession(std::string owner, std::string system_prompt, InfoDone done) {
  if (absl::Status s = ValidateUtf8(system_prompt); !s.ok()) {
    return done(absl::InvalidArgumentError(
        absl::StrCat("system_prompt is not valid UTF-8: ", s.message())));
  }
  std::vector<int32_t> ids;
  if (!system_prompt.empty()) {
    auto start = EncodeSessionStart(template_, *tokenizer_, system_prompt);
    if (!start.ok()) return done(absl::InvalidArgumentError(start.status().message()));
    ids = std::move(*start);
    if (absl::Status s = CheckIdsInVocab(ids); !s.ok()) return done(s);
    if (ids.size() > static_cast<size_t>(options_.max_prompt_tokens)) {
      return done(PromptTooLong(ids.size(), "system_prompt"));
    }
  }
  if (scheduler_->draining()) return done(ServerUnavailable());
  if (ids.empty()) {
    // Nothing to prefill: the zero state is version 0, and the first message turn will carry
    // the session-start ids.
    absl::StatusOr<SessionInfo> info = index_->Create(owner);
    if (!info.ok() || (!tiers_->sync_commits() && !tiers_->has_redis())) return done(info);
    // Under sync the ack waits for the file, so a crash cannot forget an acknowledged session;
    // with Redis it waits for Redis, so another server can serve it as soon as it exists.
    scheduler_->Post([this, info = *info, done = std::move(done)]() mutable {
      tiers_->AckWhenStored(info.session_id, info, /*new_session=*/true,
                            ExpectedVersion::Absent(), std::move(done));
    });
    return;
  }
  if (absl::Status s = index_->ReserveCreate(owner); !s.ok()) return done(s);
  auto turn = std::make_unique<Turn>();
  turn->owner = owner;
  turn->input = std::move(ids);
  turn->create_only = true;
  turn->create_done = std::move(done);
  turn->enqueued = clock_->Now();
  if (absl::Status s = scheduler_->Enqueue(turn); !s.ok()) {
    index_->CancelCreate(owner);
    turn->create_done(s);
  }
}

absl::StatusOr<SessionInfo> Engine::Impl::GetSession(const std::string& owner,
                                                     const std::string& id) {
  if (tiers_->has_redis()) {
    // Documented as blocking: the lookup runs on the I/O pool, bounded here.
    struct Wait {
      absl::Notification done;
      absl::Status status;
    };
    auto wait = std::make_shared<Wait>();
    tiers_->Refresh(owner, id, [wait](absl::Status s) {
      wait->status = std::move(s);
      wait->done.Notify();
    });
    const absl::Duration limit = absl::Milliseconds(4 * options_.redis_timeout_ms + 1000);
    if (!wait->done.WaitForNotificationWithTimeout(limit)) {
      return absl::UnavailableError("the server is busy or shutting down; retry");
    }
    XLSTMD_RETURN_IF_ERROR(wait->status);
  }
  return index_->Get(owner, id);
}

void Engine::Impl::LookupSession(const std::string& owner, const std::string& id,
                                 InfoDone done) {
  if (!tiers_->has_redis()) return done(index_->Get(owner, id));
  // `done` converts and finishes an RPC: it runs on the lookup pool, not the engine thread.
  tiers_->Refresh(owner, id, [this, owner, id, done = std::move(done)](absl::Status s) mutable {
    tiers_->SubmitLookup([this, owner, id, s, done = std::move(done)] {
      done(s.ok() ? index_->Get(owner, id) : absl::StatusOr<SessionInfo>(s));
    });
  });
}

bool Engine::Impl::FlushToDisk(int64_t timeout_ms) {
  if (!tiers_->has_disk()) return true;
  const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  auto queued = std::make_shared<absl::Notification>();
  scheduler_->Post([this, queued] {
    tiers_->StartFlush();
    queued->Notify();
  });
  if (!queued->WaitForNotificationWithDeadline(deadline)) return false;
  return tiers_->WaitWritesDone(deadline);
}

EngineStats Engine::Impl::stats() const {
  EngineStats s;
  s.queued_turns = scheduler_->queued();
  s.running_turns = scheduler_->running();
  s.sessions = index_->size();
  s.resident_sessions = pool_->resident_count();
  s.steps = scheduler_->steps();
  s.ms_since_engine_loop = scheduler_->SinceLastLoop().count();
  s.device_failed = scheduler_->DeviceFailed();
  s.generated_tokens = scheduler_->generated_tokens();
  const TierStats t = tiers_->Stats();
  s.host_sessions = t.host_sessions;
  s.host_state_bytes = t.host_state_bytes;
  s.snapshot_writes = t.snapshot_writes;
  s.snapshot_write_failures = t.snapshot_write_failures;
  s.restores_from_disk = t.restores_from_disk;
  s.restores_from_redis = t.restores_from_redis;
  if (host_states_ != nullptr) {
    const HostStatePoolStats h = host_states_->Stats();
    s.pinned_state_bytes = h.pinned_bytes;
    s.pinned_state_fallbacks = h.pageable_fallbacks;
  }
  s.redis_enabled = tiers_->has_redis();
  s.redis_sessions = index_->redis_sessions();
  s.redis_state_bytes = static_cast<uint64_t>(s.redis_sessions) * static_cast<uint64_t>(state_bytes_);
  if (const RedisStore* redis = tiers_->redis()) {
    const RedisStoreStats r = redis->Stats();
    s.redis_writes = r.puts;
    s.redis_write_conflicts = r.put_conflicts;
    s.redis_failures = r.unavailable + r.data_loss;
  }
  if (const SnapshotDir* dir = tiers_->dir()) {
    const SnapshotDirStats d = dir->Stats();
    s.disk_sessions = d.files;
    s.disk_state_bytes = d.bytes;
    for (const auto& [reason, n] : d.quarantined_by_reason) s.quarantined_snapshots += n;
  }
  return s;
}

// INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: the same request can never succeed, so clients and
// retry policies must not treat it as load (RELIABILITY.md's status table).
absl::Status Engine::Impl::PromptTooLong(size_t n, absl::string_view field) const {
  return base::FieldError(field, absl::StrCat("the turn's input is ", n,
                                              " tokens, over the limit of ",
                                              options_.max_prompt_tokens));
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

}  // namespace xlstmd::core
