// Backend names: "cpu" (always), "auto" (CUDA when usable, else CPU) and "cuda" / "cuda:N".
// This is the only file that knows whether the CUDA backend was compiled in.
#include "kernels/backend_registry.h"

#include <cctype>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef XLSTMD_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace xlstmd::kernels {
namespace {

// The device index of "cuda" (0) or "cuda:<decimal index>"; nullopt for other names.
std::optional<int> CudaIndex(std::string_view name) {
  if (name == "cuda") return 0;
  if (name.substr(0, 5) != "cuda:" || name.size() == 5 || name.size() > 9) return std::nullopt;
  int index = 0;
  for (char c : name.substr(5)) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    index = index * 10 + (c - '0');
  }
  return index;
}

// A reason as one token for the startup line (spaces and '=' would break its key=value form).
[[maybe_unused]] std::string Token(std::string s) {
  for (char& c : s) {
    if (std::isspace(static_cast<unsigned char>(c)) || c == '=' || c == '"') c = '_';
  }
  return s;
}

}  // namespace

std::vector<std::string> CompiledBackends() {
#ifdef XLSTMD_HAVE_CUDA
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name,
                                                       const BackendOptions& options,
                                                       std::string* why) {
  std::string ignored;
  if (why == nullptr) why = &ignored;
  auto cpu_backend = [&]() -> absl::StatusOr<std::unique_ptr<Backend>> {
    BackendOptions o = options;
    o.math = MathMode::kExact;  // the CPU computes exactly; Math() tells the caller
    absl::StatusOr<std::unique_ptr<cpu::CpuBackend>> be = cpu::CpuBackend::Create(o);
    if (!be.ok()) return be.status();
    return std::unique_ptr<Backend>(std::move(*be));
  };
  if (name == "cpu") {
    if (options.math != MathMode::kExact) {
      return absl::InvalidArgumentError(
          absl::StrCat("--cuda-math ", MathModeName(options.math),
                       " needs the CUDA backend; the CPU backend computes in f32 only (use "
                       "--cuda-math exact, or --backend auto|cuda)"));
    }
    *why = "requested";
    return cpu_backend();
  }
  if (name == "auto") {
#ifdef XLSTMD_HAVE_CUDA
    absl::StatusOr<int> devices = cuda::UsableDeviceCount();
    if (devices.ok()) {
      BackendOptions o = options;
      o.device = 0;
      absl::StatusOr<std::unique_ptr<Backend>> gpu = cuda::CreateCudaBackend(o);
      if (gpu.ok()) {
        *why = "auto:cuda_device_usable";
        return gpu;
      }
      *why = Token(absl::StrCat("auto:cuda_unusable:", gpu.status().message()));
    } else {
      *why = Token(absl::StrCat("auto:", devices.status().message()));
    }
#else
    *why = "auto:built_without_cuda";
#endif
    return cpu_backend();
  }
  if (std::optional<int> device = CudaIndex(name); device.has_value()) {
#ifdef XLSTMD_HAVE_CUDA
    *why = "requested";
    BackendOptions o = options;
    o.device = *device;
    return cuda::CreateCudaBackend(o);
#else
    return absl::UnavailableError(
        absl::StrCat("backend \"", std::string(name),
                     "\": this build has no CUDA backend (the CUDA toolkit was not found when "
                     "it was built)"));
#endif
  }
  std::vector<std::string> valid = CompiledBackends();
  valid.push_back("auto");
#ifdef XLSTMD_HAVE_CUDA
  valid.push_back("cuda:N");
#endif
  return absl::InvalidArgumentError(absl::StrCat("unknown backend \"", std::string(name),
                                                 "\"; valid names: ", absl::StrJoin(valid, ", ")));
}

}  // namespace xlstmd::kernels
