#include "tools/bench_device.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/model/random_model.h"

namespace xlstmd::tools {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a) {
  return std::chrono::duration<double>(Clock::now() - a).count();
}

// y = x W^T of m rows, run for half a second after a warm-up: FLOPs / s.
absl::StatusOr<double> GemmGflops(kernels::Backend& be, const kernels::WeightMatrix* w,
                                  int64_t m, int64_t n, int64_t k, bool prefill) {
  XLSTMD_ASSIGN_OR_RETURN(kernels::DeviceBuffer x, kernels::Allocate(be, m * k * sizeof(float)));
  XLSTMD_ASSIGN_OR_RETURN(kernels::DeviceBuffer y, kernels::Allocate(be, m * n * sizeof(float)));
  const kernels::MatMulParams p{x.as<float>(), w, y.as<float>(), m, k, n, false, prefill};
  be.MatMul(p);
  XLSTMD_RETURN_IF_ERROR(be.Synchronize());
  int runs = 0;
  const Clock::time_point t = Clock::now();
  do {
    be.MatMul(p);
    XLSTMD_RETURN_IF_ERROR(be.Synchronize());
    ++runs;
  } while (Seconds(t) < 0.5);
  return 2.0 * static_cast<double>(m * n * k) * runs / Seconds(t) / 1e9;
}

}  // namespace

absl::StatusOr<DeviceLimits> MeasureDeviceLimits(kernels::Backend& be, int64_t probe_mib) {
  DeviceLimits l;
  const kernels::DeviceInfo info = be.Info();
  l.description = info.description;
  l.nominal_gbps = info.nominal_gbps;
  l.nominal_fp32_gflops = info.nominal_fp32_gflops;
  // Copy probe: src -> dst of probe_mib / 2 each, so a pass reads and writes probe_mib.
  const size_t half = static_cast<size_t>(probe_mib) << 19;
  XLSTMD_ASSIGN_OR_RETURN(kernels::DeviceBuffer src, kernels::Allocate(be, half));
  XLSTMD_ASSIGN_OR_RETURN(kernels::DeviceBuffer dst, kernels::Allocate(be, half));
  be.CopyDeviceToDevice(dst.get(), src.get(), half);  // warm-up
  XLSTMD_RETURN_IF_ERROR(be.Synchronize());
  constexpr int kPasses = 10;
  Clock::time_point t = Clock::now();
  for (int i = 0; i < kPasses; ++i) be.CopyDeviceToDevice(dst.get(), src.get(), half);
  XLSTMD_RETURN_IF_ERROR(be.Synchronize());
  l.copy_gbps = 2.0 * static_cast<double>(half) * kPasses / Seconds(t) / 1e9;
  l.probe_gib = 2.0 * static_cast<double>(half) / (1 << 30);
  src.reset();
  dst.reset();
  // GEMM probes on one 8192 x 8192 bf16 matrix: the decode kernel (FP32 FMA) at 256 rows,
  // and the prefill path (cuBLASLt on tensor cores) at 2048 rows, which under the exact math
  // mode is two bf16 products per projection, still counted as one GEMM's FLOPs.
  constexpr int64_t kN = 8192, kK = 8192;
  std::vector<uint16_t> w(static_cast<size_t>(kN * kK), 0x3c00);  // bf16 1/128
  XLSTMD_ASSIGN_OR_RETURN(kernels::WeightMatrix * raw,
                          be.UploadMatrixAs(w.data(), kernels::DType::kBF16, kN, kK,
                                            kernels::DType::kBF16));
  const kernels::WeightMatrixPtr wm(raw, {&be});
  XLSTMD_ASSIGN_OR_RETURN(l.gemm_gflops, GemmGflops(be, wm.get(), 256, kN, kK, false));
  XLSTMD_RETURN_IF_ERROR(be.ReserveMatMul(2048));
  XLSTMD_ASSIGN_OR_RETURN(l.mma_gflops, GemmGflops(be, wm.get(), 2048, kN, kK, true));
  l.nominal_bf16_mma_gflops = info.nominal_bf16_mma_gflops;
  return l;
}

const std::vector<std::string>& SyntheticShapes() {
  static const std::vector<std::string> kShapes = {"tiny", "1b", "7b"};
  return kShapes;
}

absl::StatusOr<std::filesystem::path> WriteSyntheticModel(const std::string& name,
                                                          const std::filesystem::path& dir) {
  core::RandomModelSpec s;
  s.dtype = kernels::DType::kBF16;
  s.vocab = 50304;
  s.seed = 1;
  s.overwrite = true;
  s.max_shard_bytes = uint64_t{4} << 30;
  if (name == "tiny") {
    s.embedding_dim = 256;
    s.num_blocks = 2;
    s.num_heads = 4;
    s.vocab = 1024;
  } else if (name == "1b") {  // xLSTM-1.4B-like
    s.embedding_dim = 2048;
    s.num_blocks = 24;
    s.num_heads = 4;
  } else if (name == "7b") {  // xLSTM-7B (NX-AI): 13.3 GB of bf16 weights read per step
    s.embedding_dim = 4096;
    s.num_blocks = 32;
    s.num_heads = 8;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--synthetic: unknown shape \"", name, "\" (tiny, 1b or 7b)"));
  }
  XLSTMD_RETURN_IF_ERROR(core::WriteRandomModel(s, dir));
  return dir;
}

std::filesystem::path DefaultSyntheticDir() {
  const std::string leaf = absl::StrCat("xlstm-synthetic-", getpid());
  std::error_code ec;
  if (std::filesystem::is_directory("/dev/shm", ec)) return std::filesystem::path("/dev/shm") / leaf;
  const char* tmp = std::getenv("TMPDIR");
  return std::filesystem::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") / leaf;
}

}  // namespace xlstmd::tools
