// Safetensors files: a validating, memory-mapped reader and a writer.
//
// Format: u64 little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the
// data. The reader rejects (with an absl::Status naming the file and tensor, never a crash):
// truncated files, header length past EOF or absurdly large, bad JSON, unknown dtypes, shape
// products that overflow, offsets out of range / not matching shape x dtype size /
// overlapping, duplicate names. The mapping stays valid for the reader's lifetime.
#ifndef XLSTMD_CORE_MODEL_SAFETENSORS_H_
#define XLSTMD_CORE_MODEL_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace xlstmd::core {

enum class TensorDType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

size_t TensorDTypeSize(TensorDType t);
const char* TensorDTypeName(TensorDType t);  // safetensors spelling: "F32", "BF16", ...

struct TensorView {
  std::string name;
  TensorDType dtype;
  std::vector<int64_t> shape;
  const void* data;  // into the mapping
  size_t bytes;
  std::string file;  // path of the file holding it (for error messages)
  int64_t NumElements() const;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* Find(const std::string& name) const;  // nullptr if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  TensorDType dtype;
  std::vector<int64_t> shape;
  const void* data;  // shape x dtype size bytes
};

// Writes atomically (temp file + rename). Tensors are laid out in the order given.
absl::Status WriteSafetensors(const std::filesystem::path& path,
                              absl::Span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_MODEL_SAFETENSORS_H_
