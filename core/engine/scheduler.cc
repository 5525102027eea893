// The scheduler loop: admission, prefill pieces, batched decode, sampling and streaming.
#include "core/engine/scheduler.h"

#include <algorithm>
#include <utility>

#include "core/base/retry.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace xlstmd::core {

void Signal::Notify() {
  absl::MutexLock lock(&mu_);
  dirty_ = true;
  cv_.SignalAll();
}

void Signal::Wait(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (!dirty_) cv_.WaitWithTimeout(&mu_, timeout);
  dirty_ = false;
}

namespace {
// Helper threads beside the scheduler's own: `threads` - 1, or for -1 one per core beyond the
// first, at most 15.
int SamplingHelpers(int32_t threads) {
  if (threads < 0) {
    threads = static_cast<int32_t>(std::min(16u, std::max(1u, std::thread::hardware_concurrency())));
  }
  return std::max(0, threads - 1);
}

// Blocks of plain compares (x != x only for NaN) that the compiler vectorises; a NaN is rare,
// so only a block's end looks at the result.
bool HasNaN(absl::Span<const float> row) {
  constexpr size_t kBlock = 256;
  for (size_t i = 0; i < row.size(); i += kBlock) {
    const size_t end = std::min(row.size(), i + kBlock);
    bool nan = false;
    for (size_t j = i; j < end; ++j) nan |= row[j] != row[j];
    if (nan) return true;
  }
  return false;
}
}  // namespace

Scheduler::Scheduler(const Options& options, ModelRunner* model, SessionIndex* index,
                     const Tokenizer* tokenizer, const ChatTemplate* chat_template, Clock* clock)
    : options_(options),
      model_(model),
      index_(index),
      tokenizer_(tokenizer),
      template_(chat_template),
      clock_(clock),
      signal_(std::make_shared<Signal>()),
      sample_pool_(SamplingHelpers(options.sampling_threads)) {
  std::shared_ptr<Signal> signal = signal_;
  clock_->OnJump([signal] { signal->Notify(); });
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start(TierOps* tiers) {
  tiers_ = tiers;
  last_sweep_ = clock_->Now();
  thread_ = std::thread([this] { Loop(); });
}

void Scheduler::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  signal_->Notify();
  if (thread_.joinable()) thread_.join();
}

namespace {

absl::Status QueueFull(int32_t depth) {
  return base::CapacityError(
      absl::StrCat("the turn queue is full (", depth, " waiting); retry later"),
      base::kShedQueueFull);
}

}  // namespace

absl::Status Scheduler::CheckAdmits(bool reserved) const {
  absl::MutexLock lock(&mu_);
  return AdmitsLocked(reserved);
}

absl::Status Scheduler::AdmitsLocked(bool reserved) const {
  if ((draining_ && !reserved) || stopping_) return ServerUnavailable();
  if (!device_error_.ok()) return device_error_;
  if (static_cast<int32_t>(queue_.size()) >= options_.queue_depth) {
    return QueueFull(options_.queue_depth);
  }
  return absl::OkStatus();
}

absl::Status Scheduler::Reserve() {
  absl::MutexLock lock(&mu_);
  if (draining_ || stopping_) return ServerUnavailable();
  ++reserved_;
  return absl::OkStatus();
}

void Scheduler::CancelReservation() {
  absl::MutexLock lock(&mu_);
  --reserved_;
}

absl::Status Scheduler::Enqueue(std::unique_ptr<Turn>& turn, bool reserved) {
  {
    absl::MutexLock lock(&mu_);
    if (reserved) --reserved_;
    if (absl::Status s = AdmitsLocked(reserved); !s.ok()) return s;
    const int32_t max_queued = QuotaFor(options_.tenant_quotas, turn->owner,
                                        &TenantQuota::max_queued, options_.tenant_max_queued);
    if (max_queued > 0) {
      int32_t queued = 0;
      for (const auto& q : queue_) queued += q->owner == turn->owner ? 1 : 0;
      if (queued >= max_queued) {
        return base::CapacityError(
            absl::StrCat("tenant queued-turn quota reached (", max_queued,
                         " turns of this tenant waiting); retry later"),
            base::kShedTenantQueue);
      }
    }
    queue_.push_back(std::move(turn));
  }
  signal_->Notify();
  return absl::OkStatus();
}

void Scheduler::Post(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    posted_.push_back(std::move(fn));
  }
  signal_->Notify();
}

void Scheduler::BeginDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool Scheduler::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

bool Scheduler::WaitIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return queue_.empty() && running_ == 0 && reserved_ == 0;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

void Scheduler::CancelAll(absl::Status reason) {
  {
    absl::MutexLock lock(&mu_);
    cancel_all_ = std::move(reason);
  }
  signal_->Notify();
}

int32_t Scheduler::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int32_t>(queue_.size());
}

int32_t Scheduler::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

// Takes what the other threads left for this iteration; false once stopping.
bool Scheduler::TakeWork(std::vector<std::function<void()>>* posted,
                         std::vector<std::unique_ptr<Turn>>* admitted,
                         std::vector<std::unique_ptr<Turn>>* dropped,
                         std::optional<absl::Status>* cancel_all) {
  absl::MutexLock lock(&mu_);
  posted->swap(posted_);
  if (cancel_all_.has_value()) {
    *cancel_all = std::move(cancel_all_);
    cancel_all_.reset();
  }
  // A queued turn whose client left must release its session (and queue place) now, not when
  // it would have been admitted.
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (!(*it)->create_only && (*it)->stream->cancel_requested()) {
      dropped->push_back(std::move(*it));
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  // Fair admission, round-robin across tenants: the next turn is the oldest queued one of the
  // tenant with the fewest running turns, ties going to the tenant admitted least recently;
  // within a tenant, FIFO. A tenant flooding the queue cannot starve another, and a tenant at
  // its running-turn quota waits while others are admitted.
  const int32_t cap = std::min(options_.max_batch, options_.slots);
  if (!stopping_ && !cancel_all->has_value() && !queue_.empty() &&
      static_cast<int32_t>(active_.size()) < cap) {
    absl::flat_hash_map<std::string, int32_t> running;
    for (const auto& t : active_) ++running[t->owner];
    while (static_cast<int32_t>(active_.size() + admitted->size()) < cap) {
      auto best = queue_.end();
      std::pair<int32_t, uint64_t> best_key;
      for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        const std::string& owner = (*it)->owner;
        const int32_t r = running[owner];
        const int32_t max_running = QuotaFor(options_.tenant_quotas, owner,
                                             &TenantQuota::max_running,
                                             options_.tenant_max_running);
        if (max_running > 0 && r >= max_running) continue;
        auto last = last_admitted_.find(owner);
        const std::pair<int32_t, uint64_t> key{r, last == last_admitted_.end() ? 0 : last->second};
        if (best == queue_.end() || key < best_key) {
          best = it;
          best_key = key;
        }
      }
      if (best == queue_.end()) break;
      ++running[(*best)->owner];
      last_admitted_[(*best)->owner] = ++admissions_;
      admitted->push_back(std::move(*best));
      queue_.erase(best);
    }
  }
  running_ = static_cast<int32_t>(active_.size() + admitted->size());
  return !stopping_;
}

// Rolls back everything but the turns whose final state is being stored (their write is in
// flight and decides).
void Scheduler::Shutdown(std::vector<std::unique_ptr<Turn>>& admitted,
                         const absl::Status& reason) {
  for (auto& t : admitted) RollBack(*t, reason);
  admitted.clear();
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
}

std::chrono::milliseconds Scheduler::SinceLastLoop() const {
  const int64_t last = last_loop_ns_.load(std::memory_order_relaxed);
  if (last == 0) return std::chrono::milliseconds(0);  // not started
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          clock_->Now().time_since_epoch())
                          .count();
  return std::chrono::milliseconds((now - last) / 1000000);
}

void Scheduler::Loop() {
  while (true) {
    // 0 means "not started"; a fake clock may well stand at its epoch.
    last_loop_ns_.store(std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                 clock_->Now().time_since_epoch())
                                                 .count()),
                        std::memory_order_relaxed);
    std::vector<std::function<void()>> posted;
    std::vector<std::unique_ptr<Turn>> admitted, dropped;
    std::optional<absl::Status> cancel_all;
    const bool running = TakeWork(&posted, &admitted, &dropped, &cancel_all);
    // Cancelled queued turns first: a session command posted right after a cancel finds the
    // session released.
    for (auto& t : dropped) RollBack(*t, t->stream->cancel_reason());
    for (auto& fn : posted) fn();
    if (!running || cancel_all.has_value()) {
      Shutdown(admitted, cancel_all.value_or(absl::UnavailableError("the server is shutting down")));
      if (!running) return;
      continue;
    }
    for (size_t i = 0; i < admitted.size(); ++i) {
      if (Admit(admitted[i])) continue;
      // No slot can be freed until a spill write completes: put the rest back, in order.
      absl::MutexLock lock(&mu_);
      for (size_t j = admitted.size(); j-- > i;) queue_.push_front(std::move(admitted[j]));
      break;
    }
    DropStopped();
    const bool prefilled = PrefillPieces();
    const bool stepped = DecodeStep();
    UpdateRunning();
    SweepIdle();
    if (!prefilled && !stepped) {
      model_->Idle();
      signal_->Wait(absl::Seconds(1));
    }
  }
}

void Scheduler::UpdateRunning() {
  absl::MutexLock lock(&mu_);
  running_ = static_cast<int32_t>(active_.size());
}

// Takes a slot and loads the committed state into it; false when no slot is available yet.
bool Scheduler::Admit(std::unique_ptr<Turn>& t) {
  const int32_t slot = tiers_->TakeSlot();
  if (slot < 0) return false;
  t->admitted = clock_->Now();
  t->slot = slot;
  t->seq = ++turn_seq_;
  Turn* turn = t.get();
  active_.push_back(std::move(t));
  if (turn->create_only) {
    tiers_->LoadZero(slot);
    BeginRunning(*turn);
    return true;
  }
  // The turn works on a copy, so the committed state survives a cancel untouched.
  turn->phase = Turn::Phase::kRestoring;
  const uint64_t seq = turn->seq;
  tiers_->LoadInto(
      turn->session_id, turn->base_version, slot,
      [this, seq] {
        Turn* t = FindActive(seq);
        return t != nullptr && t->phase == Turn::Phase::kRestoring;
      },
      [this, seq](absl::Status s) { OnLoaded(seq, std::move(s)); });
  return true;
}

void Scheduler::OnLoaded(uint64_t seq, absl::Status status) {
  Turn* t = FindActive(seq);
  if (t == nullptr || t->phase != Turn::Phase::kRestoring) return;
  if (!status.ok()) return FailTurns({t}, status);
  BeginRunning(*t);
}

Turn* Scheduler::FindActive(uint64_t seq) {
  for (auto& a : active_) {
    if (a->seq == seq) return a.get();
  }
  return nullptr;
}

// The turn's state is in its slot: set up sampling and streaming and start prefilling.
void Scheduler::BeginRunning(Turn& t) {
  t.phase = Turn::Phase::kPrefill;
  if (t.create_only) return;
  if (t.rewind_point.has_value()) t.rewind_point->state = tiers_->CaptureSlot(t.slot);
  auto sampler = Sampler::Create(t.sampling, model_->vocab_size(), t.seed, options_.sampling);
  if (!sampler.ok()) {
    // Validated in StartTurn; reaching here is a bug, reported rather than crashed on.
    return FailTurns({&t}, absl::InternalError(sampler.status().message()));
  }
  t.sampler.emplace(std::move(*sampler));
  t.sampler->Observe(t.input);
  std::vector<int32_t> stop_ids = t.sampling.stop_token_ids;
  std::vector<std::string> stop_strings = t.sampling.stop;
  if (t.is_message) {
    // The template's stops end a chat reply; a raw-token turn stops only where asked.
    stop_ids.insert(stop_ids.end(), template_->stop_token_ids.begin(),
                    template_->stop_token_ids.end());
    stop_strings.insert(stop_strings.end(), template_->stop_strings.begin(),
                        template_->stop_strings.end());
  }
  t.stop.emplace(std::move(stop_ids), std::move(stop_strings), t.max_tokens);
  t.detok.emplace(*tokenizer_);
  TurnEvent started;
  started.kind = TurnEvent::Kind::kStarted;
  started.input_ids = t.input;
  started.base_version = t.base_version;
  t.stream->Push(std::move(started));
}

// Rolls back turns whose client cancelled, turns past the server's time limit, and turns
// whose client has not read for stalled_stream_ms (they would hold a slot, and the state in
// it, for nothing; four of them used to take every slot of a small server).
void Scheduler::DropStopped() {
  const auto now = clock_->Now();
  const auto limit = std::chrono::milliseconds(options_.max_turn_ms);
  const auto stall_limit = std::chrono::milliseconds(options_.stalled_stream_ms);
  for (size_t i = 0; i < active_.size();) {
    Turn& t = *active_[i];
    // A turn being persisted has finished: it commits whatever the client does now.
    const bool stoppable = !t.create_only && t.phase != Turn::Phase::kPersisting;
    if (stoppable && t.stream->cancel_requested()) {
      RollBack(t, t.stream->cancel_reason());
    } else if (stoppable && options_.max_turn_ms > 0 && now - t.enqueued > limit) {
      RollBack(t, absl::DeadlineExceededError(absl::StrCat(
                      "the turn ran past the server's limit of ", options_.max_turn_ms, " ms")));
    } else if (stoppable && options_.stalled_stream_ms > 0 && t.stalled_since.has_value() &&
               now - *t.stalled_since > stall_limit) {
      RollBack(t, absl::ResourceExhaustedError(absl::StrCat(
                      "the client did not read the reply for ", options_.stalled_stream_ms,
                      " ms; the turn was rolled back to free its slot")));
    } else {
      ++i;
      continue;
    }
    active_.erase(active_.begin() + static_cast<ptrdiff_t>(i));
  }
}

// One prompt piece for each prefilling turn, in admission order, within the token budget (at
// least one piece). Piece boundaries depend only on the turn, never on the load.
bool Scheduler::PrefillPieces() {
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
  absl::StatusOr<LogitsView> logits = model_->Prefill(seqs, popts);
  if (!logits.ok()) {
    ModelFailed(turns, logits.status());
    return true;
  }
  // Sampled turns first, then created sessions (checked, not sampled: their state commits).
  std::vector<Turn*> sampled, created;
  std::vector<int64_t> rows, created_rows;
  for (size_t i = 0; i < turns.size(); ++i) {
    Turn& t = *turns[i];
    t.prefilled += seqs[i].tokens.size();
    if (t.prefilled < t.input.size()) continue;
    t.prefill_done = clock_->Now();
    if (t.create_only) {
      created.push_back(&t);
      created_rows.push_back(static_cast<int64_t>(i));
      continue;
    }
    t.phase = Turn::Phase::kDecode;
    sampled.push_back(&t);
    rows.push_back(static_cast<int64_t>(i));
  }
  const std::vector<Turn*> poisoned = SampleAndEmit(sampled, rows, created, created_rows, *logits);
  FailNaN(poisoned);
  for (Turn* t : created) {
    if (std::find(poisoned.begin(), poisoned.end(), t) == poisoned.end()) CommitCreate(*t);
  }
  return true;
}

bool Scheduler::DecodeStep() {
  std::vector<Turn*> turns;
  std::vector<int32_t> tokens, slots;
  for (auto& t : active_) {
    if (t->phase != Turn::Phase::kDecode) continue;
    // A full stream pauses only its own turn; the final feed emits no delta, so it runs.
    if (!t->final_pending && !t->stream->HasRoom()) {
      if (!t->stalled_since.has_value()) t->stalled_since = clock_->Now();
      continue;
    }
    t->stalled_since.reset();
    if (static_cast<int32_t>(turns.size()) >= options_.max_batch) break;
    turns.push_back(t.get());
    tokens.push_back(t->pending_token);
    slots.push_back(t->slot);
  }
  if (turns.empty()) return false;
  const auto step_start = clock_->Now();  // metrics hook
  absl::StatusOr<LogitsView> logits = model_->Step(tokens, slots);
  if (!logits.ok()) {
    ModelFailed(turns, logits.status());
    return true;
  }
  if (options_.observer != nullptr) {  // metrics hook
    options_.observer->OnDecodeStep(static_cast<int32_t>(turns.size()),
                                    MsBetween(step_start, clock_->Now()) / 1000);
  }
  steps_.fetch_add(1, std::memory_order_relaxed);
  // Final feeds are checked, not sampled: their state commits.
  std::vector<Turn*> sampled, done;
  std::vector<int64_t> rows, done_rows;
  for (size_t i = 0; i < turns.size(); ++i) {
    (turns[i]->final_pending ? done : sampled).push_back(turns[i]);
    (turns[i]->final_pending ? done_rows : rows).push_back(static_cast<int64_t>(i));
  }
  const std::vector<Turn*> poisoned = SampleAndEmit(sampled, rows, done, done_rows, *logits);
  FailNaN(poisoned);
  for (Turn* t : done) {
    if (std::find(poisoned.begin(), poisoned.end(), t) == poisoned.end()) Finalize(*t);
  }
  return true;
}

// Checks and samples in parallel (each turn's sampler is its own, so the split never changes
// a pick; the NaN scan reads the row into the cache the sampler then reads it from), then
// streams the picks in order on this thread.
std::vector<Turn*> Scheduler::SampleAndEmit(const std::vector<Turn*>& turns,
                                            const std::vector<int64_t>& rows,
                                            const std::vector<Turn*>& checked,
                                            const std::vector<int64_t>& checked_rows,
                                            const LogitsView& logits) {
  const int64_t n_sampled = static_cast<int64_t>(turns.size());
  const int64_t n = n_sampled + static_cast<int64_t>(checked.size());
  auto turn = [&](int64_t k) { return k < n_sampled ? turns[k] : checked[k - n_sampled]; };
  picks_.resize(static_cast<size_t>(n));
  sample_pool_.ForEach(n, [&](int64_t k) {
    Pick& p = picks_[k];
    p.info = SampleInfo{};
    const absl::Span<const float> row =
        logits.row(k < n_sampled ? rows[k] : checked_rows[k - n_sampled]);
    p.nan = HasNaN(row);
    if (p.nan || k >= n_sampled) return;
    p.id = turn(k)->sampler->Sample(row, turn(k)->sampling.logprobs > 0 ? &p.info : nullptr);
  });
  std::vector<Turn*> poisoned;
  for (int64_t k = 0; k < n; ++k) {
    if (picks_[k].nan) {
      poisoned.push_back(turn(k));
    } else if (k < n_sampled) {
      Emit(*turns[k], picks_[k].id, std::move(picks_[k].info));
    }
  }
  return poisoned;
}

void Scheduler::Emit(Turn& t, int32_t id, SampleInfo info) {
  if (t.generated.empty()) t.first_token = clock_->Now();
  t.generated.push_back(id);
  generated_tokens_.fetch_add(1, std::memory_order_relaxed);
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
    // Bytes of an unfinished character become U+FFFD at the end, unless they lie past a stop
    // string (which cut them off).
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

void Scheduler::SweepIdle() {
  if (options_.idle_ttl_ms <= 0) return;
  const auto now = clock_->Now();
  if (now - last_sweep_ < std::chrono::seconds(1)) return;
  last_sweep_ = now;
  const std::vector<std::string> expired =
      index_->ExpireIdle(std::chrono::milliseconds(options_.idle_ttl_ms));
  for (const std::string& id : expired) {
    tiers_->Drop(id);
    if (options_.observer != nullptr) options_.observer->OnEviction(EvictionReason::kIdleTtl);
  }
}

}  // namespace xlstmd::core
