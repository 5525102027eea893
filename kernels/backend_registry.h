// The backend registry: the one place that decides which backends exist in this build.
//
// `CreateBackend("cpu")` always works; "cuda" (or "cuda:N") works only when the build found
// the CUDA toolkit and a usable device of compute capability 8.0+ is present (UNAVAILABLE
// otherwise, saying why). "auto" picks CUDA when a device is usable, else CPU.
#ifndef XLSTMD_KERNELS_BACKEND_REGISTRY_H_
#define XLSTMD_KERNELS_BACKEND_REGISTRY_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace xlstmd::kernels {

// Names of the backends compiled into this binary, e.g. {"cpu"} or {"cpu", "cuda"}.
std::vector<std::string> CompiledBackends();

// `why` (optional) receives one token saying why this backend: "requested", or for "auto"
// e.g. "auto:cuda_device_usable" / "auto:no_usable_CUDA_device_(cudaErrorNoDevice:...)" /
// "auto:built_without_cuda". "cuda:N" overrides options.device. options.math kBf16 is
// INVALID_ARGUMENT for "cpu"; "auto" falling back to the CPU computes exactly instead (the
// backend's Math() says so, and the caller should warn).
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name,
                                                       const BackendOptions& options,
                                                       std::string* why = nullptr);

}  // namespace xlstmd::kernels

#endif  // XLSTMD_KERNELS_BACKEND_REGISTRY_H_
