// ModelAdapter: the loaded XlstmModel seen through the narrow interfaces the engine's parts
// use — SlotStore (the tiers' state copies), PinnedAllocator (their host buffers) and
// ModelRunner (the scheduler's forward passes) — so each part can be tested with a fake
// instead of a model.
#ifndef XLSTMD_CORE_ENGINE_MODEL_ADAPTER_H_
#define XLSTMD_CORE_ENGINE_MODEL_ADAPTER_H_

#include "core/engine/host_state.h"
#include "core/engine/scheduler.h"
#include "core/engine/state_tiers.h"
#include "core/model/xlstm_model.h"

namespace xlstmd::core {

class ModelAdapter final : public SlotStore, public PinnedAllocator, public ModelRunner {
 public:
  explicit ModelAdapter(XlstmModel* model) : model_(model) {}

  size_t floats_per_slot() const override {
    return model_->state_layout().bytes_per_slot() / sizeof(float);
  }
  void Read(int32_t slot, float* dst) override { model_->ReadSlot(slot, dst); }
  void Write(int32_t slot, const float* src) override { model_->WriteSlot(slot, src); }
  void WriteAsync(int32_t slot, HostState src) override {
    // No wait for a read still filling `src`: it is queued ahead of this copy on the same
    // stream. A pageable source is copied before WriteSlotAsync returns, so it is not kept.
    const float* data = src->data_in_queue_order();
    model_->WriteSlotAsync(slot, data, src->pinned() ? std::move(src) : nullptr);
  }
  uint64_t ReadAsync(int32_t slot, float* dst) override {
    return model_->ReadSlotAsync(slot, dst);
  }
  // A failure is the device's sticky error: the next forward pass reports it and the
  // scheduler stops serving on this device; the buffer's readers see it (copy_status).
  absl::Status WaitCopy(uint64_t fence) override { return model_->WaitForFence(fence); }
  void Copy(int32_t from, int32_t to) override { model_->CopySlot(from, to); }
  void Reset(int32_t slot) override { model_->ResetSlot(slot); }

  // Host-visible backend memory (the CPU) copies at memcpy speed from any memory: pinning
  // would only lock pages.
  absl::StatusOr<void*> AllocPinned(size_t bytes) override {
    kernels::Backend& backend = model_->backend();
    if (backend.HostVisible()) return nullptr;
    return backend.AllocHost(bytes);
  }
  void FreePinned(void* p) override { model_->backend().FreeHost(p); }

  int32_t vocab_size() const override { return static_cast<int32_t>(model_->vocab_size()); }
  absl::StatusOr<LogitsView> Prefill(absl::Span<const PrefillSequence> seqs,
                                     const PrefillOptions& options) override {
    return model_->Prefill(seqs, options);
  }
  absl::StatusOr<LogitsView> Step(absl::Span<const int32_t> tokens,
                                  absl::Span<const int32_t> slots) override {
    return model_->Step(tokens, slots);
  }
  void Idle() override { model_->FinishUploads(); }

 private:
  XlstmModel* const model_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_MODEL_ADAPTER_H_
