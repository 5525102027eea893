// The backend registry: the one place that decides which backends exist in this build.
//
// `CreateBackend("cpu")` always works; "cuda" (or "cuda:N") exists only when the build found
// the CUDA toolkit, and fails with UNAVAILABLE at run time when no GPU is present. "auto"
// picks CUDA when a device is usable, else CPU.
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

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name,
                                                       const BackendOptions& options);

}  // namespace xlstmd::kernels

#endif  // XLSTMD_KERNELS_BACKEND_REGISTRY_H_
