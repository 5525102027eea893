// Backend names: "cpu" (always), "auto" (CUDA when usable, else CPU) and "cuda" / "cuda:N".
// This is the only file that knows whether the CUDA backend was compiled in.
#include "kernels/backend_registry.h"

#include <cctype>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cpu/cpu_backend.h"

namespace xlstmd::kernels {
namespace {

// "cuda" or "cuda:<decimal device index>".
bool IsCudaName(std::string_view name) {
  if (name == "cuda") return true;
  if (name.substr(0, 5) != "cuda:" || name.size() == 5) return false;
  for (char c : name.substr(5)) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
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
                                                       const BackendOptions& options) {
  // "auto" would prefer a usable GPU, but no CUDA backend exists yet, so it is always the CPU.
  if (name == "cpu" || name == "auto") {
    absl::StatusOr<std::unique_ptr<cpu::CpuBackend>> be = cpu::CpuBackend::Create(options);
    if (!be.ok()) return be.status();
    return std::unique_ptr<Backend>(std::move(*be));
  }
  if (IsCudaName(name)) {
    return absl::UnavailableError(
        absl::StrCat("backend \"", std::string(name),
                     "\": the CUDA backend is not implemented in this build yet"));
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
