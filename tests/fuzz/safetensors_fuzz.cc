// Safetensors files: the reader maps a file, so each input is written to a per-process file
// first. Whatever it accepts must describe tensors that lie wholly inside the mapping.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "core/model/safetensors.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

std::string ScratchPath() {
  static const std::string path = [] {
    const char* tmp = std::getenv("TMPDIR");
    return std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/xlstmd-fuzz-" +
           std::to_string(getpid()) + ".safetensors";
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using xlstmd::core::SafetensorsFile;
  const std::string path = ScratchPath();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) return 0;
  }
  auto file = SafetensorsFile::Open(path);
  if (file.ok()) {
    for (const auto& t : (*file)->tensors()) {
      const size_t expected =
          static_cast<size_t>(t.NumElements()) * xlstmd::core::TensorDTypeSize(t.dtype);
      if (t.bytes != expected) {
        __builtin_trap();
      }
      if (t.bytes == 0) continue;
      // Touch both ends: a tensor reaching past the mapping faults here.
      const char* p = static_cast<const char*>(t.data);
      volatile char first = p[0], last = p[t.bytes - 1];
      (void)first;
      (void)last;
      if ((*file)->Find(t.name) != &t) __builtin_trap();
    }
  }
  std::remove(path.c_str());
  return 0;
}

namespace xlstmd::fuzz {

std::vector<std::string> FuzzSeeds() {
  using core::TensorDType;
  std::vector<std::string> seeds;
  // Small files written by the project's own writer: several dtypes, a scalar, an empty
  // tensor and metadata.
  const float f[6] = {1, 2, 3, 4, 5, 6};
  const uint16_t h[4] = {0x3c00, 0x4000, 0, 0x8000};
  const int64_t i64[2] = {-1, 7};
  const std::vector<core::TensorToWrite> tensors = {
      {"a.weight", TensorDType::kF32, {2, 3}, f},
      {"b", TensorDType::kBF16, {4}, h},
      {"c", TensorDType::kF16, {2, 2}, h},
      {"d", TensorDType::kI64, {2}, i64},
      {"scalar", TensorDType::kF32, {}, f},
      {"empty", TensorDType::kF32, {0, 3}, f},
  };
  const std::string path = ScratchPath() + ".seed";
  if (core::WriteSafetensors(path, tensors, {{"format", "pt"}}).ok()) {
    std::ifstream in(path, std::ios::binary);
    seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::remove(path.c_str());
  for (const char* model : {"xlstm-large-a1-bf16", "xlstm-paper-b1"}) {
    std::string bytes = SharedFile(std::string("golden/") + model + "/model.safetensors");
    if (!bytes.empty()) seeds.push_back(std::move(bytes));
  }
  return seeds;
}

}  // namespace xlstmd::fuzz
