// The model's device path (Backend::HostVisible() false: index uploads, logits copied out of
// backend memory, asynchronous state copies) on QueuedBackend, a CPU backend whose ops and
// copies run only when the host waits, as on a CUDA stream (tests/testing/queued_backend.h).
// Every result must equal the plain CPU backend's bit for bit, and no copy's host memory may
// be read early, changed or freed while the copy is queued.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/model/xlstm_model.h"
#include "gtest/gtest.h"
#include "kernels/backend_registry.h"
#include "tests/testing/golden.h"
#include "tests/testing/queued_backend.h"

namespace xlstmd::core {
namespace {

using testing::QueuedBackend;

class ModelQueuedTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto golden = testing::LoadGolden(GetParam());
    ASSERT_TRUE(golden.ok()) << golden.status();
    golden_ = std::move(*golden);
    kernels::BackendOptions o;
    o.threads = 2;
    auto cpu = kernels::CreateBackend("cpu", o);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    cpu_ = std::move(*cpu);
    queued_ = QueuedBackend::OverCpu(2);
    ASSERT_NE(queued_, nullptr);
  }
  void TearDown() override {
    if (queued_ != nullptr) {
      EXPECT_EQ(queued_->violations(), 0);
    }
  }

  std::unique_ptr<XlstmModel> Load(kernels::Backend* backend, int32_t slots) {
    auto m = XlstmModel::Load(testing::GoldenDir(GetParam()), backend);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return nullptr;
    EXPECT_TRUE((*m)->AllocateSlots(slots).ok());
    return std::move(*m);
  }

  testing::GoldenModel golden_;
  std::unique_ptr<kernels::Backend> cpu_;
  std::unique_ptr<QueuedBackend> queued_;
};

std::vector<float> ReadState(XlstmModel& m, int32_t slot) {
  std::vector<float> v(m.state_layout().floats_per_slot());
  m.ReadSlot(slot, v.data());
  return v;
}

// Prefill (all logits, then the last) and batched decode steps over shuffled slots: the same
// bits as on the CPU backend, and the states too.
TEST_P(ModelQueuedTest, ForwardPassesEqualTheCpuBackendBitForBit) {
  auto cm = Load(cpu_.get(), 3);
  auto qm = Load(queued_.get(), 3);
  ASSERT_TRUE(cm && qm);
  const std::vector<int32_t>& a = golden_.sequences.front().tokens;
  const std::vector<int32_t>& b = golden_.sequences.back().tokens;
  const PrefillSequence seqs[2] = {{a, 2}, {b, 0}};
  for (LogitsMode mode : {LogitsMode::kAll, LogitsMode::kLast}) {
    std::vector<float> lc, lq;
    cm->ResetSlot(0);
    cm->ResetSlot(2);
    qm->ResetSlot(0);
    qm->ResetSlot(2);
    ASSERT_TRUE(cm->Prefill(seqs, {16, mode}, &lc).ok());
    ASSERT_TRUE(qm->Prefill(seqs, {16, mode}, &lq).ok());
    ASSERT_EQ(lc.size(), lq.size());
    EXPECT_EQ(std::memcmp(lc.data(), lq.data(), lc.size() * sizeof(float)), 0);
  }
  const int32_t tokens[3] = {3, 5, 7}, slots[3] = {2, 1, 0};
  for (int step = 0; step < 3; ++step) {
    auto vc = cm->Step(tokens, slots);
    auto vq = qm->Step(tokens, slots);
    ASSERT_TRUE(vc.ok() && vq.ok());
    ASSERT_EQ(vc->rows, vq->rows);
    EXPECT_EQ(std::memcmp(vc->data, vq->data, vc->rows * vc->vocab * sizeof(float)), 0);
  }
  for (int32_t s = 0; s < 3; ++s) EXPECT_EQ(ReadState(*cm, s), ReadState(*qm, s)) << s;
}

// A restore's copy (WriteSlotAsync) is queued, not waited for: the model keeps the source
// until the forward pass that uses the slot has finished, and the pass sees the copied state.
// Reading the source's state asynchronously first and uploading it at once (a spill followed
// by a restore) needs no wait between the two either.
TEST_P(ModelQueuedTest, AsyncWritesKeepTheirSourceUntilThePassAfterThem) {
  auto qm = Load(queued_.get(), 2);
  ASSERT_TRUE(qm);
  const PrefillSequence s{golden_.sequences.back().tokens, 0};
  ASSERT_TRUE(qm->Prefill({&s, 1}, {}, nullptr).ok());
  const std::vector<float> committed = ReadState(*qm, 0);
  const size_t bytes = committed.size() * sizeof(float);

  auto host = kernels::AllocateHost(*queued_, bytes);
  ASSERT_TRUE(host.ok()) << host.status();
  auto source = std::make_shared<kernels::HostBuffer>(*std::move(host));
  const uint64_t fence = qm->ReadSlotAsync(0, source->as<float>());
  EXPECT_NE(fence, 0u);
  std::weak_ptr<kernels::HostBuffer> watch = source;
  const int64_t waits = queued_->waits();
  float* src = source->as<float>();
  qm->WriteSlotAsync(1, src, std::move(source));
  EXPECT_EQ(queued_->waits(), waits);  // neither the read nor the write waited
  EXPECT_FALSE(watch.expired());
  EXPECT_GT(queued_->queued(), 0u);

  const int32_t tokens[2] = {9, 9}, slots[2] = {0, 1};
  std::vector<float> logits;
  ASSERT_TRUE(qm->Step(tokens, slots, &logits).ok());
  EXPECT_TRUE(watch.expired());
  const size_t vocab = logits.size() / 2;
  EXPECT_EQ(std::memcmp(logits.data(), logits.data() + vocab, vocab * sizeof(float)), 0);
  EXPECT_TRUE(qm->WaitForFence(fence).ok());
}

// Without a forward pass, FinishUploads releases the sources, and a burst of restores holds
// at most 16 of them before the model waits.
TEST_P(ModelQueuedTest, UploadsInFlightAreBounded) {
  auto qm = Load(queued_.get(), 2);
  ASSERT_TRUE(qm);
  const size_t bytes = qm->state_layout().bytes_per_slot();
  // `n` restores from pinned sources the test lets go of at once.
  auto upload = [&](int n) {
    std::vector<std::weak_ptr<kernels::HostBuffer>> watches;
    for (int i = 0; i < n; ++i) {
      auto host = kernels::AllocateHost(*queued_, bytes);
      EXPECT_TRUE(host.ok());
      auto source = std::make_shared<kernels::HostBuffer>(*std::move(host));
      watches.push_back(source);
      float* src = source->as<float>();
      qm->WriteSlotAsync(i % 2, src, std::move(source));
    }
    return watches;
  };
  auto watches = upload(15);
  for (const auto& w : watches) EXPECT_FALSE(w.expired());
  qm->FinishUploads();
  for (const auto& w : watches) EXPECT_TRUE(w.expired());
  watches = upload(16);
  for (const auto& w : watches) EXPECT_TRUE(w.expired());  // the 16th waited

  // A pageable source is copied at once and never held.
  std::vector<float> pageable(bytes / sizeof(float), 0.5f);
  qm->WriteSlotAsync(0, pageable.data(), nullptr);
  pageable.assign(pageable.size(), -1.0f);
  EXPECT_EQ(ReadState(*qm, 0)[0], 0.5f);
}

// With recordings (CUDA graphs' semantics: the CUDA backend's decode buckets, padding rows
// of slot -1, ops kept with their parameters and queued again on replay): decode steps of
// several batch sizes equal eager CPU steps bit for bit, each bucket is recorded once and
// replayed after, and reallocating the slots drops the recordings.
TEST_P(ModelQueuedTest, RecordedDecodeStepsEqualEagerOnes) {
  auto recorder = QueuedBackend::OverCpu(2, /*capture=*/true);
  ASSERT_NE(recorder, nullptr);
  ASSERT_GT(recorder->StepBucket(3), 3);  // padded
  {
    auto cm = Load(cpu_.get(), 6);
    auto rm = Load(recorder.get(), 6);
    ASSERT_TRUE(cm && rm);
    const int32_t tokens[6] = {3, 5, 7, 11, 13, 2}, slots[6] = {4, 0, 5, 2, 1, 3};
    int steps = 0;
    for (int rows : {3, 1, 3, 6, 1, 3, 6}) {
      auto vc = cm->Step({tokens, static_cast<size_t>(rows)}, {slots, static_cast<size_t>(rows)});
      auto vr = rm->Step({tokens, static_cast<size_t>(rows)}, {slots, static_cast<size_t>(rows)});
      ASSERT_TRUE(vc.ok() && vr.ok()) << vc.status() << " " << vr.status();
      ASSERT_EQ(vc->rows, rows);
      ASSERT_EQ(vr->rows, rows);
      EXPECT_EQ(std::memcmp(vc->data, vr->data, rows * vc->vocab * sizeof(float)), 0) << rows;
      ++steps;
    }
    for (int32_t s = 0; s < 6; ++s) EXPECT_EQ(ReadState(*cm, s), ReadState(*rm, s)) << s;
    const int64_t captures = recorder->captures();
    EXPECT_GE(captures, 2);  // 1, 3 and 6 rows: two or three buckets
    EXPECT_EQ(captures + recorder->replays(), steps);

    ASSERT_TRUE(rm->AllocateSlots(6).ok());  // the recordings point into the old arena
    ASSERT_TRUE(rm->Step({tokens, 3}, {slots, 3}).ok());
    EXPECT_EQ(recorder->captures(), captures + 1);
  }
  EXPECT_EQ(recorder->violations(), 0);
}

INSTANTIATE_TEST_SUITE_P(Goldens, ModelQueuedTest,
                         ::testing::Values("xlstm-large-a1", "xlstm-paper-b1"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) {
                             if (c == '-') c = '_';
                           }
                           return n;
                         });

}  // namespace
}  // namespace xlstmd::core
