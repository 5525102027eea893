#include "core/engine/engine.h"

#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <deque>
#include <limits>
#include <map>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "core/base/check.h"
#include "core/base/status_macros.h"
#include "core/engine/io_pool.h"
#include "core/state/snapshot.h"
#include "core/state/snapshot_store.h"
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

// Request ids remembered per session for idempotency (oldest forgotten first); a snapshot
// carries them so idempotency survives a restart.
constexpr size_t kRequestIdsPerSession = kSnapshotMaxRequestIds;

// SnapshotMeta::flags bits.
constexpr uint32_t kFlagSessionStartDone = 1u << 0;
constexpr uint32_t kFlagReplyOpen = 1u << 1;

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
// has the zero state. Tiers, fastest first: a resident slot; a host copy; the snapshot on
// disk when it was written from this very state (disk_gen == gen). A state leaves a faster
// tier only once a slower one holds it, so a committed turn is never lost to an eviction.
// A committed version kept for RewindSession.
struct Checkpoint {
  uint64_t version = 0;
  uint64_t token_count = 0;
  bool session_start_done = false;
  bool reply_open = false;
  std::shared_ptr<const std::vector<float>> state;
};

struct SessionState {
  std::deque<Checkpoint> checkpoints;  // oldest first, at most keep_turn_checkpoints
  uint64_t version = 0;     // the committed version this state is
  int32_t slot = -1;        // resident slot, or -1
  std::shared_ptr<const std::vector<float>> host;  // immutable: I/O jobs share it
  uint64_t last_used = 0;   // engine tick, for LRU eviction
  int64_t disk_version = -1;     // version of the snapshot file, -1 = none
  // Every change of the committed state (commit, rewind, import) bumps `gen`; a write
  // records the gen it wrote. Versions cannot serve: after a rewind a version number
  // comes back with different contents.
  uint64_t gen = 1;
  uint64_t disk_gen = 0;  // gen of the state in the file, 0 = none
  bool write_in_flight = false;  // one write per session at a time keeps the file monotonic
  bool write_again = false;      // committed (or asked to flush) while writing
};

struct Turn {
  // kRestoring: waiting for the I/O pool to read the committed state from disk into `slot`.
  // kPersisting (durability sync): the final state is being written; commit follows.
  enum class Phase { kQueued, kRestoring, kPrefill, kDecode, kPersisting };
  uint64_t seq = 0;  // names the turn to I/O completions, which may outlive it
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
  std::optional<Checkpoint> checkpoint;  // the state the turn started from (rewind enabled)
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
    io_ = std::make_unique<IoPool>(options_.io_threads);
    thread_ = std::thread([this] { Loop(); });
    return absl::OkStatus();
  }

  // Startup: registers every valid snapshot's session from its header; the states load
  // lazily on their first turn. Foreign or corrupt files are quarantined, never loaded.
  absl::Status IndexStateDir() {
    XLSTMD_ASSIGN_OR_RETURN(SnapshotScanResult scan, dir_->Scan());
    int64_t loaded = 0;
    for (const SnapshotFileInfo& f : scan.files) {
      absl::StatusOr<SnapshotMeta> meta = ReadSnapshotHead(f.session_id);
      if (meta.ok() && meta->session_id != f.session_id) {
        meta = absl::DataLossError(absl::StrCat("file of session ", f.session_id,
                                                " holds session ", meta->session_id));
      }
      if (!meta.ok()) {
        spdlog::warn("state dir: quarantining snapshot of session {}: {}", f.session_id,
                     meta.status().ToString());
        (void)dir_->Quarantine(f.session_id, SnapshotErrorReason(meta.status()),
                               meta.status().ToString());
        continue;
      }
      absl::MutexLock lock(&mu_);
      SessionMeta& m = sessions_[meta->session_id];
      m.info.session_id = meta->session_id;
      m.info.owner = meta->owner;
      m.info.version = meta->version;
      m.info.token_count = meta->token_count;
      m.info.created_unix_ms = meta->created_unix_ms;
      m.info.updated_unix_ms = meta->updated_unix_ms;
      m.session_start_done = (meta->flags & kFlagSessionStartDone) != 0;
      m.reply_open = (meta->flags & kFlagReplyOpen) != 0;
      for (const CommittedRequest& r : meta->recent_requests) {
        m.request_order.push_back(r.request_id);
        m.request_versions[r.request_id] = r.version;
      }
      last_active_[meta->session_id] = SteadyClock::now();
      SessionState& st = states_[meta->session_id];
      st.version = meta->version;
      st.disk_version = static_cast<int64_t>(meta->version);
      st.disk_gen = st.gen;
      ++loaded;
    }
    spdlog::info("state dir {}: {} sessions indexed, {} leftover temp files removed, {} quarantined",
                 dir_->path().string(), loaded, scan.temps_removed,
                 scan.quarantined + static_cast<int64_t>(scan.files.size()) - loaded);
    return absl::OkStatus();
  }

  // The header of a session's snapshot file, reading only as much as the header needs.
  absl::StatusOr<SnapshotMeta> ReadSnapshotHead(const std::string& id) {
    std::ifstream in(dir_->FilePath(id), std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open the snapshot of ", id));
    std::string prefix;
    size_t want = 64 << 10;
    while (true) {
      const size_t have = prefix.size();
      prefix.resize(want);
      in.read(prefix.data() + have, static_cast<std::streamsize>(want - have));
      prefix.resize(have + static_cast<size_t>(in.gcount()));
      absl::StatusOr<SnapshotHeadInfo> head =
          DecodeSnapshotHead(prefix, fingerprint_, model_->state_layout());
      if (head.ok()) return head->meta;
      // OUT_OF_RANGE: the header is longer than what was read so far.
      if (head.status().code() != absl::StatusCode::kOutOfRange || !in || want >= snapshot_bytes_) {
        if (head.status().code() == absl::StatusCode::kOutOfRange) {
          return absl::DataLossError(absl::StrCat("snapshot of ", id, " is truncated: ",
                                                  head.status().message()));
        }
        return head.status();
      }
      want = std::min<size_t>(want * 4, snapshot_bytes_);
    }
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
    XLSTMD_RETURN_IF_ERROR(CanAddSessionLocked());
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
        if (options_.durability != EngineOptions::Durability::kNone) StartWrite(info.session_id);
      } else if (options_.durability != EngineOptions::Durability::kNone) {
        StartWrite(info.session_id);
      }
      done(info);
    });
  }

  void ForkFromDisk(const std::string& src, SessionInfo info,
                    std::function<void(absl::StatusOr<SessionInfo>)> done) {
    const uint64_t version = states_[info.session_id].version;
    io_->Submit([this, src, info, version, done = std::move(done)]() mutable {
      auto state = std::make_shared<std::vector<float>>(FloatsPerSlot());
      absl::Status status;
      absl::StatusOr<std::string> bytes = dir_->Read(src);
      if (!bytes.ok()) {
        status = bytes.status();
      } else {
        absl::StatusOr<SnapshotMeta> meta =
            DecodeSnapshotInto(*bytes, fingerprint_, model_->state_layout(), absl::MakeSpan(*state));
        if (!meta.ok()) status = meta.status();
        else if (meta->version != version) status = absl::DataLossError("snapshot version changed");
      }
      PostCompletion([this, info, state, status, done = std::move(done)]() mutable {
        auto it = states_.find(info.session_id);
        if (!status.ok() || it == states_.end()) {
          {
            absl::MutexLock lock(&mu_);
            sessions_.erase(info.session_id);
            last_active_.erase(info.session_id);
          }
          DropState(info.session_id);
          return done(status.ok() ? absl::NotFoundError("the fork was deleted while it loaded")
                                  : absl::DataLossError(absl::StrCat(
                                        "could not read the session to fork: ", status.message())));
        }
        SetHost(it->second, std::move(state));
        EnforceHostBudget();
        if (options_.durability != EngineOptions::Durability::kNone) StartWrite(info.session_id);
        done(info);
      });
    });
  }

  void RewindSession(std::string owner, std::string id, uint64_t version,
                     std::function<void(absl::StatusOr<SessionInfo>)> done) {
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
        for (const Checkpoint& c : st.checkpoints) absl::StrAppend(&kept, kept.empty() ? "" : ", ", c.version);
        return done(absl::FailedPreconditionError(absl::StrCat(
            "version ", version, " of session ", id, " is not kept (kept: ",
            kept.empty() ? "none" : kept, "; the server keeps ", options_.keep_turn_checkpoints,
            " earlier versions)")));
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
      if (options_.durability != EngineOptions::Durability::kNone) StartWrite(id);
      EnforceHostBudget();
      done(info);
    });
  }

  void ExportSession(std::string owner, std::string id,
                     std::function<void(absl::StatusOr<std::string>)> done) {
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
        // Only on disk: the file is the snapshot; check it before handing it out.
        absl::StatusOr<std::string> bytes = dir_->Read(id);
        if (bytes.ok()) {
          absl::StatusOr<SnapshotHeadInfo> head =
              DecodeSnapshotHead(*bytes, fingerprint_, model_->state_layout());
          if (!head.ok()) {
            bytes = absl::DataLossError(absl::StrCat("the stored state of session ", id,
                                                     " is unreadable: ", head.status().message()));
          }
        }
        done(std::move(bytes));
      });
    });
  }

  void ImportSession(std::string owner, std::string snapshot,
                     std::function<void(absl::StatusOr<SessionInfo>)> done) {
    if (snapshot.size() > snapshot_bytes_) {
      return done(absl::ResourceExhaustedError(
          absl::StrCat("the snapshot is ", snapshot.size(), " bytes; this model's are at most ",
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
      if (options_.durability != EngineOptions::Durability::kNone) StartWrite(info.session_id);
      done(info);
    });
  }

  bool FlushToDisk(int64_t timeout_ms) {
    if (dir_ == nullptr) return true;
    absl::Notification queued;
    Command([this, &queued] {
      std::vector<std::string> ids;
      {
        absl::MutexLock lock(&mu_);
        for (const auto& [id, meta] : sessions_) {
          if (!meta.info.turn_running) ids.push_back(id);
        }
      }
      for (const std::string& id : ids) {
        states_[id];  // a zero-state session gets an entry, so it is written too
        StartWrite(id);
      }
      queued.Notify();
    });
    const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
    if (!queued.WaitForNotificationWithDeadline(deadline)) return false;
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return writes_in_flight_ == 0; };
    return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
  }

  uint64_t max_snapshot_bytes() const { return snapshot_bytes_; }

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
      if (!status.ok()) return done(status);
      DropState(id);
      if (dir_ == nullptr) return done(status);
      // Answer only once the file is gone, so a crash cannot bring the session back.
      io_->Submit([this, id, done = std::move(done)] {
        absl::Status s = dir_->Remove(id);
        if (!s.ok() && !absl::IsNotFound(s)) {
          spdlog::warn("could not remove the snapshot of deleted session {}: {}", id,
                       s.ToString());
        }
        done(absl::OkStatus());
      });
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
    s.host_sessions = host_sessions_.load(std::memory_order_relaxed);
    s.host_state_bytes = host_bytes_.load(std::memory_order_relaxed);
    s.snapshot_writes = snapshot_writes_;
    s.snapshot_write_failures = snapshot_write_failures_;
    s.restores_from_disk = restores_from_disk_;
    if (dir_ != nullptr) {
      const SnapshotDirStats d = dir_->Stats();
      s.disk_sessions = d.files;
      s.disk_state_bytes = d.bytes;
      for (const auto& [reason, n] : d.quarantined_by_reason) s.quarantined_snapshots += n;
    }
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

  absl::Status CanAddSessionLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t n = static_cast<int64_t>(sessions_.size()) + pending_creates_;
    if (n >= options_.max_sessions) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the server holds its maximum of ", options_.max_sessions, " sessions"));
    }
    if (n >= session_cap_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the server holds ", session_cap_, " sessions, all that fit in its slots and host "
          "state budget (no state dir to spill to)"));
    }
    if (dir_ != nullptr && options_.disk_state_bytes > 0 &&
        static_cast<uint64_t>(n + 1) * snapshot_bytes_ >
            static_cast<uint64_t>(options_.disk_state_bytes)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the disk state budget of ", options_.disk_state_bytes, " bytes is full (",
          snapshot_bytes_, " bytes per session)"));
    }
    return absl::OkStatus();
  }

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

  void UpdateRunning() {
    absl::MutexLock lock(&mu_);
    running_turns_ = static_cast<int32_t>(active_.size());
  }

  // Runs `fn` on the engine thread at its next iteration (from an I/O thread).
  void PostCompletion(std::function<void()> fn) {
    {
      absl::MutexLock lock(&mu_);
      completions_.push_back(std::move(fn));
    }
    signal_->Notify();
  }

  static bool Durable(const SessionState& st) {
    return st.disk_gen == st.gen;
  }

  void SetHost(SessionState& st, std::shared_ptr<const std::vector<float>> host) {
    if (st.host) {
      host_bytes_ -= state_bytes_;
      host_sessions_.fetch_sub(1, std::memory_order_relaxed);
    }
    st.host = std::move(host);
    if (st.host) {
      host_bytes_ += state_bytes_;
      host_sessions_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // Host copies over the budget leave RAM: a durable one is dropped (its snapshot is on
  // disk); another is written to disk first and dropped when that completes.
  void EnforceHostBudget() {
    if (host_bytes_ <= options_.host_state_bytes) return;
    // Checkpoints are a convenience: they go first, least recently used sessions' first.
    std::vector<std::pair<uint64_t, std::string>> with_checkpoints;
    for (auto& [id, st] : states_) {
      if (!st.checkpoints.empty()) with_checkpoints.emplace_back(st.last_used, id);
    }
    std::sort(with_checkpoints.begin(), with_checkpoints.end());
    for (const auto& [used, id] : with_checkpoints) {
      SessionState& st = states_[id];
      while (!st.checkpoints.empty() && host_bytes_ > options_.host_state_bytes) {
        st.checkpoints.pop_front();
        host_bytes_ -= state_bytes_;
      }
      if (host_bytes_ <= options_.host_state_bytes) return;
    }
    std::vector<std::pair<uint64_t, std::string>> lru;
    for (auto& [id, st] : states_) {
      if (st.host) lru.emplace_back(st.last_used, id);
    }
    std::sort(lru.begin(), lru.end());
    for (const auto& [used, id] : lru) {
      if (host_bytes_ <= options_.host_state_bytes) break;
      SessionState& st = states_[id];
      if (Durable(st)) {
        SetHost(st, nullptr);
        ++spills_to_disk_;
        if (options_.observer != nullptr) {  // metrics hook
          options_.observer->OnEviction(EvictionReason::kHostBudget);
          options_.observer->OnSpill(StateTier::kDisk);
        }
      } else if (dir_ != nullptr) {
        StartWrite(id);
      }
    }
  }

  // A free slot, evicting the least recently used resident committed state if needed: to
  // nothing when its snapshot is on disk, else to host RAM within the budget. -1 when no
  // slot can be freed until a spill write completes (the caller retries later).
  int32_t TakeSlot() {
    if (free_slots_.empty()) {
      std::string victim;
      uint64_t oldest = std::numeric_limits<uint64_t>::max();
      for (auto& [id, st] : states_) {
        if (st.slot >= 0 && st.last_used < oldest) {
          oldest = st.last_used;
          victim = id;
        }
      }
      // Admission keeps running turns below the slot count, so a committed one exists.
      XLSTMD_CHECK(!victim.empty());
      SessionState& st = states_[victim];
      if (!Durable(st)) {
        if (host_bytes_ + state_bytes_ > options_.host_state_bytes) EnforceHostBudget();
        if (host_bytes_ + state_bytes_ > options_.host_state_bytes) {
          if (dir_ != nullptr) StartWrite(victim);
          return -1;
        }
        auto copy = std::make_shared<std::vector<float>>(FloatsPerSlot());
        model_->ReadSlot(st.slot, copy->data());
        SetHost(st, std::move(copy));
      }
      free_slots_.push_back(st.slot);
      st.slot = -1;
      AdjustResident(-1);
      if (options_.observer != nullptr) {  // metrics hook
        options_.observer->OnEviction(EvictionReason::kSlotPressure);
        options_.observer->OnSpill(st.host ? StateTier::kHost : StateTier::kDisk);
      }
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
    SetHost(it->second, nullptr);
    host_bytes_ -= state_bytes_ * static_cast<int64_t>(it->second.checkpoints.size());
    const bool on_disk = it->second.disk_version >= 0 || it->second.write_in_flight;
    states_.erase(it);
    // A write still in flight re-creates the file; its completion removes it again.
    if (dir_ != nullptr && on_disk) {
      io_->Submit([this, id] {
        absl::Status s = dir_->Remove(id);
        if (!s.ok() && !absl::IsNotFound(s)) {
          spdlog::warn("could not remove the snapshot of deleted session {}: {}", id,
                       s.ToString());
        }
      });
    }
  }

  void AdjustResident(int32_t delta) {
    absl::MutexLock lock(&mu_);
    resident_sessions_ += delta;
  }

  // The session's snapshot metadata as committed (or, for a sync commit, as it will be).
  SnapshotMeta MetaLocked(const SessionMeta& m) const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    SnapshotMeta out;
    out.session_id = m.info.session_id;
    out.owner = m.info.owner;
    out.version = m.info.version;
    out.token_count = m.info.token_count;
    out.created_unix_ms = m.info.created_unix_ms;
    out.updated_unix_ms = m.info.updated_unix_ms;
    out.flags = (m.session_start_done ? kFlagSessionStartDone : 0) |
                (m.reply_open ? kFlagReplyOpen : 0);
    for (const std::string& r : m.request_order) {
      out.recent_requests.push_back({r, m.request_versions.at(r)});
    }
    return out;
  }

  // The committed state of `st` as host floats (a copy of the slot, the shared host copy, or
  // zeros), or null when it is only on disk.
  std::shared_ptr<const std::vector<float>> StateCopy(const SessionState& st) {
    if (st.slot >= 0) {
      auto copy = std::make_shared<std::vector<float>>(FloatsPerSlot());
      model_->ReadSlot(st.slot, copy->data());
      return copy;
    }
    if (st.host) return st.host;
    if (st.disk_version < 0 && st.version == 0 && st.checkpoints.empty()) {
      return std::make_shared<std::vector<float>>(FloatsPerSlot(), 0.0f);
    }
    return nullptr;
  }

  // Writes the session's committed state to the disk tier in the background, one write per
  // session at a time (a newer commit during a write is written after it).
  void StartWrite(const std::string& id) {
    if (dir_ == nullptr) return;
    auto it = states_.find(id);
    if (it == states_.end()) return;
    SessionState& st = it->second;
    if (st.write_in_flight) {
      st.write_again = true;
      return;
    }
    if (Durable(st)) return;
    std::shared_ptr<const std::vector<float>> state = StateCopy(st);
    if (!state) return;  // only on disk already
    SnapshotMeta meta;
    {
      absl::MutexLock lock(&mu_);
      auto m = sessions_.find(id);
      if (m == sessions_.end()) return;
      meta = MetaLocked(m->second);
    }
    meta.version = st.version;  // the state's own version (the meta may be ahead in sync mode)
    st.write_in_flight = true;
    const uint64_t gen = st.gen;
    SubmitWrite(std::move(meta), std::move(state),
                [this, id, gen](uint64_t version, absl::Status s) {
                  OnWriteDone(id, version, gen, std::move(s));
                });
  }

  // Encodes and writes on an I/O thread; `done(version, status)` runs on the engine thread.
  void SubmitWrite(SnapshotMeta meta, std::shared_ptr<const std::vector<float>> state,
                   std::function<void(uint64_t, absl::Status)> done) {
    {
      absl::MutexLock lock(&mu_);
      ++writes_in_flight_;
    }
    io_->Submit([this, meta = std::move(meta), state = std::move(state), done = std::move(done)] {
      absl::Status status;
      absl::StatusOr<SnapshotParts> parts =
          EncodeSnapshotParts(meta, fingerprint_, model_->state_layout(), absl::MakeSpan(*state));
      if (!parts.ok()) {
        status = parts.status();
      } else {
        const std::string_view payload(reinterpret_cast<const char*>(parts->payload.data()),
                                       parts->payload.size() * sizeof(float));
        const std::string_view pieces[] = {parts->head, payload, parts->tail};
        status = dir_->Write(meta.session_id, pieces);
      }
      const uint64_t version = meta.version;
      PostCompletion([this, done, version, status] {
        // First the follow-ups (a newer version's write), then the count: FlushToDisk waits
        // for zero and must not see it between a write and its successor.
        {
          absl::MutexLock lock(&mu_);
          if (status.ok()) {
            ++snapshot_writes_;
          } else {
            ++snapshot_write_failures_;
          }
        }
        done(version, status);
        absl::MutexLock lock(&mu_);
        --writes_in_flight_;
      });
    });
  }

  void OnWriteDone(const std::string& id, uint64_t version, uint64_t gen, absl::Status status) {
    auto it = states_.find(id);
    if (it == states_.end()) {
      // Deleted while writing: the write just re-created the file.
      if (status.ok()) {
        io_->Submit([this, id] { (void)dir_->Remove(id); });
      }
      return;
    }
    SessionState& st = it->second;
    st.write_in_flight = false;
    if (status.ok()) {
      st.disk_version = static_cast<int64_t>(version);
      st.disk_gen = gen;
    } else {
      // The state stays in memory; a later commit, flush or spill writes it again (a new temp
      // file: a failed fsync is never retried on the same descriptor).
      spdlog::error("snapshot write for session {} (version {}) failed: {}", id, version,
                    status.ToString());
    }
    if (pending_sync_writes_.count(id) != 0) {
      RunPendingWrite(id);  // a sync commit waited behind this write; it supersedes it
    } else if (st.write_again) {
      st.write_again = false;
      StartWrite(id);
    }
    EnforceHostBudget();
  }

  // Takes a slot and loads the committed state into it; false when no slot is available yet.
  bool Admit(std::unique_ptr<Turn>& t) {
    const int32_t slot = TakeSlot();
    if (slot < 0) return false;
    t->admitted = SteadyClock::now();
    t->slot = slot;
    t->seq = ++turn_seq_;
    // The turn works on a copy, so the committed state survives a cancel untouched.
    auto it = t->create_only ? states_.end() : states_.find(t->session_id);
    Turn* turn = t.get();
    active_.push_back(std::move(t));
    if (it == states_.end()) {
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
      StartRestore(*turn);
      return true;
    } else {
      FailTurns({turn}, absl::DataLossError(absl::StrCat(
                           "the committed state of session ", turn->session_id,
                           " is in no tier")));
      return true;
    }
    BeginRunning(*turn);
    return true;
  }

  // Reads the snapshot on an I/O thread; the turn continues when it is in the slot.
  void StartRestore(Turn& t) {
    const uint64_t seq = t.seq;
    const std::string id = t.session_id;
    const uint64_t version = t.base_version;
    io_->Submit([this, seq, id, version] {
      const auto start = SteadyClock::now();
      auto state = std::make_shared<std::vector<float>>(FloatsPerSlot());
      absl::Status status;
      absl::StatusOr<std::string> bytes = dir_->Read(id);
      if (!bytes.ok()) {
        status = bytes.status();
      } else {
        absl::StatusOr<SnapshotMeta> meta =
            DecodeSnapshotInto(*bytes, fingerprint_, model_->state_layout(), absl::MakeSpan(*state));
        if (!meta.ok()) {
          status = meta.status();
        } else if (meta->session_id != id || meta->version != version) {
          status = absl::DataLossError(absl::StrCat("snapshot holds session ", meta->session_id,
                                                    " version ", meta->version, ", expected ",
                                                    id, " version ", version));
        }
      }
      if (!status.ok() && (absl::IsDataLoss(status) || absl::IsFailedPrecondition(status))) {
        (void)dir_->Quarantine(id, SnapshotErrorReason(status), status.ToString());
      }
      const double ms = MsBetween(start, SteadyClock::now());
      PostCompletion([this, seq, state, status, ms] { OnRestored(seq, state, status, ms); });
    });
  }

  void OnRestored(uint64_t seq, std::shared_ptr<std::vector<float>> state, absl::Status status,
                  double ms) {
    Turn* t = FindActive(seq);
    if (t == nullptr || t->phase != Turn::Phase::kRestoring) return;  // cancelled meanwhile
    if (!status.ok()) {
      FailTurns({t}, absl::DataLossError(absl::StrCat(
                         "could not restore session ", t->session_id, ": ", status.message())));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      ++restores_from_disk_;
      restore_ms_total_ += ms;
    }
    if (options_.observer != nullptr) {  // metrics hook
      options_.observer->OnRestore(StateTier::kDisk, ms / 1000);
    }
    model_->WriteSlot(t->slot, state->data());
    BeginRunning(*t);
  }

  Turn* FindActive(uint64_t seq) {
    for (auto& a : active_) {
      if (a->seq == seq) return a.get();
    }
    return nullptr;
  }

  // The turn's state is in its slot: set up sampling and streaming and start prefilling.
  void BeginRunning(Turn& turn) {
    Turn* t = &turn;
    t->phase = Turn::Phase::kPrefill;
    if (t->create_only) return;
    if (t->checkpoint.has_value()) {
      auto copy = std::make_shared<std::vector<float>>(FloatsPerSlot());
      model_->ReadSlot(t->slot, copy->data());
      t->checkpoint->state = std::move(copy);
    }
    auto sampler = Sampler::Create(t->sampling, static_cast<int32_t>(model_->vocab_size()),
                                   t->seed, options_.sampling);
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

  void DropCancelled() {
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

  void FailTurns(const std::vector<Turn*>& turns, const absl::Status& reason) {
    for (Turn* t : turns) RollBack(*t, reason);
    std::erase_if(active_, [&](const std::unique_ptr<Turn>& a) {
      return std::find(turns.begin(), turns.end(), a.get()) != turns.end();
    });
  }

  static absl::Status ModelError(const absl::Status& s) {
    return absl::InternalError(absl::StrCat("model error: ", s.message()));
  }

  void RemoveActive(Turn* t) {
    std::erase_if(active_, [t](const std::unique_ptr<Turn>& a) { return a.get() == t; });
  }

  // The turn's final token has been fed. With sync durability its state is written first
  // and the commit follows the write; otherwise it commits now.
  void Finalize(Turn& t) {
    if (options_.durability != EngineOptions::Durability::kSync || dir_ == nullptr) {
      Commit(t);
      return;
    }
    SnapshotMeta meta;
    {
      absl::MutexLock lock(&mu_);
      SessionMeta* m = FindLocked(t.owner, t.session_id);
      if (m == nullptr) {
        RollBack(t, absl::InternalError("session vanished during its turn"));
        RemoveActive(&t);
        return;
      }
      meta = MetaLocked(*m);
    }
    ApplyCommitToMeta(t, &meta);
    auto state = std::make_shared<std::vector<float>>(FloatsPerSlot());
    model_->ReadSlot(t.slot, state->data());
    t.phase = Turn::Phase::kPersisting;
    // An async write of an older version may still be running for this session; the sync
    // write waits behind it so the file only ever moves forward.
    SessionState& st = states_[t.session_id];
    const uint64_t seq = t.seq;
    auto write = [this, seq, meta = std::move(meta), state]() mutable {
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

  void OnPersisted(uint64_t seq, uint64_t version, absl::Status status) {
    Turn* t = FindActive(seq);
    XLSTMD_CHECK(t != nullptr);  // persisting turns are never dropped
    SessionState& st = states_[t->session_id];
    st.write_in_flight = false;
    if (!status.ok()) {
      spdlog::error("sync snapshot of session {} version {} failed: {}", t->session_id, version,
                    status.ToString());
      const std::string id = t->session_id;
      RollBack(*t, absl::UnavailableError(absl::StrCat(
                       "the turn could not be made durable, so it was rolled back: ",
                       status.message())));
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
    }
    RunPendingWrite(id);
  }

  void RunPendingWrite(const std::string& id) {
    auto p = pending_sync_writes_.find(id);
    if (p == pending_sync_writes_.end()) {
      auto it = states_.find(id);
      if (it != states_.end() && it->second.write_again) {
        it->second.write_again = false;
        StartWrite(id);
      }
      return;
    }
    auto write = std::move(p->second);
    pending_sync_writes_.erase(p);
    states_[id].write_in_flight = true;
    write();
  }

  // What a commit of `t` does to the session's snapshot metadata.
  void ApplyCommitToMeta(const Turn& t, SnapshotMeta* meta) const {
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

  void InstallCommitted(const std::string& id, int32_t slot, uint64_t version) {
    SessionState& st = states_[id];
    if (st.slot >= 0) {
      FreeSlot(st.slot);
    } else {
      AdjustResident(+1);
    }
    st.slot = slot;
    SetHost(st, nullptr);
    st.version = version;
    ++st.gen;
    st.last_used = ++tick_;
    if (options_.durability == EngineOptions::Durability::kAsync) StartWrite(id);
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
    InstallCommitted(info.session_id, t.slot, 0);
    t.slot = -1;
    if (options_.durability == EngineOptions::Durability::kSync) StartWrite(info.session_id);
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
    if (options_.observer != nullptr) {  // metrics hook
      for (size_t i = 0; i < expired.size(); ++i) {
        options_.observer->OnEviction(EvictionReason::kIdleTtl);
      }
    }
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

  int64_t writes_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t snapshot_writes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t snapshot_write_failures_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t restores_from_disk_ ABSL_GUARDED_BY(mu_) = 0;
  double restore_ms_total_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::function<void()>> completions_ ABSL_GUARDED_BY(mu_);

  // Set in Start(), then immutable.
  StateFingerprint fingerprint_;
  int64_t state_bytes_ = 0;
  uint64_t snapshot_bytes_ = 0;
  int32_t session_cap_ = 0;
  std::unique_ptr<SnapshotDir> dir_;
  std::unique_ptr<IoPool> io_;

  std::atomic<int64_t> host_bytes_{0};  // written by the engine thread only
  std::atomic<int32_t> host_sessions_{0};

  // Engine thread only.
  std::unordered_map<std::string, std::function<void()>> pending_sync_writes_;
  uint64_t turn_seq_ = 0;
  int64_t spills_to_disk_ = 0;
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
  if (options.io_threads < 1) return absl::InvalidArgumentError("io_threads must be >= 1");
  if (options.keep_turn_checkpoints < 0) {
    return absl::InvalidArgumentError("keep_turn_checkpoints must be >= 0");
  }
  if (options.host_state_bytes < 0 || options.disk_state_bytes < 0) {
    return absl::InvalidArgumentError("state byte budgets must be >= 0");
  }
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
