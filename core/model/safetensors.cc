#include "core/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/base/file_io.h"
#include "core/base/json_file.h"
#include "core/base/scoped_fd.h"
#include "core/base/status_macros.h"
#include "core/base/utf8.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core {
namespace {

using Json = nlohmann::json;

// The format's own reference reader refuses headers above 100 MB; a 7B shard header is ~100 KB.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
// Top object -> entry object -> shape array is three levels; allow a little slack.
constexpr int kMaxHeaderDepth = 8;
// The writer pads the header so tensor data starts 8-byte aligned (the format allows
// trailing spaces in the header), which keeps every F32/F64/I64 tensor naturally aligned.
constexpr size_t kDataAlignment = 8;
constexpr const char* kMetadataKey = "__metadata__";

struct DTypeInfo {
  TensorDType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {TensorDType::kF64, "F64", 8},   {TensorDType::kF32, "F32", 4}, {TensorDType::kF16, "F16", 2},
    {TensorDType::kBF16, "BF16", 2}, {TensorDType::kI64, "I64", 8}, {TensorDType::kI32, "I32", 4},
    {TensorDType::kI16, "I16", 2},   {TensorDType::kI8, "I8", 1},   {TensorDType::kU8, "U8", 1},
    {TensorDType::kBool, "BOOL", 1},
};

std::optional<TensorDType> ParseDType(std::string_view s) {
  for (const DTypeInfo& d : kDTypes) {
    if (s == d.name) return d.dtype;
  }
  return std::nullopt;
}

absl::Status BadFile(const std::filesystem::path& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", what));
}

absl::Status BadTensor(const std::filesystem::path& path, absl::string_view name,
                       absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path.string(), ": tensor \"", name, "\": ", what));
}

absl::Status IoError(const std::filesystem::path& path, absl::string_view op, int err) {
  if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
  return base::IoError(path, op, err);
}

// A JSON integer >= 0. Floats (even 3.0), negatives and booleans are rejected: the format
// only has integers here, and accepting anything else would hide a broken writer.
bool AsNonNegative(const Json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(j.get<int64_t>());
    return true;
  }
  return false;
}

// Element count of `shape`, or nullopt when the product does not fit int64 (the GGUF lesson:
// a wrapped product would make a tiny byte range pass the size check).
std::optional<int64_t> CheckedNumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}

std::optional<uint64_t> CheckedBytes(const std::vector<int64_t>& shape, TensorDType dtype) {
  const std::optional<int64_t> n = CheckedNumElements(shape);
  if (!n) return std::nullopt;
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(*n), TensorDTypeSize(dtype), &bytes)) {
    return std::nullopt;
  }
  return bytes;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// One validated header entry, before it is bound to the mapping.
struct Entry {
  std::string name;
  TensorDType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

absl::StatusOr<Entry> ParseEntry(const std::filesystem::path& path, const std::string& name,
                                 const Json& v, uint64_t data_bytes) {
  if (!v.is_object()) {
    return BadTensor(path, name, absl::StrCat("entry must be an object, got ", JsonTypeName(v)));
  }
  Entry e;
  e.name = name;

  auto dtype_it = v.find("dtype");
  if (dtype_it == v.end() || !dtype_it->is_string()) {
    return BadTensor(path, name, "\"dtype\" is missing or not a string");
  }
  const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
  const std::optional<TensorDType> dtype = ParseDType(dtype_name);
  if (!dtype) return BadTensor(path, name, absl::StrCat("unknown dtype \"", dtype_name, "\""));
  e.dtype = *dtype;

  auto shape_it = v.find("shape");
  if (shape_it == v.end() || !shape_it->is_array()) {
    return BadTensor(path, name, "\"shape\" is missing or not an array");
  }
  for (const Json& d : *shape_it) {
    uint64_t u = 0;
    if (!AsNonNegative(d, &u) || u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return BadTensor(path, name, "\"shape\" must hold non-negative integers");
    }
    e.shape.push_back(static_cast<int64_t>(u));
  }
  const std::optional<uint64_t> bytes = CheckedBytes(e.shape, e.dtype);
  if (!bytes) {
    return BadTensor(
        path, name,
        absl::StrCat("shape ", ShapeString(e.shape), " x ", dtype_name, " overflows 64 bits"));
  }

  auto off_it = v.find("data_offsets");
  if (off_it == v.end() || !off_it->is_array() || off_it->size() != 2 ||
      !AsNonNegative((*off_it)[0], &e.begin) || !AsNonNegative((*off_it)[1], &e.end)) {
    return BadTensor(path, name, "\"data_offsets\" must be two non-negative integers");
  }
  if (e.begin > e.end) {
    return BadTensor(path, name,
                     absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] are decreasing"));
  }
  if (e.end - e.begin != *bytes) {
    return BadTensor(path, name,
                     absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] span ",
                                  e.end - e.begin, " bytes but shape ", ShapeString(e.shape), " x ",
                                  dtype_name, " needs ", *bytes));
  }
  if (e.end > data_bytes) {
    return BadTensor(path, name,
                     absl::StrCat("data_offsets [", e.begin, ", ", e.end,
                                  "] run past the end of the data (", data_bytes, " bytes)"));
  }
  return e;
}

absl::Status ParseMetadata(const std::filesystem::path& path, const Json& v,
                           std::map<std::string, std::string>* out) {
  if (!v.is_object()) {
    return BadFile(path, absl::StrCat("\"__metadata__\" must be an object, got ", JsonTypeName(v)));
  }
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it->is_string()) {
      return BadFile(path, absl::StrCat("\"__metadata__\" value for \"", it.key(),
                                        "\" must be a string, got ", JsonTypeName(*it)));
    }
    (*out)[it.key()] = it->get_ref<const std::string&>();
  }
  return absl::OkStatus();
}

// Byte ranges may leave gaps (the format does not forbid them) but must not share bytes:
// overlapping tensors usually mean a corrupted or hand-edited header.
absl::Status CheckNoOverlap(const std::filesystem::path& path, std::vector<Entry>* entries) {
  std::sort(entries->begin(), entries->end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  const Entry* prev = nullptr;
  for (const Entry& e : *entries) {
    if (e.begin == e.end) continue;  // empty tensors occupy no bytes
    if (prev != nullptr && e.begin < prev->end) {
      return BadFile(path,
                     absl::StrCat("tensors \"", prev->name, "\" [", prev->begin, ", ", prev->end,
                                  ") and \"", e.name, "\" [", e.begin, ", ", e.end, ") overlap"));
    }
    prev = &e;
  }
  return absl::OkStatus();
}

// Header length is a little-endian u64 regardless of the host.
uint64_t ReadLe64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

using base::ScopedFd;
using base::WriteAll;

// Flushes the directory entry so that a rename survives a crash.
absl::Status SyncDir(const std::filesystem::path& dir) {
  ScopedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return IoError(dir, "open directory", errno);
  if (::fsync(fd.get()) != 0) return IoError(dir, "fsync directory", errno);
  return absl::OkStatus();
}

std::atomic<uint64_t> temp_counter{0};

absl::StatusOr<std::string> BuildHeader(absl::Span<const TensorToWrite> tensors,
                                        const std::map<std::string, std::string>& metadata,
                                        const std::filesystem::path& path) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) {
      if (!ValidateUtf8(k).ok() || !ValidateUtf8(v).ok()) {
        return BadFile(path, "metadata keys and values must be valid UTF-8");
      }
      meta[k] = v;
    }
    header[kMetadataKey] = std::move(meta);
  }
  std::set<std::string_view> seen;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty() || t.name == kMetadataKey || !ValidateUtf8(t.name).ok()) {
      return BadTensor(path, t.name, "name must be non-empty valid UTF-8 and not __metadata__");
    }
    if (!seen.insert(t.name).second) return BadTensor(path, t.name, "duplicate tensor name");
    const std::optional<uint64_t> bytes = CheckedBytes(t.shape, t.dtype);
    if (!bytes) {
      return BadTensor(
          path, t.name,
          absl::StrCat("shape ", ShapeString(t.shape), " has a negative dim or overflows"));
    }
    if (*bytes > 0 && t.data == nullptr) return BadTensor(path, t.name, "data is null");
    uint64_t end = 0;
    if (__builtin_add_overflow(offset, *bytes, &end)) {
      return BadTensor(path, t.name, "total data size overflows 64 bits");
    }
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = TensorDTypeName(t.dtype);
    entry["shape"] = t.shape;
    entry["data_offsets"] = nlohmann::ordered_json::array({offset, end});
    header[t.name] = std::move(entry);
    offset = end;
  }
  std::string text = header.dump();
  const size_t padded = (8 + text.size() + kDataAlignment - 1) / kDataAlignment * kDataAlignment;
  text.resize(padded - 8, ' ');
  if (text.size() > kMaxHeaderBytes) {
    return BadFile(path, absl::StrCat("header would be ", text.size(), " bytes, over the limit"));
  }
  return text;
}

}  // namespace

size_t TensorDTypeSize(TensorDType t) {
  for (const DTypeInfo& d : kDTypes) {
    if (d.dtype == t) return d.size;
  }
  return 0;
}

const char* TensorDTypeName(TensorDType t) {
  for (const DTypeInfo& d : kDTypes) {
    if (d.dtype == t) return d.name;
  }
  return "?";
}

int64_t TensorView::NumElements() const {
  // Shapes were overflow-checked when the header was read.
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::filesystem::path& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  {
    ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return IoError(path, "open", errno);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return IoError(path, "stat", errno);
    if (!S_ISREG(st.st_mode)) return BadFile(path, "not a regular file");
    if (st.st_size < 8) {
      return BadFile(path, absl::StrCat("file is ", st.st_size,
                                        " bytes, too short for the 8-byte header length"));
    }
    const size_t size = static_cast<size_t>(st.st_size);
    // Read-only private mapping: the weights are never written, and even a stray write could
    // not reach the file. Truncating the file underneath us can still raise SIGBUS on access;
    // model files are expected to stay immutable while they are served.
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (m == MAP_FAILED) return IoError(path, "mmap", errno);
    f->map_ = m;
    f->map_size_ = size;
  }
  const auto* base = static_cast<const unsigned char*>(f->map_);
  const uint64_t file_size = f->map_size_;

  const uint64_t header_len = ReadLe64(base);
  if (header_len == 0) return BadFile(path, "header length is 0");
  if (header_len > kMaxHeaderBytes) {
    return BadFile(path, absl::StrCat("header length ", header_len, " exceeds the ",
                                      kMaxHeaderBytes, "-byte limit"));
  }
  if (header_len > file_size - 8) {
    return BadFile(path, absl::StrCat("header length ", header_len, " runs past the end of the ",
                                      file_size, "-byte file"));
  }
  const std::string_view header_text(reinterpret_cast<const char*>(base + 8), header_len);
  absl::StatusOr<Json> header = ParseStrictJson(header_text, kMaxHeaderDepth);
  if (!header.ok()) {
    return BadFile(path, absl::StrCat("header is not valid JSON: ", header.status().message()));
  }
  if (!header->is_object()) {
    return BadFile(path, absl::StrCat("header must be a JSON object, got ", JsonTypeName(*header)));
  }

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_bytes = file_size - data_start;
  std::vector<Entry> entries;
  for (auto it = header->begin(); it != header->end(); ++it) {
    if (it.key() == kMetadataKey) {
      XLSTMD_RETURN_IF_ERROR(ParseMetadata(path, *it, &f->metadata_));
      continue;
    }
    XLSTMD_ASSIGN_OR_RETURN(Entry e, ParseEntry(path, it.key(), *it, data_bytes));
    entries.push_back(std::move(e));
  }
  XLSTMD_RETURN_IF_ERROR(CheckNoOverlap(path, &entries));

  // Views are kept in file order (by offset), which is also the order they were written.
  f->tensors_.reserve(entries.size());
  const std::string file = path.string();
  for (Entry& e : entries) {
    TensorView v;
    v.name = std::move(e.name);
    v.dtype = e.dtype;
    v.shape = std::move(e.shape);
    v.data = base + data_start + e.begin;
    v.bytes = static_cast<size_t>(e.end - e.begin);
    v.file = file;
    f->index_.emplace(v.name, f->tensors_.size());
    f->tensors_.push_back(std::move(v));
  }
  return f;
}

const TensorView* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status WriteSafetensors(const std::filesystem::path& path,
                              absl::Span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata) {
  XLSTMD_ASSIGN_OR_RETURN(const std::string header, BuildHeader(tensors, metadata, path));

  // A unique sibling name, so the rename is atomic (same filesystem) and concurrent writers
  // in this or another process never share a temp file.
  std::filesystem::path tmp;
  int raw_fd = -1;
  for (int attempt = 0; attempt < 100 && raw_fd < 0; ++attempt) {
    tmp = path;
    tmp += absl::StrCat(".tmp-", ::getpid(), "-", temp_counter.fetch_add(1));
    raw_fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (raw_fd < 0 && errno != EEXIST) {
      // Named by the user's path: the temp file is an implementation detail.
      const int err = errno;
      const std::filesystem::path parent = path.has_parent_path() ? path.parent_path() : ".";
      if (err == ENOENT) {
        return absl::NotFoundError(absl::StrCat("cannot write ", path.string(), ": directory ",
                                                parent.string(), " does not exist"));
      }
      return base::IoError(path, "create", err);
    }
  }
  if (raw_fd < 0) return IoError(tmp, "create", EEXIST);
  ScopedFd fd(raw_fd);

  absl::Status s = [&]() -> absl::Status {
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(header.size() >> (8 * i));
    XLSTMD_RETURN_IF_ERROR(WriteAll(fd.get(), len, sizeof(len), tmp));
    XLSTMD_RETURN_IF_ERROR(WriteAll(fd.get(), header.data(), header.size(), tmp));
    for (const TensorToWrite& t : tensors) {
      const size_t bytes = static_cast<size_t>(*CheckedBytes(t.shape, t.dtype));
      XLSTMD_RETURN_IF_ERROR(WriteAll(fd.get(), t.data, bytes, tmp));
    }
    if (::fsync(fd.get()) != 0) return IoError(tmp, "fsync", errno);
    if (fd.Close() != 0) return IoError(tmp, "close", errno);
    if (::rename(tmp.c_str(), path.c_str()) != 0) return IoError(path, "rename", errno);
    return absl::OkStatus();
  }();
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  const std::filesystem::path parent = path.has_parent_path() ? path.parent_path() : ".";
  return SyncDir(parent);
}

}  // namespace xlstmd::core
