// StateTiers: where every session's committed state is, and every move between the tiers
// (docs/state-tiers.md): a resident slot (SlotPool), a host copy in RAM (byte budget, least
// recently used first out), a snapshot file on disk (SnapshotDir), and the shared Redis tier
// (RedisStore, version compare-and-set). Also the durability modes, the rewind points kept for
// RewindSession, and the counters behind the tier metrics.
//
// A state leaves a faster tier only once a slower one holds it, so a committed turn is never
// lost to an eviction. Every change of a committed state (commit, rewind, import, adoption)
// bumps its generation; a write records the generation it wrote, which is how "is this state
// on disk / in Redis" is answered (versions cannot serve: after a rewind a version number comes
// back with different contents).
//
// Thread rules: every method runs on the scheduler thread unless marked otherwise. Blocking
// I/O (files, Redis) runs on the tiers' I/O pool; its results come back through `post` (which
// runs a function on the scheduler thread at its next iteration), so completion callbacks
// (`done`) always run on the scheduler thread. Issuing a state copy between a slot and host
// memory is the only work a move does on the scheduler thread; on a device neither direction
// waits for the copy there (SlotStore::ReadAsync, WriteAsync).
#ifndef XLSTMD_CORE_ENGINE_STATE_TIERS_H_
#define XLSTMD_CORE_ENGINE_STATE_TIERS_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/engine/clock.h"
#include "core/engine/engine_observer.h"
#include "core/engine/host_state.h"
#include "core/engine/io_pool.h"
#include "core/engine/session_index.h"
#include "core/engine/slot_pool.h"
#include "core/model/state_layout.h"
#include "core/state/redis_store.h"
#include "core/state/snapshot.h"
#include "core/state/snapshot_store.h"

namespace xlstmd::core {

enum class Durability {
  kNone,   // snapshots are written only to spill states out of host memory
  kAsync,  // every commit is also written in the background (loss window: the I/O queue)
  kSync,   // a turn's `finished` is sent only after its snapshot is durable on disk
};

// How the tiers reach the backend's state slots (the model in the daemon, a vector in tests).
class SlotStore {
 public:
  virtual ~SlotStore() = default;
  virtual size_t floats_per_slot() const = 0;
  virtual void Read(int32_t slot, float* dst) = 0;
  virtual void Write(int32_t slot, const float* src) = 0;
  // Starts a copy of `slot` into `dst` and returns a fence: `dst` holds the state once
  // WaitCopy(fence) has returned (any thread). Ops issued later on the slot run after the
  // copy, so the slot may be reused at once. Default: a synchronous Read (fence 0).
  virtual uint64_t ReadAsync(int32_t slot, float* dst) {
    Read(slot, dst);
    return 0;
  }
  // OK, or the device's error (the copy's destination then holds garbage).
  virtual absl::Status WaitCopy(uint64_t fence) { return absl::OkStatus(); }
  // Starts a copy of `src` into `slot` and returns without waiting for it: the store keeps
  // `src` alive until the copy has run, and ops issued later on the slot run after it.
  // Default: a synchronous Write.
  virtual void WriteAsync(int32_t slot, HostState src) { Write(slot, src->data()); }
  virtual void Copy(int32_t from, int32_t to) = 0;
  virtual void Reset(int32_t slot) = 0;
};

// Runs a function on the scheduler thread at its next iteration (from any thread).
using PostFn = std::function<void(std::function<void()>)>;
using InfoDone = std::function<void(absl::StatusOr<SessionInfo>)>;
using StatusDone = std::function<void(absl::Status)>;
// A sync write's outcome: on success the written snapshot's digest (its footer checksum:
// XXH3-64 over the section checksums, the last 8 bytes of the file, little-endian).
using DigestDone = std::function<void(absl::StatusOr<uint64_t>)>;

struct TierOptions {
  std::string state_dir;  // "" = no disk tier
  Durability durability = Durability::kNone;
  int64_t host_state_bytes = int64_t{4} << 30;
  int32_t io_threads = 2;
  int32_t rewind_points = 0;  // kept per session; 0 = rewind disabled
  std::string redis_url;      // "" = no Redis tier
  int64_t redis_timeout_ms = 2000;
  int32_t redis_connections = 4;
  int64_t idle_ttl_ms = 0;  // Redis forgets sessions idle this long by itself
  EngineObserver* observer = nullptr;
  // Where host copies of states come from (page-locked on a GPU); not owned, must outlive
  // the tiers. nullptr: the tiers use heap buffers of their own.
  HostStatePool* state_pool = nullptr;
};

// What the tiers need to know about the model's state.
struct StateCodec {
  StateFingerprint fingerprint;
  const StateLayout* layout = nullptr;
  uint64_t snapshot_bytes = 0;  // the largest snapshot of this layout
};

struct TierStats {
  int32_t host_sessions = 0;
  int64_t host_state_bytes = 0;
  int64_t snapshot_writes = 0;
  int64_t snapshot_write_failures = 0;
  int64_t restores_from_disk = 0;
  int64_t restores_from_redis = 0;
};

// The tiers as the scheduler sees them: the one interface it calls for a turn's state (its
// slot, its starting state, and the commit), so the scheduler can be built and tested over a
// fake. StateTiers implements it; the method comments there give the contracts.
class TierOps {
 public:
  virtual ~TierOps() = default;
  virtual bool shares_commits() const = 0;
  virtual bool sync_commits() const = 0;
  virtual int32_t TakeSlot() = 0;
  virtual void FreeSlot(int32_t slot) = 0;
  virtual void LoadInto(const std::string& id, uint64_t version, int32_t slot,
                        std::function<bool()> wanted, StatusDone done) = 0;
  virtual void LoadZero(int32_t slot) = 0;
  virtual HostState CaptureSlot(int32_t slot) = 0;
  virtual void InstallCommitted(const std::string& id, int32_t slot, uint64_t version) = 0;
  virtual void MarkShared(const std::string& id) = 0;
  virtual void AddRewindPoint(const std::string& id, RewindPoint point) = 0;
  virtual void Drop(const std::string& id) = 0;
  virtual void PersistBeforeCommit(const std::string& id, SnapshotMeta meta, HostState state,
                                   DigestDone done) = 0;
  virtual void ShareBeforeCommit(SnapshotMeta meta, ExpectedVersion expected, HostState state,
                                 std::function<void(absl::StatusOr<RedisManifest>)> done) = 0;
  virtual void AckWhenStored(const std::string& id, SessionInfo info, bool new_session,
                             ExpectedVersion expected, InfoDone done) = 0;
};

class StateTiers final : public TierOps {
 public:
  // Opens the disk tier (registering every valid snapshot's session in `index`; the states
  // load lazily) and connects to Redis, per `options`. None of the pointers is owned; all
  // must outlive the tiers.
  static absl::StatusOr<std::unique_ptr<StateTiers>> Create(const TierOptions& options,
                                                            StateCodec codec, SlotStore* slots,
                                                            SlotPool* pool, SessionIndex* index,
                                                            const Clock* clock, PostFn post);
  ~StateTiers() override;  // runs the I/O already submitted (completions are dropped)
  StateTiers(const StateTiers&) = delete;
  StateTiers& operator=(const StateTiers&) = delete;

  bool has_disk() const { return dir_ != nullptr; }
  bool has_redis() const { return redis_ != nullptr; }
  // Commits go to Redis first (a version conflict rolls the turn back).
  bool shares_commits() const override { return redis_ != nullptr; }
  // A finished turn is written to disk before it commits.
  bool sync_commits() const override {
    return dir_ != nullptr && options_.durability == Durability::kSync;
  }
  int32_t rewind_points() const { return options_.rewind_points; }
  size_t floats_per_state() const { return slots_->floats_per_slot(); }
  const StateCodec& codec() const { return codec_; }
  // Runs `job` on the I/O threads (CPU-heavy work that must not hold a caller's thread, such
  // as decoding an imported snapshot). Jobs submitted before destruction still run.
  void RunOnIo(std::function<void()> job) { io_->Submit(std::move(job)); }
  // A host buffer for one state (TierOptions::state_pool), zero-filled when `zero`. Any thread.
  MutableHostState NewState(bool zero) { return host_pool_->Acquire(zero); }

  // ---- slots (scheduler) ----
  // A free slot, evicting the least recently used resident state if needed (to host RAM
  // within the budget, or to nothing when a slower tier holds it). -1 when none can be freed
  // until a spill write completes (the caller retries later).
  int32_t TakeSlot() override;
  void FreeSlot(int32_t slot) override { pool_->Free(slot); }
  // Loads `id`'s committed state (`version`) into `slot`: at once from a slot, host RAM or the
  // zero state (done runs before the call returns), or read by the I/O pool (done runs later,
  // and only if `wanted()` still holds then: a turn cancelled meanwhile has given its slot
  // away, so nothing is written into it).
  void LoadInto(const std::string& id, uint64_t version, int32_t slot,
                std::function<bool()> wanted, StatusDone done) override;
  void LoadZero(int32_t slot) override { slots_->Reset(slot); }
  // A host copy of a slot (rewind points, commits that are written before they apply).
  HostState CaptureSlot(int32_t slot) override;
  // `slot` becomes `id`'s committed state at `version` (a commit or a create).
  void InstallCommitted(const std::string& id, int32_t slot, uint64_t version) override;
  // Redis holds `id`'s current committed state.
  void MarkShared(const std::string& id) override;
  void AddRewindPoint(const std::string& id, RewindPoint point) override;
  // Forgets `id`'s state in every tier of this daemon (its file is removed in the background).
  void Drop(const std::string& id) override;

  // ---- session commands (scheduler) ----
  // A copy of `src`'s committed state becomes `dst`'s (host RAM; read from disk if needed).
  void Fork(const std::string& src, const SessionInfo& dst, InfoDone done);
  // `id` goes back to the kept `version`: the index takes the rewind point's metadata, then
  // the tiers its state (in that order: a spill the new state triggers writes the rewound
  // metadata). FAILED_PRECONDITION listing the kept versions when `version` is not kept.
  absl::StatusOr<SessionInfo> Rewind(const std::string& id, uint64_t version);
  // The kept rewind point of `id` at `version` (its state shared, never copied); the same
  // FAILED_PRECONDITION as Rewind when it is not kept.
  absl::StatusOr<RewindPoint> FindRewindPoint(const std::string& id, uint64_t version);
  // `dst` (a new session) starts from `state`, an earlier version of another session.
  void ForkFromState(const SessionInfo& dst, HostState state, InfoDone done);
  // The committed state encoded as a snapshot with `meta` (on the I/O pool; `done` runs there).
  void Export(const std::string& id, SnapshotMeta meta,
              std::function<void(absl::StatusOr<std::string>)> done);
  // A decoded state becomes `id`'s committed state at `version` (import, Redis adoption).
  void Install(const std::string& id, uint64_t version, HostState state, bool from_redis);
  // Acknowledges a session operation once the state is stored as the durability mode and the
  // Redis tier require; a `new_session` that cannot be stored is removed and refused. The
  // session is busy until `done` runs.
  void AckWhenStored(const std::string& id, SessionInfo info, bool new_session,
                     ExpectedVersion expected, InfoDone done) override;
  // Removes the session from this daemon (index, state, file); `done` once the file is gone.
  void Erase(const std::string& id, StatusDone done);

  // ---- commits (scheduler) ----
  // Writes a finished turn's state to disk before it commits (sync durability); `done` runs
  // on the scheduler thread, and on success the caller installs the commit inside it, after
  // which the tiers mark that state durable.
  void PersistBeforeCommit(const std::string& id, SnapshotMeta meta, HostState state,
                           DigestDone done) override;
  // Stores a finished turn's state in Redis with the version check (the turn's commit).
  void ShareBeforeCommit(SnapshotMeta meta, ExpectedVersion expected, HostState state,
                         std::function<void(absl::StatusOr<RedisManifest>)> done) override;
  // Deletes `id` from Redis (I/O pool); `done` on the scheduler thread.
  void DeleteShared(const std::string& id, StatusDone done);

  // ---- Redis adoption (any thread) ----
  // Brings this daemon's view of `id` up to date with Redis on the I/O pool — adopting a
  // session another daemon created or advanced, forgetting one deleted there — and then runs
  // `done` on the scheduler thread (OK also when there is nothing to do, or without Redis).
  void Refresh(const std::string& owner, const std::string& id, StatusDone done);

  // Any thread: runs `fn` on the lookup pool (CPU work a caller must keep off both the
  // scheduler thread and the transport's threads, such as tokenizing a turn that waited for
  // Redis). Only with a Redis tier.
  void SubmitLookup(std::function<void()> fn) { lookups_->Submit(std::move(fn)); }

  // ---- drain ----
  // Starts a write of every idle session's state that is not on disk yet.
  void StartFlush();
  // Any thread: waits until no snapshot write is in flight, or `deadline` (false).
  bool WaitWritesDone(absl::Time deadline);
  // Disk writes started and not yet finished (a flush that timed out leaves these unwritten).
  int64_t WritesInFlight();

  // Any thread.
  TierStats Stats() const;
  const RedisStore* redis() const { return redis_.get(); }
  const SnapshotDir* dir() const { return dir_.get(); }

 private:
  // One session's committed state, held by whichever tiers hold it. A session absent from
  // states_ has the zero state.
  struct Entry {
    std::deque<RewindPoint> rewind_points;  // oldest first
    uint64_t version = 0;                   // the committed version this state is
    HostState host;                         // immutable: I/O jobs share it
    uint64_t last_used = 0;                 // host LRU order
    int64_t disk_version = -1;              // version of the snapshot file, -1 = none
    uint64_t gen = 1;
    uint64_t disk_gen = 0;   // gen of the state in the file, 0 = none
    uint64_t redis_gen = 0;  // gen of the state Redis holds, 0 = none
    // False while the committed state is the zero state and held nowhere (a new session).
    bool nonzero = false;
    bool write_in_flight = false;  // one write per session at a time keeps the file monotonic
    bool write_again = false;      // committed (or asked to flush) while writing
  };
  StateTiers(const TierOptions& options, StateCodec codec, SlotStore* slots, SlotPool* pool,
             SessionIndex* index, const Clock* clock, PostFn post);

  // state_tiers.cc: the host tier and slot moves.
  Entry& At(const std::string& id) { return states_[id]; }
  static bool Durable(const Entry& st);
  bool InRedis(const Entry& st) const;
  void SetHost(Entry& st, HostState host);
  void DropRewindPoints(Entry& st, size_t n);
  void EnforceHostBudget();
  bool EvictRewindPoints();
  // The committed state as host floats (a slot copy, the host copy, or zeros); null when
  // only a slower tier holds it.
  HostState StateCopy(const std::string& id, const Entry& st);
  // A host buffer receiving `slot`'s state asynchronously (its readers wait for the copy).
  MutableHostState ReadSlotAsync(int32_t slot);
  void Spilled(EvictionReason reason, StateTier to);

  // state_tiers_disk.cc: files.
  absl::Status IndexStateDir();
  absl::StatusOr<SnapshotMeta> ReadSnapshotHead(const std::string& id, uint64_t file_bytes);
  // Reads and checks a stored state (I/O threads). Errors are DATA_LOSS/ABORTED/UNAVAILABLE
  // with a message fit for the client (no server paths; the log has the details).
  absl::Status ReadStoredState(const std::string& id, uint64_t version, absl::Span<float> state,
                               bool from_redis);
  absl::Status ReadFromRedis(const std::string& id, uint64_t version, absl::Span<float> state);
  void StartRestore(const std::string& id, uint64_t version, int32_t slot, bool from_redis,
                    std::function<bool()> wanted, StatusDone done);
  void StartWrite(const std::string& id);
  // `done(version, status, digest)`: the digest is as DigestDone's (0 on failure).
  void SubmitWrite(SnapshotMeta meta, HostState state,
                   std::function<void(uint64_t, absl::Status, uint64_t)> done);
  void OnWriteDone(const std::string& id, uint64_t version, uint64_t gen, absl::Status status);
  void RunPendingWrite(const std::string& id);
  void WhenDurable(const std::string& id, StatusDone done);
  void NotifyDurable(const std::string& id, const absl::Status& write_status);
  void AckWhenDurable(const std::string& id, SessionInfo info, bool new_session, InfoDone done);
  void RemoveFile(const std::string& id);

  // state_tiers_redis.cc: the shared tier.
  absl::Status ConnectRedis();
  absl::Status RedisUnavailable(const std::string& id, const absl::Status& cause) const;
  absl::StatusOr<RedisManifest> PutSnapshot(const SnapshotMeta& meta,
                                            const ExpectedVersion& expected,
                                            absl::Span<const float> state);
  void RefreshOnIo(const std::string& owner, const std::string& id, StatusDone done);
  void Adopt(const std::string& owner, const std::string& id, const SnapshotMeta& meta,
             const std::string& generation, HostState state, StatusDone done);
  void ForgetMissing(const std::string& id, const std::string& generation);
  void OnStored(const std::string& id, SessionInfo info, bool new_session, uint64_t gen,
                absl::StatusOr<RedisManifest> written, InfoDone done);

  const TierOptions options_;
  const StateCodec codec_;
  SlotStore* const slots_;
  SlotPool* const pool_;
  SessionIndex* const index_;
  const Clock* const clock_;
  const PostFn post_;
  const int64_t state_bytes_;
  std::unique_ptr<HostStatePool> own_host_pool_;  // when TierOptions::state_pool is null
  HostStatePool* host_pool_;
  std::unique_ptr<SnapshotDir> dir_;
  std::unique_ptr<RedisStore> redis_;
  // Redis lookups and what follows them run on their own pool, so a turn's start never waits
  // behind snapshot writes and Redis uploads (128 MiB each on a 7B model).
  std::unique_ptr<IoPool> lookups_;
  std::unique_ptr<IoPool> io_;  // declared last: destroyed (joined) first

  // Scheduler thread only.
  std::unordered_map<std::string, Entry> states_;
  std::unordered_map<std::string, std::function<void()>> pending_sync_writes_;
  struct DurableWaiter {
    uint64_t gen = 0;  // satisfied once the file holds this generation or a later one
    StatusDone done;
  };
  std::unordered_map<std::string, std::vector<DurableWaiter>> durable_waiters_;
  uint64_t tick_ = 0;  // host LRU order

  // Read by Stats() from any thread.
  std::atomic<int64_t> host_bytes_{0};
  std::atomic<int32_t> host_sessions_{0};
  std::atomic<int64_t> snapshot_writes_{0};
  std::atomic<int64_t> snapshot_write_failures_{0};
  std::atomic<int64_t> restores_from_disk_{0};
  std::atomic<int64_t> restores_from_redis_{0};
  mutable absl::Mutex writes_mu_;
  int64_t writes_in_flight_ ABSL_GUARDED_BY(writes_mu_) = 0;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_STATE_TIERS_H_
