// The CUDA backend's entry points for the registry. Plain C++: no CUDA header, so the
// registry (and everything above kernels/) compiles the same with and without the toolkit.
#ifndef XLSTMD_KERNELS_CUDA_CUDA_BACKEND_H_
#define XLSTMD_KERNELS_CUDA_CUDA_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace xlstmd::kernels::cuda {

// The number of usable CUDA devices, or why there are none: without a driver the runtime
// answers cudaErrorInsufficientDriver, not "no device", so any error means "none usable".
absl::StatusOr<int> UsableDeviceCount();

// UNAVAILABLE when the device cannot be used (missing, out of range, broken driver);
// INVALID_ARGUMENT for a weight dtype other than f32/bf16.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options);

}  // namespace xlstmd::kernels::cuda

#endif  // XLSTMD_KERNELS_CUDA_CUDA_BACKEND_H_
