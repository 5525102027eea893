// Fakes for the engine's parts: state slots in a vector, a model whose next token is the
// last one plus one, and a post queue the test runs by hand (the scheduler thread's stand-in).
#ifndef XLSTMD_TESTS_ENGINE_PARTS_TESTUTIL_H_
#define XLSTMD_TESTS_ENGINE_PARTS_TESTUTIL_H_

#include <cmath>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "core/engine/scheduler.h"
#include "core/engine/state_tiers.h"
#include "core/model/state_layout.h"

namespace xlstmd::core::engine_testing {

class FakeSlots : public SlotStore {
 public:
  FakeSlots(int32_t slots, size_t floats) : data_(slots, std::vector<float>(floats, 0.0f)) {}
  size_t floats_per_slot() const override { return data_[0].size(); }
  void Read(int32_t slot, float* dst) override {
    std::copy(data_[slot].begin(), data_[slot].end(), dst);
  }
  void Write(int32_t slot, const float* src) override {
    std::copy(src, src + data_[slot].size(), data_[slot].begin());
  }
  void Copy(int32_t from, int32_t to) override { data_[to] = data_[from]; }
  void Reset(int32_t slot) override { std::fill(data_[slot].begin(), data_[slot].end(), 0.0f); }
  std::vector<float>& at(int32_t slot) { return data_[slot]; }

 private:
  std::vector<std::vector<float>> data_;
};

// Runs posted functions when the test says so (or from another thread with RunUntil).
class PostQueue {
 public:
  PostFn Fn() {
    return [this](std::function<void()> fn) {
      absl::MutexLock lock(&mu_);
      q_.push_back(std::move(fn));
    };
  }
  // Runs what is queued now and what that queues, until empty.
  void RunAll() {
    while (true) {
      std::function<void()> fn;
      {
        absl::MutexLock lock(&mu_);
        if (q_.empty()) return;
        fn = std::move(q_.front());
        q_.pop_front();
      }
      fn();
    }
  }
  // Runs posted work until `pred` holds (I/O threads post asynchronously).
  template <typename Pred>
  bool RunUntil(Pred pred, int max_iterations = 20000) {
    for (int i = 0; i < max_iterations; ++i) {
      RunAll();
      if (pred()) return true;
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(
                               +[](std::deque<std::function<void()>>* q) { return !q->empty(); },
                               &q_),
                           absl::Milliseconds(5));
    }
    return pred();
  }

 private:
  absl::Mutex mu_;
  std::deque<std::function<void()>> q_ ABSL_GUARDED_BY(mu_);
};

// Logits that make greedy sampling pick (last fed token + 1) % vocab; the slot's first float
// counts the tokens it has seen, so tests can see which state a turn continued from.
class FakeModel : public ModelRunner {
 public:
  FakeModel(FakeSlots* slots, int32_t vocab) : slots_(slots), vocab_(vocab) {}
  int32_t vocab_size() const override { return vocab_; }
  absl::StatusOr<LogitsView> Prefill(absl::Span<const PrefillSequence> seqs,
                                     const PrefillOptions& options) override {
    if (!fail_with.ok()) return fail_with;
    std::vector<float>* logits = &logits_;
    logits->assign(seqs.size() * vocab_, 0.0f);
    Call call;
    call.prefill = true;
    for (size_t i = 0; i < seqs.size(); ++i) {
      slots_->at(seqs[i].slot)[0] += static_cast<float>(seqs[i].tokens.size());
      (*logits)[i * vocab_ + (seqs[i].tokens.back() + 1) % vocab_] = 1.0f;
      if (seqs[i].tokens.back() == nan_after) (*logits)[i * vocab_ + vocab_ / 2] = NAN;
      call.slots.push_back(seqs[i].slot);
      call.tokens.push_back(static_cast<int32_t>(seqs[i].tokens.size()));
      call.first_ids.push_back(seqs[i].tokens.front());
    }
    ++prefills;
    Log(std::move(call));
    return LogitsView{logits_.data(), static_cast<int64_t>(seqs.size()), vocab_};
  }
  absl::StatusOr<LogitsView> Step(absl::Span<const int32_t> tokens,
                                  absl::Span<const int32_t> slots) override {
    if (!fail_with.ok()) return fail_with;
    std::vector<float>* logits = &logits_;
    logits->assign(tokens.size() * vocab_, 0.0f);
    Call call;
    call.prefill = false;
    for (size_t i = 0; i < tokens.size(); ++i) {
      slots_->at(slots[i])[0] += 1.0f;
      (*logits)[i * vocab_ + (tokens[i] + 1) % vocab_] = 1.0f;
      if (tokens[i] == nan_after) (*logits)[i * vocab_ + vocab_ / 2] = NAN;
      call.slots.push_back(slots[i]);
      call.tokens.push_back(1);
      call.first_ids.push_back(tokens[i]);
    }
    ++steps;
    Log(std::move(call));
    return LogitsView{logits_.data(), static_cast<int64_t>(tokens.size()), vocab_};
  }
  int prefills = 0;
  int steps = 0;
  // Returned by every forward call while not OK (set before the scheduler starts or from
  // its thread).
  absl::Status fail_with;
  // A row whose (last) fed token is this one gets a NaN among its logits (set before start).
  int32_t nan_after = -1;

  // Every forward call, in order: a prefill (per sequence: slot, token count, first id) or a
  // decode step (per row: slot, 1, the token fed).
  struct Call {
    bool prefill = false;
    std::vector<int32_t> slots;
    std::vector<int32_t> tokens;
    std::vector<int32_t> first_ids;
  };
  std::vector<Call> calls() {
    absl::MutexLock lock(&log_mu_);
    return calls_;
  }

 private:
  void Log(Call call) {
    absl::MutexLock lock(&log_mu_);
    calls_.push_back(std::move(call));
  }
  FakeSlots* slots_;
  int32_t vocab_;
  std::vector<float> logits_;
  absl::Mutex log_mu_;
  std::vector<Call> calls_ ABSL_GUARDED_BY(log_mu_);
};

// The tiers as the scheduler sees them, over FakeSlots: committed states stay resident in
// their slots (no eviction, no I/O); a sync commit's write answers at once with
// `persist_status`, and every call is recorded for the test to inspect.
class FakeTiers : public TierOps {
 public:
  FakeTiers(FakeSlots* slots, int32_t n) : slots_(slots) {
    for (int32_t s = n - 1; s >= 0; --s) free_.push_back(s);
  }
  bool shares_commits() const override { return false; }
  bool sync_commits() const override { return sync; }
  int32_t TakeSlot() override {
    if (free_.empty()) return -1;
    const int32_t s = free_.back();
    free_.pop_back();
    return s;
  }
  void FreeSlot(int32_t slot) override {
    if (slot >= 0) free_.push_back(slot);
  }
  void LoadInto(const std::string& id, uint64_t, int32_t slot, std::function<bool()>,
                StatusDone done) override {
    auto it = committed.find(id);
    if (it == committed.end()) {
      slots_->Reset(slot);
    } else {
      slots_->Copy(it->second, slot);
    }
    done(absl::OkStatus());
  }
  void LoadZero(int32_t slot) override { slots_->Reset(slot); }
  HostState CaptureSlot(int32_t slot) override {
    return MakePageableState(slots_->at(slot));
  }
  void InstallCommitted(const std::string& id, int32_t slot, uint64_t) override {
    if (auto it = committed.find(id); it != committed.end()) FreeSlot(it->second);
    committed[id] = slot;
  }
  void MarkShared(const std::string&) override {}
  void AddRewindPoint(const std::string&, RewindPoint point) override {
    rewind_points.push_back(std::move(point));
  }
  void Drop(const std::string& id) override {
    if (auto it = committed.find(id); it != committed.end()) {
      FreeSlot(it->second);
      committed.erase(it);
    }
  }
  void PersistBeforeCommit(const std::string&, SnapshotMeta meta, HostState,
                           DigestDone done) override {
    persisted.push_back(std::move(meta));
    done(persist_status.ok() ? absl::StatusOr<uint64_t>(0x5eed) : persist_status);
  }
  void ShareBeforeCommit(SnapshotMeta, ExpectedVersion, HostState,
                         std::function<void(absl::StatusOr<RedisManifest>)> done) override {
    done(absl::UnimplementedError("no Redis in this fake"));
  }
  void AckWhenStored(const std::string&, SessionInfo info, bool, ExpectedVersion,
                     InfoDone done) override {
    done(info);
  }

  bool sync = false;
  absl::Status persist_status;
  std::unordered_map<std::string, int32_t> committed;  // id -> slot
  std::vector<SnapshotMeta> persisted;
  std::vector<RewindPoint> rewind_points;

 private:
  FakeSlots* slots_;
  std::vector<int32_t> free_;
};

inline const StateLayout& TinyLayout() {
  static const StateLayout layout = StateLayout::ForMlstmStack(1, 1, 2, 2);
  return layout;
}

inline StateCodec TinyCodec() {
  StateCodec c;
  c.fingerprint = StateFingerprint::For("tiny-weights", TinyLayout());
  c.layout = &TinyLayout();
  c.snapshot_bytes = MaxSnapshotBytes(TinyLayout());
  return c;
}

inline size_t TinyFloats() { return TinyLayout().bytes_per_slot() / sizeof(float); }

}  // namespace xlstmd::core::engine_testing

#endif  // XLSTMD_TESTS_ENGINE_PARTS_TESTUTIL_H_
