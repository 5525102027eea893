// Engine sizes that depend on the backend: with --slots auto and the batch / prefill flags
// left at 0 ("by backend"), a CPU serves 64 slots, batches of 64 and 128-token prompt pieces
// within a 512-token budget, while a GPU batches 256 sessions, prefills 512-token pieces
// within 4096 tokens per iteration, and fills the device memory left after the weights with
// state slots. Explicit values are kept as given.
#ifndef XLSTMD_SERVER_ENGINE_SIZING_H_
#define XLSTMD_SERVER_ENGINE_SIZING_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace xlstmd::server {

struct SizingInput {
  bool gpu = false;                 // device memory is counted (CUDA); else host memory
  size_t free_bytes = 0;            // free device memory after the weights (gpu only)
  size_t bytes_per_slot = 0;        // one session's state
  size_t bytes_per_forward_row = 0; // workspace per token row of a forward window
  size_t bytes_per_logit_row = 0;   // logits buffer per row (device + pinned host copy)
};

struct EngineSizes {
  int64_t slots = 0;           // 0 = auto
  int64_t max_batch = 0;       // 0 = by backend
  int64_t prefill_budget = 0;  // 0 = by backend
  int64_t prefill_piece = 0;   // 0 = by backend
  std::string note;            // how auto slots were sized (for the log)
};

// Fills every 0 in `sizes`. RESOURCE_EXHAUSTED when the device cannot hold the forward
// buffers and one state; INVALID_ARGUMENT when the resolved budget is below the piece.
absl::Status ResolveEngineSizes(const SizingInput& in, EngineSizes* sizes);

// Device memory kept free beside the slots and buffers (cuBLAS workspaces, CUDA graphs,
// fragmentation), and the fraction of free memory auto slots may take.
constexpr size_t kGpuHeadroomBytes = size_t{1} << 30;
constexpr double kGpuSlotFraction = 0.9;

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_ENGINE_SIZING_H_
