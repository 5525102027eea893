#include "core/engine/engine.h"

#include <sys/random.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/base/check.h"
#include "core/base/status_macros.h"
#include "core/sampling/stop_checker.h"
#include "core/tokenizer/incremental_detokenizer.h"
#include "core/tokenizer/utf8.h"

namespace xlstmd::core {
namespace {

using SteadyClock = std::chrono::steady_clock;

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double MsBetween(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

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

// Wakes the engine thread. Shared with stream callbacks so that a transport that outlives
// the engine (a late Cancel during shutdown) signals a live object, never a freed one.
class Signal {
 public:
  void Notify() {
    absl::MutexLock lock(&mu_);
    dirty_ = true;
    cv_.SignalAll();
  }
  // Waits until notified or `timeout` passes; consumes the notification.
  void Wait(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    if (!dirty_) cv_.WaitWithTimeout(&mu_, timeout);
    dirty_ = false;
  }

 private:
  absl::Mutex mu_;
  absl::CondVar cv_;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
};

// Request ids remembered per session for idempotency (oldest forgotten first).
constexpr size_t kRequestIdsPerSession = 1024;

}  // namespace

// Metadata of one session, guarded by Impl::mu_.
struct SessionMeta {
  SessionInfo info;
  bool session_start_done = false;  // BOS/default system prompt already appended
  bool reply_open = false;          // last committed turn was a message turn
  std::deque<std::string> request_order;
  absl::flat_hash_map<std::string, uint64_t> request_versions;
};

// Where a session's committed state is; engine thread only. A session absent from the map
// has the zero state.
struct SessionState {
  int32_t slot = -1;        // resident slot, or -1
  std::vector<float> host;  // evicted copy when slot < 0 and non-empty
  uint64_t last_used = 0;   // engine tick, for LRU eviction
};

struct Turn {
  enum class Phase { kQueued, kPrefill, kDecode };
  // Identity and input (set by the submitting thread, then owned by the engine thread).
  std::string session_id;
  std::string owner;
  std::vector<int32_t> input;
  bool is_message = false;
  bool adds_session_start = false;
  std::string request_id;
  uint64_t base_version = 0;
  SamplingConfig sampling;
  int32_t max_tokens = 0;
  uint64_t seed = 0;
  std::shared_ptr<TurnStream> stream;
  // A CreateSession with a system prompt: prefill only, then create the session.
  bool create_only = false;
  std::function<void(absl::StatusOr<SessionInfo>)> create_done;
  // Engine-thread state.
  Phase phase = Phase::kQueued;
  int32_t slot = -1;
  size_t prefilled = 0;
  std::optional<Sampler> sampler;
  std::optional<StopChecker> stop;
  std::optional<IncrementalDetokenizer> detok;
  std::vector<int32_t> generated;
  int32_t pending_token = -1;  // sampled, not yet fed to the model
  bool final_pending = false;  // pending_token ends the turn: feed it, then commit
  FinishReason finish = FinishReason::kNone;
  SteadyClock::time_point enqueued, admitted, prefill_done, first_token;
};

class Engine::Impl {
 public:
  Impl(std::unique_ptr<XlstmModel> model, std::unique_ptr<Tokenizer> tokenizer,
       ChatTemplate chat_template, const EngineOptions& options)
      : model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        template_(std::move(chat_template)),
        options_(options),
        signal_(std::make_shared<Signal>()) {}

  ~Impl() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    signal_->Notify();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Start() {
    XLSTMD_RETURN_IF_ERROR(model_->AllocateSlots(options_.resident_slots));
    for (int32_t s = options_.resident_slots - 1; s >= 0; --s) free_slots_.push_back(s);
    thread_ = std::thread([this] { Loop(); });
    return absl::OkStatus();
  }

  // ---------------- caller-thread API ----------------

  absl::StatusOr<std::shared_ptr<TurnStream>> StartTurn(TurnRequest req,
                                                        std::function<void()> wakeup) {
    const auto now = SteadyClock::now();
    if (req.request_id.size() > static_cast<size_t>(options_.max_request_id_bytes)) {
      return absl::InvalidArgumentError(absl::StrCat("request_id is longer than ",
                                                     options_.max_request_id_bytes, " bytes"));
    }
    // Sampling first: it needs no session and a bad request should not touch one.
    SamplingConfig sampling = std::move(req.sampling);
    if (sampling.max_tokens > options_.sampling.max_tokens) {
      return absl::ResourceExhaustedError(
          absl::StrCat("max_tokens ", sampling.max_tokens, " exceeds the server limit of ",
                       options_.sampling.max_tokens));
    }
    XLSTMD_RETURN_IF_ERROR(
        ValidateSamplingConfig(sampling, model_->vocab_size(), options_.sampling));
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
                                                       it->second, " of session ",
                                                       req.session_id));
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
        return absl::ResourceExhaustedError(absl::StrCat(
            "the turn queue is full (", options_.queue_depth, " waiting); retry later"));
      }
      meta->info.turn_running = true;
      turn->base_version = meta->info.version;
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
      status = absl::ResourceExhaustedError(absl::StrCat(
          "the turn queue is full (", options_.queue_depth, " waiting); retry later"));
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

  void CreateSession(std::string owner, std::string system_prompt,
                     std::function<void(absl::StatusOr<SessionInfo>)> done) {
    absl::Status status;
    std::vector<int32_t> ids;
    if (absl::Status s = ValidateUtf8(system_prompt); !s.ok()) {
      return done(
          absl::InvalidArgumentError(absl::StrCat("system_prompt is not valid UTF-8: ", s.message())));
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
  absl::StatusOr<SessionInfo> EnqueueCreate(const std::string& owner, std::vector<int32_t> ids,
                                            std::function<void(absl::StatusOr<SessionInfo>)>& done) {
    absl::MutexLock lock(&mu_);
    if (draining_ || stopping_) return Unavailable();
    if (static_cast<int32_t>(sessions_.size()) + pending_creates_ >= options_.max_sessions) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the server holds its maximum of ", options_.max_sessions, " sessions"));
    }
    if (ids.empty()) {
      // Nothing to prefill: the zero state is version 0, and the first message turn will
      // carry the session-start ids.
      return InsertSessionLocked(owner).info;
    }
    if (static_cast<int32_t>(queue_.size()) >= options_.queue_depth) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the turn queue is full (", options_.queue_depth, " waiting); retry later"));
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

  void ForkSession(std::string owner, std::string id,
                   std::function<void(absl::StatusOr<SessionInfo>)> done) {
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
        } else if (static_cast<int32_t>(sessions_.size()) + pending_creates_ >=
                   options_.max_sessions) {
          refused = absl::ResourceExhaustedError(absl::StrCat(
              "the server holds its maximum of ", options_.max_sessions, " sessions"));
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
        SessionState copy;
        if (it->second.slot >= 0) {
          copy.host.resize(FloatsPerSlot());
          model_->ReadSlot(it->second.slot, copy.host.data());
        } else {
          copy.host = it->second.host;
        }
        copy.last_used = ++tick_;
        states_[info.session_id] = std::move(copy);
      }
      done(info);
    });
  }

  void DeleteSession(std::string owner, std::string id, std::function<void(absl::Status)> done) {
    Command([this, owner = std::move(owner), id = std::move(id), done = std::move(done)] {
      absl::Status status;
      {
        absl::MutexLock lock(&mu_);
        SessionMeta* meta = FindLocked(owner, id);
        if (meta == nullptr) {
          status = SessionNotFound(id);
        } else if (meta->info.turn_running) {
          status = absl::AbortedError(
              absl::StrCat("session ", id, " has a turn running; cancel it first"));
        } else {
          sessions_.erase(id);
          last_active_.erase(id);
        }
      }
      if (status.ok()) DropState(id);
      done(status);
    });
  }

  absl::StatusOr<SessionInfo> GetSession(const std::string& owner, const std::string& id) const {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(id);
    if (it == sessions_.end() || it->second.info.owner != owner) return SessionNotFound(id);
    return it->second.info;
  }

  std::vector<SessionInfo> ListSessions(const std::string& owner, const std::string& after_id,
                                        int32_t limit) const {
    std::vector<SessionInfo> out;
    absl::MutexLock lock(&mu_);
    for (auto it = sessions_.upper_bound(after_id);
         it != sessions_.end() && static_cast<int32_t>(out.size()) < limit; ++it) {
      if (it->second.info.owner == owner) out.push_back(it->second.info);
    }
    return out;
  }

  void BeginDrain() {
    absl::MutexLock lock(&mu_);
    draining_ = true;
  }
  bool draining() const {
    absl::MutexLock lock(&mu_);
    return draining_;
  }
  bool WaitIdle(int64_t timeout_ms) {
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return queue_.empty() && running_turns_ == 0 && pending_creates_ == 0;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&idle), absl::Milliseconds(timeout_ms));
  }
  void CancelAll(absl::Status reason) {
    {
      absl::MutexLock lock(&mu_);
      cancel_all_ = std::move(reason);
    }
    signal_->Notify();
  }

  EngineStats stats() const {
    absl::MutexLock lock(&mu_);
    EngineStats s;
    s.queued_turns = static_cast<int32_t>(queue_.size());
    s.running_turns = running_turns_;
    s.sessions = static_cast<int32_t>(sessions_.size());
    s.resident_sessions = resident_sessions_;
    s.steps = steps_;
    s.generated_tokens = generated_tokens_;
    return s;
  }

  const XlstmModel& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ChatTemplate& chat_template() const { return template_; }
  const EngineOptions& options() const { return options_; }

 private:

  static absl::Status Unavailable() {
    return absl::UnavailableError("the server is shutting down and admits no new work");
  }
  static absl::Status SessionNotFound(const std::string& id) {
    return absl::NotFoundError(absl::StrCat("session '", id, "' not found"));
  }
  absl::Status PromptTooLong(size_t n) const {
    return absl::ResourceExhaustedError(absl::StrCat("the turn's input is ", n,
                                                     " tokens, over the limit of ",
                                                     options_.max_prompt_tokens));
  }
  absl::Status CheckIdsInVocab(const std::vector<int32_t>& ids) const {
    for (int32_t id : ids) {
      if (id < 0 || id >= model_->vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the tokenizer produced id ", id, ", outside the model's vocabulary of ",
            model_->vocab_size(), "; the tokenizer does not match the model"));
      }
    }
    return absl::OkStatus();
  }
  size_t FloatsPerSlot() const { return model_->state_layout().bytes_per_slot() / sizeof(float); }

  SessionMeta* FindLocked(const std::string& owner, const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = sessions_.find(id);
    if (it == sessions_.end() || it->second.info.owner != owner) return nullptr;
    return &it->second;
  }
  SessionMeta& InsertSessionLocked(const std::string& owner) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::string id = NewSessionId();
    while (sessions_.count(id) != 0) id = NewSessionId();
    SessionMeta& meta = sessions_[id];
    meta.info.session_id = id;
    meta.info.owner = owner;
    meta.info.created_unix_ms = meta.info.updated_unix_ms = UnixMs();
    last_active_[id] = SteadyClock::now();
    return meta;
  }

  void Command(std::function<void()> fn) {
    {
      absl::MutexLock lock(&mu_);
      commands_.push_back(std::move(fn));
    }
    signal_->Notify();
  }

  // ---------------- engine thread ----------------

  void Loop() {
    auto last_sweep = SteadyClock::now();
    while (true) {
      std::vector<std::function<void()>> commands;
      std::vector<std::unique_ptr<Turn>> admitted;
      std::vector<std::unique_ptr<Turn>> dropped;
      std::optional<absl::Status> cancel_all;
      bool stopping;
      {
        absl::MutexLock lock(&mu_);
        stopping = stopping_;
        commands.swap(commands_);
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
      for (auto& t : dropped) RollBack(*t, t->stream->cancel_reason());
      for (auto& cmd : commands) cmd();
      if (stopping || cancel_all) {
        const absl::Status reason =
            cancel_all ? *cancel_all : absl::UnavailableError("the server is shutting down");
        for (auto& t : admitted) RollBack(*t, reason);
        admitted.clear();
        for (auto& t : active_) RollBack(*t, reason);
        active_.clear();
        std::deque<std::unique_ptr<Turn>> queued;
        {
          absl::MutexLock lock(&mu_);
          queued.swap(queue_);
        }
        for (auto& t : queued) RollBack(*t, reason);
        UpdateRunning();
        if (stopping) return;
        continue;
      }
      for (auto& t : admitted) Admit(std::move(t));
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

  void UpdateRunning() {
    absl::MutexLock lock(&mu_);
    running_turns_ = static_cast<int32_t>(active_.size());
  }

  int32_t TakeSlot() {
    if (free_slots_.empty()) {
      // Evict the least recently used resident committed state to host memory. One exists:
      // admission keeps running turns below the slot count.
      std::string victim;
      uint64_t oldest = std::numeric_limits<uint64_t>::max();
      for (auto& [id, st] : states_) {
        if (st.slot >= 0 && st.last_used < oldest) {
          oldest = st.last_used;
          victim = id;
        }
      }
      XLSTMD_CHECK(!victim.empty());
      SessionState& st = states_[victim];
      st.host.resize(FloatsPerSlot());
      model_->ReadSlot(st.slot, st.host.data());
      free_slots_.push_back(st.slot);
      st.slot = -1;
      AdjustResident(-1);
    }
    const int32_t slot = free_slots_.back();
    free_slots_.pop_back();
    return slot;
  }

  void FreeSlot(int32_t slot) {
    if (slot >= 0) free_slots_.push_back(slot);
  }

  void DropState(const std::string& id) {
    auto it = states_.find(id);
    if (it == states_.end()) return;
    if (it->second.slot >= 0) {
      FreeSlot(it->second.slot);
      AdjustResident(-1);
    }
    states_.erase(it);
  }

  void AdjustResident(int32_t delta) {
    absl::MutexLock lock(&mu_);
    resident_sessions_ += delta;
  }

  void Admit(std::unique_ptr<Turn> t) {
    t->admitted = SteadyClock::now();
    t->slot = TakeSlot();
    // The turn works on a copy, so the committed state survives a cancel untouched.
    auto it = t->create_only ? states_.end() : states_.find(t->session_id);
    if (it == states_.end()) {
      model_->ResetSlot(t->slot);
    } else if (it->second.slot >= 0) {
      model_->CopySlot(it->second.slot, t->slot);
      it->second.last_used = ++tick_;
    } else {
      model_->WriteSlot(t->slot, it->second.host.data());
    }
    if (!t->create_only) {
      auto sampler = Sampler::Create(t->sampling, static_cast<int32_t>(model_->vocab_size()),
                                     t->seed, options_.sampling);
      if (!sampler.ok()) {
        // Validated in StartTurn; reaching here is a bug, reported rather than crashed on.
        RollBack(*t, absl::InternalError(sampler.status().message()));
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
    t->phase = Turn::Phase::kPrefill;
    active_.push_back(std::move(t));
  }

  void DropCancelled() {
    const auto now = SteadyClock::now();
    const auto limit = std::chrono::milliseconds(options_.max_turn_ms);
    for (size_t i = 0; i < active_.size();) {
      Turn& t = *active_[i];
      if (!t.create_only && t.stream->cancel_requested()) {
        RollBack(t, t.stream->cancel_reason());
      } else if (!t.create_only && options_.max_turn_ms > 0 && now - t.enqueued > limit) {
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
  void RollBack(Turn& t, absl::Status reason) {
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
  bool PrefillPieces() {
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
      FailTurns(turns, s);
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

  bool DecodeStep() {
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
    absl::Status s = model_->Step(tokens, slots, &logits_);
    if (!s.ok()) {
      FailTurns(turns, s);
      return true;
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
    for (Turn* t : done) Commit(*t);
    return true;
  }

  void SampleAndEmit(Turn& t, absl::Span<const float> logits) {
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

  void FailTurns(const std::vector<Turn*>& turns, const absl::Status& s) {
    const absl::Status reason = absl::InternalError(absl::StrCat("model error: ", s.message()));
    for (Turn* t : turns) RollBack(*t, reason);
    std::erase_if(active_, [&](const std::unique_ptr<Turn>& a) {
      return std::find(turns.begin(), turns.end(), a.get()) != turns.end();
    });
  }

  void RemoveActive(Turn* t) {
    std::erase_if(active_, [t](const std::unique_ptr<Turn>& a) { return a.get() == t; });
  }

  // The turn's slot becomes the session's committed state.
  void Commit(Turn& t) {
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
    InstallCommitted(t.session_id, t.slot);
    t.slot = -1;
    t.stream->Push(std::move(fin));
    t.stream->Close(absl::OkStatus());
    RemoveActive(&t);
  }

  void InstallCommitted(const std::string& id, int32_t slot) {
    SessionState& st = states_[id];
    if (st.slot >= 0) {
      FreeSlot(st.slot);
    } else {
      AdjustResident(+1);
    }
    st.slot = slot;
    st.host.clear();
    st.host.shrink_to_fit();
    st.last_used = ++tick_;
  }

  void CommitCreate(Turn& t) {
    SessionInfo info;
    {
      absl::MutexLock lock(&mu_);
      --pending_creates_;
      SessionMeta& meta = InsertSessionLocked(t.owner);
      meta.info.token_count = t.input.size();
      meta.session_start_done = true;
      info = meta.info;
    }
    InstallCommitted(info.session_id, t.slot);
    t.slot = -1;
    auto done = std::move(t.create_done);
    RemoveActive(&t);
    done(info);
  }

  void SweepIdle(SteadyClock::time_point now) {
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
          it = sessions_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (const auto& id : expired) DropState(id);
  }

  std::unique_ptr<XlstmModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  const ChatTemplate template_;
  const EngineOptions options_;
  std::shared_ptr<Signal> signal_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  // Ordered so ListSessions pages by id.
  std::map<std::string, SessionMeta> sessions_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, SteadyClock::time_point> last_active_ ABSL_GUARDED_BY(mu_);
  std::deque<std::unique_ptr<Turn>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> commands_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> cancel_all_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int32_t pending_creates_ ABSL_GUARDED_BY(mu_) = 0;
  int32_t running_turns_ ABSL_GUARDED_BY(mu_) = 0;
  int32_t resident_sessions_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generated_tokens_ ABSL_GUARDED_BY(mu_) = 0;

  // Engine thread only.
  std::vector<std::unique_ptr<Turn>> active_;
  std::unordered_map<std::string, SessionState> states_;
  std::vector<int32_t> free_slots_;
  std::vector<float> logits_;
  uint64_t tick_ = 0;
};

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
  for (int32_t id : chat_template.stop_token_ids) {
    if (id < 0 || id >= model->vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chat template stop token id ", id, " is outside the model's vocabulary"));
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
std::vector<SessionInfo> Engine::ListSessions(const std::string& owner,
                                              const std::string& after_id, int32_t limit) const {
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

}  // namespace xlstmd::core
