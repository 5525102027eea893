// XlstmModel's forward plumbing on a small random model: reserved buffers never grow, a call
// larger than the reservation runs in windows with the same results (bit for bit when the
// window splits on chunk boundaries), logits views come out in call order, and the view API
// refuses more logit rows than were reserved.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/model/random_model.h"
#include "core/model/xlstm_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::xlstmd::testing::IsOk;
using ::xlstmd::testing::StatusIs;

constexpr int64_t kVocab = 101;

class ModelForwardTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // One directory per process: ctest runs each test in its own process, in parallel.
    dir_ = new fs::path(fs::path(::testing::TempDir()) /
                        ("model_forward_test_" + std::to_string(::getpid())));
    RandomModelSpec s;
    s.embedding_dim = 64;
    s.num_blocks = 2;
    s.num_heads = 2;
    s.vocab = kVocab;
    s.seed = 7;
    s.overwrite = true;
    ASSERT_THAT(WriteRandomModel(s, *dir_), IsOk());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  void SetUp() override {
    auto be = kernels::CreateBackend("cpu", {2, kernels::DType::kF32});
    ASSERT_THAT(be, IsOk());
    backend_ = std::move(*be);
  }

  std::unique_ptr<XlstmModel> Load(int32_t slots, const LoadOptions& options = {}) {
    auto m = XlstmModel::Load(*dir_, backend_.get(), options);
    EXPECT_THAT(m, IsOk());
    if (!m.ok()) return nullptr;
    EXPECT_THAT((*m)->AllocateSlots(slots), IsOk());
    return std::move(*m);
  }

  static std::vector<int32_t> Tokens(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> t(n);
    for (int32_t& x : t) x = static_cast<int32_t>(rng() % kVocab);
    return t;
  }

  static std::vector<float> State(XlstmModel& m, int32_t slot) {
    std::vector<float> s(m.state_layout().floats_per_slot());
    m.ReadSlot(slot, s.data());
    return s;
  }

  static fs::path* dir_;
  std::unique_ptr<kernels::Backend> backend_;
};

fs::path* ModelForwardTest::dir_ = nullptr;

bool SameBits(const std::vector<float>& a, const float* b, size_t n) {
  return a.size() == n && std::memcmp(a.data(), b, n * sizeof(float)) == 0;
}

// Three prompts through a 48-row reservation (chunk 16): the long one spans several windows,
// the short ones share windows with its pieces. Logits and states equal one unwindowed call.
TEST_F(ModelForwardTest, WindowedPrefillEqualsOneCall) {
  const std::vector<std::vector<int32_t>> prompts = {Tokens(30, 1), Tokens(131, 2), Tokens(5, 3)};
  auto whole = Load(3);
  auto windowed = Load(3);
  ASSERT_THAT(windowed->Reserve(48, 3), IsOk());
  std::vector<PrefillSequence> seqs;
  for (int32_t i = 0; i < 3; ++i) seqs.push_back({prompts[i], i});
  const PrefillOptions o{16, LogitsMode::kLast};
  std::vector<float> expect;
  ASSERT_THAT(whole->Prefill(seqs, o, &expect), IsOk());
  auto view = windowed->Prefill(seqs, o);
  ASSERT_THAT(view, IsOk());
  ASSERT_EQ(view->rows, 3);
  ASSERT_EQ(view->vocab, kVocab);
  EXPECT_TRUE(SameBits(expect, view->data, 3 * kVocab));
  for (int32_t s = 0; s < 3; ++s) EXPECT_EQ(State(*whole, s), State(*windowed, s)) << s;
}

// kAll through the vector API copies out more logit rows than the reservation holds.
TEST_F(ModelForwardTest, AllLogitsSpillPastTheReservation) {
  const std::vector<int32_t> prompt = Tokens(70, 4);
  auto whole = Load(1);
  auto small = Load(1);
  ASSERT_THAT(small->Reserve(32, 4), IsOk());
  const PrefillSequence seq{prompt, 0};
  const PrefillOptions o{8, LogitsMode::kAll};
  std::vector<float> a, b;
  ASSERT_THAT(whole->Prefill({&seq, 1}, o, &a), IsOk());
  ASSERT_THAT(small->Prefill({&seq, 1}, o, &b), IsOk());
  ASSERT_EQ(a.size(), 70u * kVocab);
  EXPECT_TRUE(SameBits(a, b.data(), b.size()));
  // The view API cannot spill: it says how many rows were wanted and reserved.
  ASSERT_THAT(small->AllocateSlots(1), IsOk());
  EXPECT_THAT(small->Prefill({&seq, 1}, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("70 logit rows; 4")));
}

// A step batch larger than the reservation runs in windows; rows are independent, so every
// row's logits and state equal those of a step alone.
TEST_F(ModelForwardTest, WindowedStepEqualsRowsAlone) {
  constexpr int32_t kRows = 11;
  const std::vector<int32_t> tokens = Tokens(kRows, 5);
  std::vector<int32_t> slots(kRows);
  for (int32_t i = 0; i < kRows; ++i) slots[i] = kRows - 1 - i;  // shuffled slot order
  auto batched = Load(kRows);
  ASSERT_THAT(batched->Reserve(4, 4), IsOk());
  std::vector<float> all;
  ASSERT_THAT(batched->Step(tokens, slots, &all), IsOk());
  ASSERT_EQ(all.size(), static_cast<size_t>(kRows * kVocab));
  auto alone = Load(1);
  for (int32_t r = 0; r < kRows; ++r) {
    alone->ResetSlot(0);
    const int32_t slot0 = 0;
    auto view = alone->Step({&tokens[r], 1}, {&slot0, 1});
    ASSERT_THAT(view, IsOk());
    EXPECT_EQ(std::memcmp(view->data, all.data() + r * kVocab, kVocab * sizeof(float)), 0) << r;
    EXPECT_EQ(State(*alone, 0), State(*batched, slots[r])) << r;
  }
}

// After Reserve, forward calls of any size never reallocate: the logits view of every call
// points into the same buffer.
TEST_F(ModelForwardTest, ReservedBuffersAreNeverReallocated) {
  auto m = Load(8);
  ASSERT_THAT(m->Reserve(16, 8), IsOk());
  const float* first = nullptr;
  for (int n : {1, 8, 3}) {
    std::vector<int32_t> slots(n);
    for (int i = 0; i < n; ++i) slots[i] = i;
    auto view = m->Step(Tokens(n, n), slots);
    ASSERT_THAT(view, IsOk());
    if (first == nullptr) first = view->data;
    EXPECT_EQ(view->data, first);
  }
  const std::vector<int32_t> long_prompt = Tokens(200, 9);
  const PrefillSequence seq{long_prompt, 0};
  auto view = m->Prefill({&seq, 1}, {64, LogitsMode::kLast});
  ASSERT_THAT(view, IsOk());
  EXPECT_EQ(view->data, first);
  EXPECT_THAT(m->Step(Tokens(9, 1), {0, 1, 2, 3, 4, 5, 6, 7, 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("used twice")));
  EXPECT_THAT(m->Reserve(0, 1), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Decode steps padded to a bucket (token -1, slot -1 rows) give the real rows exactly the
// unpadded results and leave every other slot alone; the view holds the real rows only.
TEST_F(ModelForwardTest, PaddedStepsEqualUnpadded) {
  LoadOptions o;
  o.step_buckets = {4, 8};
  auto padded = Load(10, o);
  auto plain = Load(10);
  ASSERT_THAT(padded->Reserve(6, 6), IsOk());  // reserves room for the bucket of 6: 8
  for (int n : {1, 3, 6}) {
    const std::vector<int32_t> tokens = Tokens(n, 20 + n);
    std::vector<int32_t> slots(n);
    for (int i = 0; i < n; ++i) slots[i] = 9 - i;
    auto a = padded->Step(tokens, slots);
    ASSERT_THAT(a, IsOk());
    EXPECT_EQ(a->rows, n);
    std::vector<float> b;
    ASSERT_THAT(plain->Step(tokens, slots, &b), IsOk());
    EXPECT_TRUE(SameBits(b, a->data, n * kVocab)) << n;
  }
  for (int32_t s = 0; s < 10; ++s) EXPECT_EQ(State(*padded, s), State(*plain, s)) << s;
  // 9 rows: past the largest bucket, so unpadded (and windowed past the reservation).
  std::vector<int32_t> nine(9);
  for (int i = 0; i < 9; ++i) nine[i] = i;
  std::vector<float> c, d;
  ASSERT_THAT(padded->Step(Tokens(9, 1), nine, &c), IsOk());
  ASSERT_THAT(plain->Step(Tokens(9, 1), nine, &d), IsOk());
  EXPECT_EQ(c, d);
}

// Empty calls return empty views.
TEST_F(ModelForwardTest, EmptyCalls) {
  auto m = Load(2);
  auto step = m->Step({}, {});
  ASSERT_THAT(step, IsOk());
  EXPECT_EQ(step->rows, 0);
  const PrefillSequence empty{{}, 1};
  auto pre = m->Prefill({&empty, 1}, {});
  ASSERT_THAT(pre, IsOk());
  EXPECT_EQ(pre->rows, 0);
}

}  // namespace
}  // namespace xlstmd::core
