#include "core/engine/session_index.h"

#include "core/base/retry.h"
#include "absl/strings/str_cat.h"
#include "core/base/random.h"

namespace xlstmd::core {
namespace {

// 128 random bits as 22 characters of unpadded base64url: unguessable and safe in URLs.
std::string NewSessionId() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint8_t bytes[16];
  base::RandomBytes(bytes, sizeof(bytes));
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

}  // namespace

absl::Status SessionNotFound(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("session '", id, "' not found"));
}

absl::Status ServerUnavailable() {
  return absl::UnavailableError("the server is shutting down and admits no new work");
}

absl::StatusOr<SessionInfo> SessionIndex::Get(const std::string& owner,
                                              const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.meta.info.owner != owner) return SessionNotFound(id);
  return it->second.meta.info;
}

std::optional<SessionMeta> SessionIndex::Peek(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return std::nullopt;
  return it->second.meta;
}

std::optional<SnapshotMeta> SessionIndex::Snapshot(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return std::nullopt;
  return it->second.meta.ToSnapshot();
}

std::vector<SessionInfo> SessionIndex::List(const std::string& owner, const std::string& after_id,
                                            int32_t limit) const {
  std::vector<SessionInfo> out;
  absl::MutexLock lock(&mu_);
  for (auto it = sessions_.upper_bound(after_id);
       it != sessions_.end() && static_cast<int32_t>(out.size()) < limit; ++it) {
    if (it->second.meta.info.owner == owner) out.push_back(it->second.meta.info);
  }
  return out;
}

std::vector<std::string> SessionIndex::IdleIds() const {
  std::vector<std::string> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, e] : sessions_) {
    if (!e.meta.info.turn_running) out.push_back(id);
  }
  return out;
}

bool SessionIndex::Contains(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  return sessions_.count(id) != 0;
}

int32_t SessionIndex::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int32_t>(sessions_.size());
}

int64_t SessionIndex::redis_sessions() const {
  absl::MutexLock lock(&mu_);
  return redis_sessions_;
}

absl::Status SessionIndex::CanAdd(const std::string& owner) const {
  absl::MutexLock lock(&mu_);
  return CanAddLocked(owner);
}

absl::Status SessionIndex::CanAddLocked(const std::string& owner) const {
  const int32_t max_sessions = QuotaFor(limits_.tenant_quotas, owner,
                                        &TenantQuota::max_sessions, limits_.tenant_max_sessions);
  if (max_sessions > 0) {
    auto it = owner_sessions_.find(owner);
    if (it != owner_sessions_.end() && it->second >= max_sessions) {
      return base::CapacityError(
          absl::StrCat("tenant session quota reached (", max_sessions,
                       " sessions); delete sessions this tenant no longer needs"),
          base::kShedTenantSessions);
    }
  }
  const int64_t n = static_cast<int64_t>(sessions_.size()) + pending_creates_;
  if (n >= limits_.max_sessions) {
    return base::CapacityError(
        absl::StrCat("the server holds its maximum of ", limits_.max_sessions, " sessions"),
        base::kShedMaxSessions);
  }
  if (limits_.ram_cap > 0 && n >= limits_.ram_cap) {
    return base::CapacityError(
        absl::StrCat("the server holds ", limits_.ram_cap,
                     " sessions, all that fit in its slots and host "
                     "state budget (no state dir to spill to)"),
        base::kShedStateCapacity);
  }
  if (limits_.disk_budget_bytes > 0 &&
      static_cast<uint64_t>(n + 1) * limits_.snapshot_bytes > limits_.disk_budget_bytes) {
    return base::CapacityError(absl::StrCat(
        "the disk state budget of ", limits_.disk_budget_bytes, " bytes is full (",
        limits_.snapshot_bytes, " bytes per session)"),
        base::kShedStateCapacity);
  }
  return absl::OkStatus();
}

absl::StatusOr<SessionInfo> SessionIndex::Create(const std::string& owner,
                                                 const SessionMeta* from) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CanAddLocked(owner); !s.ok()) return s;
  Entry& e = InsertLocked(owner);
  if (from != nullptr) {
    e.meta.info.version = from->info.version;
    e.meta.info.token_count = from->info.token_count;
    e.meta.session_start_done = from->session_start_done;
    e.meta.reply_open = from->reply_open;
  }
  return e.meta.info;
}

absl::Status SessionIndex::ReserveCreate(const std::string& owner) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CanAddLocked(owner); !s.ok()) return s;
  ++pending_creates_;
  ++owner_sessions_[owner];
  return absl::OkStatus();
}

void SessionIndex::CancelCreate(const std::string& owner) {
  absl::MutexLock lock(&mu_);
  --pending_creates_;
  if (--owner_sessions_[owner] <= 0) owner_sessions_.erase(owner);
}

SessionInfo SessionIndex::CompleteCreate(const std::string& owner, uint64_t token_count) {
  absl::MutexLock lock(&mu_);
  --pending_creates_;
  --owner_sessions_[owner];  // InsertLocked counts it again
  Entry& e = InsertLocked(owner);
  e.meta.info.token_count = token_count;
  e.meta.session_start_done = true;
  return e.meta.info;
}

void SessionIndex::Register(SessionMeta meta) {
  absl::MutexLock lock(&mu_);
  const std::string id = meta.info.session_id;
  auto [it, inserted] = sessions_.try_emplace(id);
  Entry& e = it->second;
  if (!inserted) UncountLocked(e.meta.info.owner);
  ++owner_sessions_[meta.info.owner];
  e.meta = std::move(meta);
  e.last_active = clock_->Now();
}

absl::StatusOr<SessionMeta> SessionIndex::ClaimForTurn(const std::string& owner,
                                                       const std::string& id,
                                                       const TurnClaim& claim) {
  absl::MutexLock lock(&mu_);
  Entry* e = FindLocked(owner, id);
  if (e == nullptr) return SessionNotFound(id);
  SessionMeta& m = e->meta;
  // A retry of a committed request must learn that it committed, whatever else changed.
  if (!claim.request_id.empty()) {
    if (std::optional<uint64_t> v = m.CommittedVersionOf(claim.request_id)) {
      const std::optional<uint64_t> fp = m.FingerprintOf(claim.request_id);
      if (fp.has_value() && claim.request_fingerprint != 0 && *fp != claim.request_fingerprint) {
        return base::FieldError(
            "request_id",
            absl::StrCat("request_id ", claim.request_id, " was already used for a different "
                         "request (committed as version ", *v, " of session ", id,
                         "); a new request needs a new id"));
      }
      return absl::AlreadyExistsError(absl::StrCat("request_id ", claim.request_id,
                                                   " was already committed as version ", *v,
                                                   " of session ", id));
    }
  }
  if (m.info.turn_running) {
    return absl::AbortedError(absl::StrCat("session ", id, " already has a turn running"));
  }
  if (claim.expected_version.has_value() && *claim.expected_version != m.info.version) {
    return absl::AbortedError(absl::StrCat("session ", id, " is at version ", m.info.version,
                                           ", not the expected ", *claim.expected_version));
  }
  m.info.turn_running = true;
  return m;
}

absl::StatusOr<SessionMeta> SessionIndex::CheckIdle(const std::string& owner,
                                                    const std::string& id,
                                                    const std::string& busy_message,
                                                    bool mark_busy) {
  absl::MutexLock lock(&mu_);
  Entry* e = FindLocked(owner, id);
  if (e == nullptr) return SessionNotFound(id);
  if (e->meta.info.turn_running) {
    return absl::AbortedError(absl::StrCat("session ", id, " ", busy_message));
  }
  if (mark_busy) e->meta.info.turn_running = true;
  return e->meta;
}

std::optional<SnapshotMeta> SessionIndex::ClaimById(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return std::nullopt;
  it->second.meta.info.turn_running = true;
  return it->second.meta.ToSnapshot();
}

void SessionIndex::Release(const std::string& id) {
  absl::MutexLock lock(&mu_);
  if (auto it = sessions_.find(id); it != sessions_.end()) {
    it->second.meta.info.turn_running = false;
  }
}

std::optional<SessionIndex::Committed> SessionIndex::Commit(const std::string& id,
                                                            const CommitDelta& delta) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return std::nullopt;
  Committed out;
  out.history_tokens = it->second.meta.info.token_count;
  it->second.meta.ApplyCommit(delta, clock_->UnixMs());
  it->second.meta.info.turn_running = false;
  it->second.last_active = clock_->Now();
  out.version = it->second.meta.info.version;
  return out;
}

std::optional<std::pair<SnapshotMeta, ExpectedVersion>> SessionIndex::PreviewCommit(
    const std::string& id, const CommitDelta& delta) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return std::nullopt;
  const SessionMeta& m = it->second.meta;
  const ExpectedVersion expected = m.redis_generation.empty()
                                       ? ExpectedVersion::Absent()
                                       : ExpectedVersion::Is(m.info.version);
  SessionMeta next = m;
  next.ApplyCommit(delta, clock_->UnixMs());
  return std::make_pair(next.ToSnapshot(), expected);
}

std::optional<SessionInfo> SessionIndex::Rewind(const std::string& id, const RewindPoint& point) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return std::nullopt;
  it->second.meta.RewindTo(point, clock_->UnixMs());
  it->second.last_active = clock_->Now();
  return it->second.meta.info;
}

absl::Status SessionIndex::Adopt(const std::string& owner, const std::string& id,
                                 const SnapshotMeta& meta, const std::string& generation,
                                 bool* changed) {
  *changed = false;
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end() &&
      (it->second.meta.info.owner != owner || it->second.meta.info.turn_running ||
       it->second.meta.redis_generation == generation)) {
    return absl::OkStatus();  // raced with another call; its own checks answer
  }
  if (it == sessions_.end()) {
    if (absl::Status s = CanAddLocked(owner); !s.ok()) return s;
    it = sessions_.emplace(id, Entry{}).first;
    ++owner_sessions_[owner];
  }
  SessionMeta adopted = SessionMeta::FromSnapshot(meta);
  adopted.info.session_id = id;
  adopted.info.owner = owner;
  adopted.redis_generation = std::move(it->second.meta.redis_generation);  // counted below
  it->second.meta = std::move(adopted);
  SetRedisGenerationLocked(it->second.meta, generation);
  it->second.last_active = clock_->Now();
  *changed = true;
  return absl::OkStatus();
}

void SessionIndex::SetRedisGeneration(const std::string& id, std::string generation) {
  absl::MutexLock lock(&mu_);
  if (auto it = sessions_.find(id); it != sessions_.end()) {
    SetRedisGenerationLocked(it->second.meta, std::move(generation));
  }
}

void SessionIndex::SetRedisGenerationLocked(SessionMeta& m, std::string generation) {
  if (m.redis_generation.empty() && !generation.empty()) ++redis_sessions_;
  if (!m.redis_generation.empty() && generation.empty()) --redis_sessions_;
  m.redis_generation = std::move(generation);
}

bool SessionIndex::ForgetRedisCopy(const std::string& id, const std::string& generation,
                                   bool keep) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.meta.info.turn_running ||
      it->second.meta.redis_generation != generation) {
    return false;  // changed meanwhile
  }
  if (keep) {
    SetRedisGenerationLocked(it->second.meta, "");
    return false;
  }
  EraseLocked(it);
  return true;
}

bool SessionIndex::Erase(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return false;
  EraseLocked(it);
  return true;
}

std::vector<std::string> SessionIndex::ExpireIdle(SteadyClock::duration ttl) {
  std::vector<std::string> expired;
  absl::MutexLock lock(&mu_);
  const auto now = clock_->Now();
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    auto next = std::next(it);
    if (!it->second.meta.info.turn_running && now - it->second.last_active > ttl) {
      expired.push_back(it->first);
      EraseLocked(it);
    }
    it = next;
  }
  return expired;
}

SessionIndex::Entry* SessionIndex::FindLocked(const std::string& owner, const std::string& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.meta.info.owner != owner) return nullptr;
  return &it->second;
}

SessionIndex::Entry& SessionIndex::InsertLocked(const std::string& owner) {
  std::string id = NewSessionId();
  while (sessions_.count(id) != 0) id = NewSessionId();
  Entry& e = sessions_[id];
  ++owner_sessions_[owner];
  e.meta.info.session_id = id;
  e.meta.info.owner = owner;
  e.meta.info.created_unix_ms = e.meta.info.updated_unix_ms = clock_->UnixMs();
  e.last_active = clock_->Now();
  return e;
}

void SessionIndex::UncountLocked(const std::string& owner) {
  auto it = owner_sessions_.find(owner);
  if (it != owner_sessions_.end() && --it->second <= 0) owner_sessions_.erase(it);
}

void SessionIndex::EraseLocked(std::map<std::string, Entry>::iterator it) {
  UncountLocked(it->second.meta.info.owner);
  if (!it->second.meta.redis_generation.empty()) --redis_sessions_;
  sessions_.erase(it);
}

}  // namespace xlstmd::core
