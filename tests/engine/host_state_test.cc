// HostStatePool with a fake page-locking allocator: reuse, the cap, a declining or failing
// allocator, buffers outliving the pool, and the pool under concurrent use. The tiers'
// use of it (states spilled into pinned buffers and restored from them) is at the end.
#include "core/engine/host_state.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/engine/state_tiers.h"
#include "gtest/gtest.h"
#include "tests/engine/parts_testutil.h"

namespace xlstmd::core {
namespace {

constexpr size_t kFloats = 1000;
constexpr int64_t kBytes = kFloats * sizeof(float);

class FakePinned : public PinnedAllocator {
 public:
  enum class Mode { kPin, kDecline, kFail };
  explicit FakePinned(Mode mode = Mode::kPin) : mode_(mode) {}
  ~FakePinned() override { EXPECT_TRUE(live_.empty()) << live_.size() << " pinned blocks leaked"; }

  absl::StatusOr<void*> AllocPinned(size_t bytes) override {
    ++calls_;
    if (mode_ == Mode::kDecline) return nullptr;
    if (mode_ == Mode::kFail) return absl::ResourceExhaustedError("cannot pin (fake)");
    void* p = std::calloc(1, bytes);
    std::lock_guard<std::mutex> lock(mu_);
    live_.insert(p);
    return p;
  }
  void FreePinned(void* p) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      EXPECT_EQ(live_.erase(p), 1u) << "freed a block it did not pin";
    }
    std::free(p);
  }
  int calls() const { return calls_; }
  size_t live() {
    std::lock_guard<std::mutex> lock(mu_);
    return live_.size();
  }

 private:
  const Mode mode_;
  std::atomic<int> calls_{0};
  std::mutex mu_;
  std::set<void*> live_;
};

bool AllZero(const StateBuffer& b) {
  return std::all_of(b.data(), b.data() + b.size(), [](float v) { return v == 0.0f; });
}

TEST(HostStatePoolTest, WithoutAnAllocatorBuffersAreHeapAndZeroedOnRequest) {
  HostStatePool pool(kFloats, int64_t{1} << 30, nullptr);
  MutableHostState s = pool.Acquire(/*zero=*/true);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->size(), kFloats);
  EXPECT_FALSE(s->pinned());
  EXPECT_TRUE(AllZero(*s));
  const HostStatePoolStats st = pool.Stats();
  EXPECT_EQ(st.pinned_bytes, 0);
  EXPECT_EQ(st.pageable_fallbacks, 0);  // nothing to fall back from
}

TEST(HostStatePoolTest, ReleasedPinnedBuffersAreReusedAndRezeroed) {
  FakePinned alloc;
  HostStatePool pool(kFloats, 4 * kBytes, &alloc);
  const float* first = nullptr;
  {
    MutableHostState s = pool.Acquire(/*zero=*/true);
    EXPECT_TRUE(s->pinned());
    EXPECT_TRUE(AllZero(*s));
    std::fill(s->data(), s->data() + s->size(), 7.0f);
    first = s->data();
    EXPECT_EQ(pool.Stats().pinned_in_use, 1);
  }
  EXPECT_EQ(pool.Stats().pinned_in_use, 0);
  EXPECT_EQ(pool.Stats().pinned_bytes, kBytes);  // kept, not unpinned
  MutableHostState again = pool.Acquire(/*zero=*/true);
  EXPECT_EQ(again->data(), first);
  EXPECT_TRUE(AllZero(*again));  // the old contents never leak into a zero state
  EXPECT_EQ(alloc.calls(), 1);
}

TEST(HostStatePoolTest, PastTheCapBuffersComeFromTheHeap) {
  FakePinned alloc;
  HostStatePool pool(kFloats, 2 * kBytes, &alloc);
  MutableHostState a = pool.Acquire(false), b = pool.Acquire(false), c = pool.Acquire(false);
  EXPECT_TRUE(a->pinned());
  EXPECT_TRUE(b->pinned());
  EXPECT_FALSE(c->pinned());
  EXPECT_EQ(pool.Stats().pinned_bytes, 2 * kBytes);
  EXPECT_EQ(pool.Stats().pageable_fallbacks, 1);
  a.reset();
  MutableHostState d = pool.Acquire(false);  // a's kept buffer
  EXPECT_TRUE(d->pinned());
  EXPECT_EQ(alloc.calls(), 2);
}

// --pinned-state-bytes 0 (or less than one state) means "never pin": not a fallback.
TEST(HostStatePoolTest, ACapBelowOneStateNeverPins) {
  for (int64_t cap : {int64_t{0}, kBytes - 1}) {
    FakePinned alloc;
    HostStatePool pool(kFloats, cap, &alloc);
    EXPECT_FALSE(pool.Acquire(true)->pinned());
    EXPECT_FALSE(pool.Acquire(false)->pinned());
    EXPECT_EQ(alloc.calls(), 0);
    EXPECT_EQ(pool.Stats().pageable_fallbacks, 0);
  }
}

TEST(HostStatePoolTest, AnAllocatorThatDeclinesIsAskedOnce) {
  FakePinned alloc(FakePinned::Mode::kDecline);
  HostStatePool pool(kFloats, int64_t{1} << 30, &alloc);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(pool.Acquire(true)->pinned());
  EXPECT_EQ(alloc.calls(), 1);
  EXPECT_EQ(pool.Stats().pageable_fallbacks, 0);  // declining is not a failure
  EXPECT_EQ(pool.Stats().pinned_bytes, 0);
}

TEST(HostStatePoolTest, AFailureFallsBackToTheHeapForGood) {
  FakePinned alloc(FakePinned::Mode::kFail);
  HostStatePool pool(kFloats, int64_t{1} << 30, &alloc);
  MutableHostState a = pool.Acquire(true), b = pool.Acquire(true);
  EXPECT_FALSE(a->pinned());
  EXPECT_TRUE(AllZero(*b));
  EXPECT_EQ(alloc.calls(), 1);
  EXPECT_EQ(pool.Stats().pageable_fallbacks, 1);
  EXPECT_EQ(pool.Stats().pinned_bytes, 0);
}

TEST(HostStatePoolTest, BuffersMayOutliveThePool) {
  FakePinned alloc;  // declared first: outlives both
  MutableHostState held;
  {
    HostStatePool pool(kFloats, 4 * kBytes, &alloc);
    held = pool.Acquire(true);
    pool.Acquire(true).reset();  // kept: freed when the pool goes
    EXPECT_EQ(alloc.live(), 2u);
  }
  EXPECT_EQ(alloc.live(), 1u);
  held->data()[0] = 1.0f;  // still valid
  held.reset();
  EXPECT_EQ(alloc.live(), 0u);
}

TEST(HostStatePoolTest, ConcurrentAcquireAndReleaseStayWithinTheCap) {
  FakePinned alloc;
  HostStatePool pool(kFloats, 3 * kBytes, &alloc);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pool, t] {
      for (int i = 0; i < 200; ++i) {
        MutableHostState s = pool.Acquire(i % 2 == 0);
        s->data()[0] = static_cast<float>(t);
        s->data()[kFloats - 1] = static_cast<float>(i);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  const HostStatePoolStats st = pool.Stats();
  EXPECT_LE(st.pinned_bytes, 3 * kBytes);
  EXPECT_EQ(st.pinned_in_use, 0);
  EXPECT_LE(alloc.live(), 3u);
}

TEST(HostStatePoolTest, MakePageableStateCopiesTheValues) {
  const std::vector<float> v = {1.0f, -2.0f, 3.5f};
  HostState s = MakePageableState(v);
  EXPECT_FALSE(s->pinned());
  EXPECT_EQ(std::vector<float>(s->data(), s->data() + s->size()), v);
}

TEST(StateBufferTest, ReadersWaitOnceForAPendingCopy) {
  HostStatePool pool(kFloats, 0, nullptr);
  MutableHostState s = pool.Acquire(/*zero=*/true);
  std::atomic<int> waits{0};
  float* raw = s->data();
  s->SetPending([&waits, raw] {
    ++waits;
    std::fill(raw, raw + kFloats, 3.0f);  // the copy lands
    return absl::OkStatus();
  });
  EXPECT_TRUE(s->pending());
  HostState shared = s;
  std::vector<std::thread> readers;
  std::atomic<int> right{0};
  for (int i = 0; i < 4; ++i) {
    readers.emplace_back([&] {
      const float* d = shared->data();
      if (d[0] == 3.0f && d[kFloats - 1] == 3.0f) ++right;
    });
  }
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(waits.load(), 1);
  EXPECT_EQ(right.load(), 4);
  EXPECT_FALSE(s->pending());
  EXPECT_TRUE(s->copy_status().ok());
}

TEST(StateBufferTest, AFailedCopyIsReportedToItsReaders) {
  HostStatePool pool(kFloats, 0, nullptr);
  MutableHostState s = pool.Acquire(/*zero=*/true);
  s->SetPending([] { return absl::InternalError("cuda:0: an illegal memory access"); });
  EXPECT_EQ(s->copy_status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s->copy_status().code(), absl::StatusCode::kInternal);  // kept, not waited again
}

TEST(StateBufferTest, ReleasingAPendingBufferWaitsForItsCopy) {
  FakePinned alloc;
  HostStatePool pool(kFloats, 4 * kBytes, &alloc);
  int waits = 0;
  MutableHostState s = pool.Acquire(false);
  s->SetPending([&waits] {
    ++waits;
    return absl::OkStatus();
  });
  s.reset();  // back to the pool: a reused buffer must never be written by an old copy
  EXPECT_EQ(waits, 1);
}

// Slot reads that complete only when waited for, as a device's do: a reader of a host copy
// that did not wait would see -1 (what an unfinished copy leaves here) instead of the state
// as it was when the copy was issued.
class DeferredSlots : public engine_testing::FakeSlots {
 public:
  using FakeSlots::FakeSlots;
  uint64_t ReadAsync(int32_t slot, float* dst) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::fill(dst, dst + floats_per_slot(), -1.0f);
    pending_[++issued_] = {dst, at(slot)};  // the slot as of now: later ops come after
    return issued_;
  }
  absl::Status WaitCopy(uint64_t fence) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(fence);
    if (it == pending_.end()) return absl::OkStatus();
    if (!fail_) std::copy(it->second.second.begin(), it->second.second.end(), it->second.first);
    pending_.erase(it);
    ++waits_;
    return fail_ ? absl::InternalError("cuda:0: device lost (fake)") : absl::OkStatus();
  }
  // Writes land at Flush (the next forward pass's wait on a device); until then the fake
  // holds the source, as the model does.
  void WriteAsync(int32_t slot, HostState src) override {
    std::lock_guard<std::mutex> lock(mu_);
    writes_.emplace_back(slot, std::move(src));
  }
  void Flush() {
    std::vector<std::pair<int32_t, HostState>> writes;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writes.swap(writes_);
    }
    for (auto& [slot, src] : writes) {  // a source still being filled waits (WaitCopy)
      const absl::Span<const float> v = src->span();
      std::copy(v.begin(), v.end(), at(slot).begin());
    }
  }
  size_t writes_in_flight() {
    std::lock_guard<std::mutex> lock(mu_);
    return writes_.size();
  }
  void FailCopies() {
    std::lock_guard<std::mutex> lock(mu_);
    fail_ = true;
  }
  int waits() {
    std::lock_guard<std::mutex> lock(mu_);
    return waits_;
  }

 private:
  std::mutex mu_;
  uint64_t issued_ = 0;
  std::map<uint64_t, std::pair<float*, std::vector<float>>> pending_;
  std::vector<std::pair<int32_t, HostState>> writes_;
  int waits_ = 0;
  bool fail_ = false;
};

// One slot behind DeferredSlots, and tiers over it taking host copies from a pool (page-locked
// by `alloc` when given).
struct DeferredTiers {
  explicit DeferredTiers(PinnedAllocator* alloc)
      : fake(1, engine_testing::TinyFloats()),
        states(fake.floats_per_slot(), alloc != nullptr ? int64_t{1} << 20 : 0, alloc),
        slots(1),
        index(&clock, SessionIndex::Limits{}) {
    TierOptions options;
    options.state_pool = &states;
    auto made = StateTiers::Create(options, engine_testing::TinyCodec(), &fake, &slots, &index,
                                   &clock, posts.Fn());
    EXPECT_TRUE(made.ok()) << made.status();
    if (made.ok()) tiers = *std::move(made);
  }
  ~DeferredTiers() { tiers.reset(); }  // before the pool
  // A new session whose committed state (every float 4.25) is resident in `*slot`.
  std::string CommitResident(int32_t* slot) {
    const std::string id = index.Create("")->session_id;
    *slot = tiers->TakeSlot();
    std::fill(fake.at(*slot).begin(), fake.at(*slot).end(), 4.25f);
    EXPECT_TRUE(index.ClaimForTurn("", id, {}).ok());
    CommitDelta delta;
    delta.tokens = 1;
    index.Commit(id, delta);
    tiers->InstallCommitted(id, *slot, 1);
    return id;
  }

  FakeClock clock;
  DeferredSlots fake;
  HostStatePool states;
  SlotPool slots;
  SessionIndex index;
  engine_testing::PostQueue posts;
  std::unique_ptr<StateTiers> tiers;
};

// A spill and an export issue their slot reads without waiting; the slot is overwritten at
// once (the next turn), and what the host tier restores and the export encodes is still the
// committed state.
TEST(HostStatePoolTest, TiersNeverReadAHostCopyBeforeItsSlotReadCompletes) {
  DeferredTiers rig(nullptr);
  ASSERT_NE(rig.tiers, nullptr);
  StateTiers& tiers = *rig.tiers;
  DeferredSlots& fake = rig.fake;
  SessionIndex& index = rig.index;
  int32_t slot;
  const std::string id = rig.CommitResident(&slot);

  // Export while resident: the capture is in flight when the slot changes.
  // Export answers on an I/O thread.
  std::string exported;
  std::atomic<bool> exported_done{false};
  SnapshotMeta meta;
  meta.session_id = id;
  meta.version = 1;
  meta.token_count = 1;
  tiers.Export(id, meta, [&](absl::StatusOr<std::string> bytes) {
    EXPECT_TRUE(bytes.ok()) << bytes.status();
    if (bytes.ok()) exported = *std::move(bytes);
    exported_done = true;
  });

  slot = tiers.TakeSlot();  // spills id to host RAM with another read in flight
  ASSERT_GE(slot, 0);
  std::fill(fake.at(slot).begin(), fake.at(slot).end(), 9.0f);  // the next turn's work
  bool loaded = false;
  tiers.LoadInto(id, index.Peek(id)->info.version, slot, [] { return true; },
                 [&](absl::Status s) {
                   EXPECT_TRUE(s.ok()) << s;
                   loaded = true;
                 });
  ASSERT_TRUE(rig.posts.RunUntil([&] { return loaded && exported_done; }));
  EXPECT_EQ(fake.writes_in_flight(), 1u);  // the restore did not wait for its copy
  fake.Flush();
  EXPECT_EQ(fake.at(slot)[0], 4.25f);
  EXPECT_EQ(fake.at(slot).back(), 4.25f);

  auto decoded = DecodeSnapshot(exported, engine_testing::TinyCodec().fingerprint,
                                *engine_testing::TinyCodec().layout);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(std::all_of(decoded->state.begin(), decoded->state.end(),
                          [](float v) { return v == 4.25f; }));
  EXPECT_EQ(fake.waits(), 2);

  // The device fails during a capture of the resident state: the export reports it instead
  // of encoding garbage.
  tiers.InstallCommitted(id, slot, index.Peek(id)->info.version);
  fake.FailCopies();
  std::atomic<bool> failed_done{false};
  tiers.Export(id, meta, [&](absl::StatusOr<std::string> bytes) {
    EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInternal) << bytes.status();
    failed_done = true;
  });
  ASSERT_TRUE(rig.posts.RunUntil([&] { return failed_done.load(); }));
}

// A restore from host RAM issues its copy and goes on; the host copy the tiers then drop
// (the turn committed) stays with the copy until it has run, and the pool does not hand its
// buffer to anyone else meanwhile.
TEST(HostStatePoolTest, TiersRestoreWithoutWaitingAndTheSourceOutlivesTheirCopy) {
  FakePinned alloc;
  DeferredTiers rig(&alloc);
  ASSERT_NE(rig.tiers, nullptr);
  StateTiers& tiers = *rig.tiers;
  DeferredSlots& fake = rig.fake;
  HostStatePool& states = rig.states;
  int32_t slot;
  const std::string id = rig.CommitResident(&slot);
  slot = tiers.TakeSlot();  // spilled to a pinned host buffer
  ASSERT_GE(slot, 0);
  std::fill(fake.at(slot).begin(), fake.at(slot).end(), 9.0f);
  bool loaded = false;
  tiers.LoadInto(id, 1, slot, [] { return true; }, [&](absl::Status s) {
    EXPECT_TRUE(s.ok()) << s;
    loaded = true;
  });
  ASSERT_TRUE(rig.posts.RunUntil([&] { return loaded; }));
  EXPECT_EQ(fake.writes_in_flight(), 1u);
  EXPECT_EQ(fake.at(slot)[0], 9.0f);  // not copied yet: nothing waited

  tiers.InstallCommitted(id, slot, 1);  // the tiers drop their host copy
  EXPECT_EQ(tiers.Stats().host_sessions, 0);
  EXPECT_EQ(states.Stats().pinned_in_use, 1);  // still the copy's source
  MutableHostState other = states.Acquire(/*zero=*/true);
  EXPECT_EQ(states.Stats().pinned_in_use, 2);  // a fresh buffer, not the source
  fake.Flush();
  EXPECT_EQ(fake.at(slot)[0], 4.25f);
  EXPECT_EQ(fake.at(slot).back(), 4.25f);
  EXPECT_EQ(states.Stats().pinned_in_use, 1);
  other.reset();
}

// The tiers take every host copy from the pool they are given: a spilled state lands in a
// pinned buffer and comes back exactly.
TEST(HostStatePoolTest, TiersSpillIntoPinnedBuffersAndRestoreFromThem) {
  using engine_testing::FakeSlots;
  using engine_testing::PostQueue;
  FakePinned alloc;
  FakeClock clock;
  FakeSlots fake(1, engine_testing::TinyFloats());
  HostStatePool states(fake.floats_per_slot(), int64_t{1} << 20, &alloc);
  SlotPool slots(1);
  SessionIndex index(&clock, SessionIndex::Limits{});
  PostQueue posts;
  TierOptions options;
  options.state_pool = &states;
  auto tiers = StateTiers::Create(options, engine_testing::TinyCodec(), &fake, &slots, &index,
                                  &clock, posts.Fn());
  ASSERT_TRUE(tiers.ok()) << tiers.status();

  const std::string id = index.Create("")->session_id;
  int32_t slot = (*tiers)->TakeSlot();
  ASSERT_GE(slot, 0);
  std::fill(fake.at(slot).begin(), fake.at(slot).end(), 4.25f);
  ASSERT_TRUE(index.ClaimForTurn("", id, {}).ok());
  CommitDelta delta;
  delta.tokens = 1;
  index.Commit(id, delta);
  (*tiers)->InstallCommitted(id, slot, 1);

  slot = (*tiers)->TakeSlot();  // the only slot: id's state is spilled to host RAM
  ASSERT_GE(slot, 0);
  EXPECT_EQ(states.Stats().pinned_in_use, 1);
  std::fill(fake.at(slot).begin(), fake.at(slot).end(), 0.0f);
  bool loaded = false;
  (*tiers)->LoadInto(id, index.Peek(id)->info.version, slot, [] { return true; },
                     [&](absl::Status s) {
                       EXPECT_TRUE(s.ok()) << s;
                       loaded = true;
                     });
  ASSERT_TRUE(posts.RunUntil([&] { return loaded; }));
  EXPECT_EQ(fake.at(slot)[0], 4.25f);
  EXPECT_EQ(fake.at(slot).back(), 4.25f);

  HostState captured = (*tiers)->CaptureSlot(slot);
  EXPECT_TRUE(captured->pinned());
  EXPECT_EQ(captured->data()[0], 4.25f);
  captured.reset();
  tiers->reset();  // before the pool and the allocator, as in the engine
}

}  // namespace
}  // namespace xlstmd::core
