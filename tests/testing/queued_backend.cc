#include "tests/testing/queued_backend.h"

#include <cstring>
#include <string_view>
#include <utility>

#include "kernels/backend_registry.h"
#include "kernels/cuda/launch_plan.h"

namespace xlstmd::testing {
namespace {

size_t Checksum(const void* p, size_t bytes) {
  return std::hash<std::string_view>()(std::string_view(static_cast<const char*>(p), bytes));
}

bool Overlaps(const char* a, size_t an, const char* b, size_t bn) {
  return a < b + bn && b < a + an;
}

}  // namespace

QueuedBackend::QueuedBackend(std::unique_ptr<kernels::Backend> inner, bool capture)
    : inner_(std::move(inner)), capture_(capture) {}

QueuedBackend::~QueuedBackend() { RunQueue(); }

std::unique_ptr<QueuedBackend> QueuedBackend::OverCpu(int threads, bool capture) {
  kernels::BackendOptions options;
  options.threads = threads;
  absl::StatusOr<std::unique_ptr<kernels::Backend>> cpu = kernels::CreateBackend("cpu", options);
  if (!cpu.ok()) return nullptr;
  return std::make_unique<QueuedBackend>(*std::move(cpu), capture);
}

int64_t QueuedBackend::violations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return violations_;
}

int64_t QueuedBackend::waits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waits_;
}

size_t QueuedBackend::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

int64_t QueuedBackend::captures() const {
  std::lock_guard<std::mutex> lock(mu_);
  return captures_;
}

int64_t QueuedBackend::replays() const {
  std::lock_guard<std::mutex> lock(mu_);
  return replays_;
}

void QueuedBackend::FailDevice(std::string error) {
  std::lock_guard<std::mutex> lock(mu_);
  error_ = absl::InternalError(std::move(error));
}

void QueuedBackend::Enqueue(Op op) {
  std::lock_guard<std::mutex> lock(mu_);
  if (capturing_) {
    recording_.push_back(std::move(op));
  } else {
    queue_.push_back(std::move(op));
  }
}

void QueuedBackend::NotWhileCapturing() {
  if (capturing_) ++violations_;
}

// One thread runs the queue at a time (run_mu_), an op at a time and in order. The op being
// run stays visible to QueuedUses, so an op issued meanwhile on another thread knows its
// host memory is still being copied.
void QueuedBackend::RunQueue() {
  std::lock_guard<std::mutex> run(run_mu_);
  for (;;) {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ = Op{};
      if (!error_.ok()) queue_.clear();  // a failed device runs nothing more
      if (queue_.empty()) return;
      running_ = std::move(queue_.front());
      queue_.pop_front();
      fn = std::move(running_.run);
    }
    fn();
  }
}

bool QueuedBackend::IsPinned(const void* p) const {
  const char* c = static_cast<const char*>(p);
  auto it = pinned_.upper_bound(c);
  if (it == pinned_.begin()) return false;
  --it;
  return c < it->first + it->second;
}

bool QueuedBackend::QueuedUses(const void* p, size_t bytes, bool writes) const {
  auto uses = [&](const Op& op) {
    return op.host != nullptr && (op.writes_host || !writes) &&
           Overlaps(op.host, op.bytes, static_cast<const char*>(p), bytes);
  };
  if (uses(running_)) return true;
  for (const Op& op : queue_) {
    if (uses(op)) return true;
  }
  return false;
}

void QueuedBackend::Free(void* p) {
  RunQueue();  // as cudaFree, which waits for the device
  inner_->Free(p);
}

absl::StatusOr<void*> QueuedBackend::AllocHost(size_t bytes) {
  absl::StatusOr<void*> p = inner_->AllocHost(bytes);
  if (p.ok() && *p != nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    pinned_[static_cast<const char*>(*p)] = bytes;
  }
  return p;
}

void QueuedBackend::FreeHost(void* p) {
  if (p == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pinned_.find(static_cast<const char*>(p));
    if (it != pinned_.end()) {
      if (QueuedUses(p, it->second, /*writes=*/false)) ++violations_;
      pinned_.erase(it);
    }
  }
  RunQueue();
  inner_->FreeHost(p);
}

void QueuedBackend::CopyToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  std::unique_lock<std::mutex> lock(mu_);
  NotWhileCapturing();
  if (!IsPinned(src)) {
    const bool failed = !error_.ok();  // a failed device copies nothing
    lock.unlock();
    RunQueue();  // a pageable copy completes before it returns
    if (!failed) inner_->CopyToDevice(dst, src, bytes);
    return;
  }
  // A source that a queued op still writes (a read of a slot into it) is legitimately filled
  // later, in order; any other change before the copy runs is the caller's.
  const bool check = !QueuedUses(src, bytes, /*writes=*/true);
  const size_t sum = check ? Checksum(src, bytes) : 0;
  queue_.push_back(Op{[this, dst, src, bytes, check, sum] {
                        if (check && Checksum(src, bytes) != sum) {
                          std::lock_guard<std::mutex> l(mu_);
                          ++violations_;
                        }
                        inner_->CopyToDevice(dst, src, bytes);
                      },
                      static_cast<const char*>(src), bytes, false});
}

void QueuedBackend::CopyToHost(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  std::unique_lock<std::mutex> lock(mu_);
  NotWhileCapturing();
  if (!IsPinned(dst)) {
    const bool failed = !error_.ok();
    lock.unlock();
    RunQueue();
    if (!failed) inner_->CopyToHost(dst, src, bytes);
    return;
  }
  std::memset(dst, 0xff, bytes);  // what a read before the wait sees
  queue_.push_back(Op{[this, dst, src, bytes] { inner_->CopyToHost(dst, src, bytes); },
                      static_cast<const char*>(dst), bytes, true});
}

void QueuedBackend::CopyDeviceToDevice(void* dst, const void* src, size_t bytes) {
  Enqueue(Op{[this, dst, src, bytes] { inner_->CopyDeviceToDevice(dst, src, bytes); }});
}

void QueuedBackend::Memset0(void* dst, size_t bytes) {
  Enqueue(Op{[this, dst, bytes] { inner_->Memset0(dst, bytes); }});
}

void QueuedBackend::FreeMatrix(kernels::WeightMatrix* w) {
  RunQueue();
  inner_->FreeMatrix(w);
}

absl::Status QueuedBackend::ReserveMatMul(int64_t rows) {
  RunQueue();  // queued MatMuls may use the scratch this replaces
  return inner_->ReserveMatMul(rows);
}

void QueuedBackend::MatMul(const kernels::MatMulParams& p) {
  Enqueue(Op{[this, p] { inner_->MatMul(p); }});
}
void QueuedBackend::RmsNorm(const kernels::RmsNormParams& p) {
  Enqueue(Op{[this, p] { inner_->RmsNorm(p); }});
}
void QueuedBackend::Embed(const kernels::EmbedParams& p) {
  Enqueue(Op{[this, p] { inner_->Embed(p); }});
}
void QueuedBackend::BiasSoftCap(const kernels::BiasSoftCapParams& p) {
  Enqueue(Op{[this, p] { inner_->BiasSoftCap(p); }});
}
void QueuedBackend::SwiGlu(const kernels::SwiGluParams& p) {
  Enqueue(Op{[this, p] { inner_->SwiGlu(p); }});
}
void QueuedBackend::HeadNormGate(const kernels::HeadNormGateParams& p) {
  Enqueue(Op{[this, p] { inner_->HeadNormGate(p); }});
}
void QueuedBackend::MlstmStep(const kernels::MlstmStepParams& p) {
  Enqueue(Op{[this, p] { inner_->MlstmStep(p); }});
}
void QueuedBackend::MlstmChunkwise(const kernels::MlstmChunkParams& p) {
  Enqueue(Op{[this, p] { inner_->MlstmChunkwise(p); }});
}
void QueuedBackend::GatherRows(const kernels::GatherRowsParams& p) {
  Enqueue(Op{[this, p] { inner_->GatherRows(p); }});
}
void QueuedBackend::Headwise(const kernels::HeadwiseParams& p) {
  Enqueue(Op{[this, p] { inner_->Headwise(p); }});
}
void QueuedBackend::CausalConv(const kernels::CausalConvParams& p) {
  Enqueue(Op{[this, p] { inner_->CausalConv(p); }});
}
void QueuedBackend::SlstmSequence(const kernels::SlstmParams& p) {
  Enqueue(Op{[this, p] { inner_->SlstmSequence(p); }});
}

absl::Status QueuedBackend::Synchronize() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    NotWhileCapturing();
  }
  RunQueue();
  std::lock_guard<std::mutex> lock(mu_);
  ++waits_;
  return error_;
}

uint64_t QueuedBackend::RecordFence() {
  std::lock_guard<std::mutex> lock(mu_);
  NotWhileCapturing();
  return ++fences_;
}

// Runs everything queued, which includes all the fence covers.
absl::Status QueuedBackend::WaitFence(uint64_t) {
  RunQueue();
  std::lock_guard<std::mutex> lock(mu_);
  ++waits_;
  return error_;
}

int64_t QueuedBackend::StepBucket(int64_t batch) const {
  return capture_ ? kernels::cuda::DecodeBucket(batch) : 0;
}

void QueuedBackend::BeginCapture() {
  std::lock_guard<std::mutex> lock(mu_);
  NotWhileCapturing();
  capturing_ = true;
  recording_.clear();
}

// Keeps the recording and runs it once, as cudaGraphInstantiate + launch.
absl::Status QueuedBackend::EndCapture(int64_t key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!capturing_) return absl::FailedPreconditionError("EndCapture without BeginCapture");
  capturing_ = false;
  queue_.insert(queue_.end(), recording_.begin(), recording_.end());
  graphs_[key] = std::move(recording_);
  recording_.clear();
  ++captures_;
  return absl::OkStatus();
}

void QueuedBackend::AbortCapture() {
  std::lock_guard<std::mutex> lock(mu_);
  capturing_ = false;
  recording_.clear();
}

bool QueuedBackend::Replay(int64_t key) {
  std::lock_guard<std::mutex> lock(mu_);
  NotWhileCapturing();
  auto it = graphs_.find(key);
  if (it == graphs_.end()) return false;
  queue_.insert(queue_.end(), it->second.begin(), it->second.end());
  ++replays_;
  return true;
}

void QueuedBackend::DropCaptures() {
  RunQueue();  // as the CUDA backend: a recording may still be running
  std::lock_guard<std::mutex> lock(mu_);
  graphs_.clear();
}

}  // namespace xlstmd::testing
