// The bench on a device backend (--backend cuda): the device's measured limits and a
// synthetic model of a published shape, so the GPU can be measured without a checkpoint.
#ifndef XLSTMD_TOOLS_BENCH_DEVICE_H_
#define XLSTMD_TOOLS_BENCH_DEVICE_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace xlstmd::tools {

struct DeviceLimits {
  double copy_gbps = 0;          // measured: device-to-device copy, read + write bytes / s
  double probe_gib = 0;          // bytes the copy probe moved per pass (read + write)
  double gemm_gflops = 0;        // measured: the decode GEMM at 256 x 8192 x 8192
  double mma_gflops = 0;         // measured: the prefill GEMM (tensor cores) at 2048 x 8192^2
  double nominal_bf16_mma_gflops = 0;
  double nominal_gbps = 0;       // from the device's attributes
  double nominal_fp32_gflops = 0;
  std::string description;
};

// A >= 4 GiB copy probe and two GEMM probes (the decode kernel's FMA and the prefill path's
// MMA) through the Backend seam (nothing device-specific: the same code measures any
// backend whose memory is not host memory), in the backend's math mode.
absl::StatusOr<DeviceLimits> MeasureDeviceLimits(kernels::Backend& backend, int64_t probe_mib);

// Names accepted by --synthetic, and the shape each stands for.
const std::vector<std::string>& SyntheticShapes();

// Writes a random bf16 model of shape `name` ("tiny", "1b" or "7b": xLSTM-7B's dims) into
// `dir` (created; the caller removes it) and returns `dir`. On the GPU machine `dir` sits in
// /dev/shm so no 14 GB file touches a disk.
absl::StatusOr<std::filesystem::path> WriteSyntheticModel(const std::string& name,
                                                          const std::filesystem::path& dir);

// /dev/shm/xlstm-synthetic-<pid> when /dev/shm exists, else $TMPDIR (or /tmp).
std::filesystem::path DefaultSyntheticDir();

}  // namespace xlstmd::tools

#endif  // XLSTMD_TOOLS_BENCH_DEVICE_H_
