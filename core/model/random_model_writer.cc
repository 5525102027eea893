#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/file_io.h"
#include "core/base/status_macros.h"
#include "core/model/random_model_internal.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core::random_model_internal {
namespace {

using OrderedJson = nlohmann::ordered_json;
using base::IoError;
using base::PwriteAll;

// Elements per independently seeded chunk. Fixed: changing it changes every file written.
constexpr int64_t kChunkElements = int64_t{1} << 20;
constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

struct ShardFile {
  std::filesystem::path final_path;
  std::filesystem::path tmp_path;
  std::string header;  // JSON, space-padded so data starts 8-byte aligned
  uint64_t data_bytes = 0;
  int fd = -1;
};

// Header bytes budgeted per tensor entry (name, dtype, shape, offsets) and per file, so a
// whole shard file — not just its data — stays within the limit.
constexpr uint64_t kHeaderBytesPerTensor = 256;
constexpr uint64_t kHeaderBytesFixed = 128;

// Packs tensors in order into shard files of at most `limit` bytes; returns the shard count.
int AssignShards(std::vector<TensorPlan>* plans, size_t dsize, uint64_t limit) {
  int shard = 0;
  uint64_t used = 0, count = 0;
  for (TensorPlan& p : *plans) {
    const uint64_t bytes = static_cast<uint64_t>(p.elements) * dsize;
    const uint64_t file = kHeaderBytesFixed + kHeaderBytesPerTensor * (count + 1) + used + bytes;
    if (count > 0 && file > limit) {
      ++shard;
      used = 0;
      count = 0;
    }
    p.shard = shard;
    p.begin = used;
    used += bytes;
    ++count;
  }
  return shard + 1;
}

std::string ShardName(int index, int count) {
  if (count == 1) return "model.safetensors";
  return absl::StrFormat("model-%05d-of-%05d.safetensors", index + 1, count);
}

std::string BuildHeader(const std::vector<TensorPlan>& plans, int shard, size_t dsize,
                        const char* dtype_name, uint64_t* data_bytes) {
  OrderedJson h = OrderedJson::object();
  h["__metadata__"] = {{"format", "pt"}};
  *data_bytes = 0;
  for (const TensorPlan& p : plans) {
    if (p.shard != shard) continue;
    const uint64_t end = p.begin + static_cast<uint64_t>(p.elements) * dsize;
    h[p.name] = {{"dtype", dtype_name}, {"shape", p.shape}, {"data_offsets", {p.begin, end}}};
    *data_bytes = std::max(*data_bytes, end);
  }
  std::string s = h.dump();
  while ((8 + s.size()) % 8 != 0) s.push_back(' ');
  return s;
}

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The stream of chunk `chunk` of tensor `tensor`: element i of the chunk draws from
// Mix64(base + kGolden * (i + 1)), so each value depends only on (seed, tensor, chunk, i).
uint64_t ChunkBase(uint64_t seed, uint64_t tensor, uint64_t chunk) {
  return Mix64(seed + kGolden * (tensor + 1)) ^
         Mix64(chunk * 0xd1b54a32d192ed03ULL + 0x632be59bd9b4e019ULL);
}

// Turns one random word into a value of a Draw.
class Sampler {
 public:
  explicit Sampler(const Draw& d)
      : normal_(d.dist == Dist::kNormal),
        lo_(d.a),
        // Irwin–Hall: four 16-bit uniforms, centred and scaled to unit variance.
        scale_(normal_ ? d.a * std::sqrt(3.0) / 65536.0 : (d.b - d.a) * 0x1.0p-53) {}

  float operator()(uint64_t r) const {
    if (normal_) {
      constexpr double kMean = 2.0 * 65535.0;
      const uint64_t s = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
      return static_cast<float>((static_cast<double>(s) - kMean) * scale_);
    }
    return static_cast<float>(lo_ + static_cast<double>(r >> 11) * scale_);
  }

 private:
  bool normal_;
  double lo_;
  double scale_;
};

// Fills out[0, n) with stored elements [start, start + n) of tensor `tensor`.
void FillChunk(const TensorPlan& p, uint64_t seed, uint64_t tensor, int64_t start, float* out,
               int64_t n) {
  if (p.draws.size() == 1 && p.relayout.identity()) {
    // Stored order is logical order and start is a chunk boundary: one stream, one sampler.
    const Sampler sample(p.draws[0]);
    const uint64_t base = ChunkBase(seed, tensor, static_cast<uint64_t>(start / kChunkElements));
    for (int64_t i = 0; i < n; ++i) {
      out[i] = sample(Mix64(base + kGolden * static_cast<uint64_t>(i + 1)));
    }
    return;
  }
  std::vector<Sampler> samplers;
  for (const Draw& d : p.draws) samplers.emplace_back(d);
  const Relayout& r = p.relayout;
  const int64_t segment = std::max<int64_t>(p.segment, 1);
  int64_t cached_chunk = -1;
  uint64_t base = 0;
  for (int64_t i = 0; i < n; ++i) {
    // Stored [outer, b, a, inner] -> logical [outer, a, b, inner].
    const int64_t s = start + i;
    const int64_t in = s % r.inner, ja = (s / r.inner) % r.a, jb = (s / (r.inner * r.a)) % r.b;
    const int64_t o = s / (r.inner * r.a * r.b);
    const int64_t logical = ((o * r.a + ja) * r.b + jb) * r.inner + in;
    const int64_t chunk = logical / kChunkElements;
    if (chunk != cached_chunk) {
      base = ChunkBase(seed, tensor, static_cast<uint64_t>(chunk));
      cached_chunk = chunk;
    }
    const uint64_t pos = static_cast<uint64_t>(logical % kChunkElements);
    const size_t k =
        static_cast<size_t>((logical / segment) % static_cast<int64_t>(samplers.size()));
    out[i] = samplers[k](Mix64(base + kGolden * (pos + 1)));
  }
}

// float32 -> bfloat16, round to nearest even (the values are finite).
void ToBf16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &src[i], 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    dst[i] = static_cast<uint16_t>(u >> 16);
  }
}

struct WorkItem {
  int32_t tensor;
  int64_t chunk;
};

// Generates and writes every chunk with `threads` workers; returns the first error.
absl::Status WriteAllChunks(const std::vector<TensorPlan>& plans,
                            const std::vector<ShardFile>& shards, const WriteOptions& options,
                            int threads) {
  std::vector<WorkItem> items;
  for (size_t t = 0; t < plans.size(); ++t) {
    const int64_t chunks = (plans[t].elements + kChunkElements - 1) / kChunkElements;
    for (int64_t c = 0; c < chunks; ++c) items.push_back({static_cast<int32_t>(t), c});
  }
  const bool bf16 = options.dtype == kernels::DType::kBF16;
  const size_t dsize = bf16 ? 2 : 4;
  uint64_t total_bytes = 0;
  for (const TensorPlan& p : plans) total_bytes += static_cast<uint64_t>(p.elements) * dsize;
  std::atomic<uint64_t> done_bytes{0};
  std::atomic<size_t> next{0};
  std::mutex mu;
  absl::Status first_error;
  auto worker = [&]() {
    std::vector<float> buf(kChunkElements);
    std::vector<uint16_t> half(bf16 ? kChunkElements : 0);
    for (size_t i = next.fetch_add(1); i < items.size(); i = next.fetch_add(1)) {
      const TensorPlan& p = plans[items[i].tensor];
      const int64_t start = items[i].chunk * kChunkElements;
      const int64_t n = std::min(kChunkElements, p.elements - start);
      FillChunk(p, options.seed, static_cast<uint64_t>(items[i].tensor), start, buf.data(), n);
      const void* src = buf.data();
      if (bf16) {
        ToBf16(buf.data(), half.data(), n);
        src = half.data();
      }
      const ShardFile& s = shards[p.shard];
      const uint64_t offset = 8 + s.header.size() + p.begin + static_cast<uint64_t>(start) * dsize;
      absl::Status st = PwriteAll(s.fd, src, static_cast<size_t>(n) * dsize, offset, s.tmp_path);
      if (options.progress) {
        options.progress(done_bytes.fetch_add(static_cast<uint64_t>(n) * dsize) +
                             static_cast<uint64_t>(n) * dsize,
                         total_bytes);
      }
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.ok()) first_error = st;
        next.store(items.size());
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  return first_error;
}

absl::Status OpenShard(ShardFile* s) {
  s->fd = ::open(s->tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (s->fd < 0) return IoError(s->tmp_path, "create", errno);
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(s->header.size() >> (8 * i));
  XLSTMD_RETURN_IF_ERROR(PwriteAll(s->fd, len, 8, 0, s->tmp_path));
  XLSTMD_RETURN_IF_ERROR(PwriteAll(s->fd, s->header.data(), s->header.size(), 8, s->tmp_path));
  const off_t total = static_cast<off_t>(8 + s->header.size() + s->data_bytes);
  if (::ftruncate(s->fd, total) != 0) return IoError(s->tmp_path, "truncate", errno);
  return absl::OkStatus();
}

// Removes weight files a previous run may have left (a sharded model replaced by a single
// file, or the reverse), so the directory never mixes two models.
absl::Status RemoveOldWeights(const std::filesystem::path& dir) {
  std::error_code ec;
  std::vector<std::filesystem::path> old;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name == "model.safetensors" || name == "model.safetensors.index.json" ||
                      (name.rfind("model-", 0) == 0 && name.find("-of-") != std::string::npos &&
                       name.size() > 12 && name.ends_with(".safetensors"));
    if (ours) old.push_back(entry.path());
  }
  if (ec) return absl::InternalError(absl::StrCat(dir.string(), ": list: ", ec.message()));
  for (const auto& p : old) {
    if (!std::filesystem::remove(p, ec) || ec) {
      return absl::InternalError(absl::StrCat(p.string(), ": remove: ", ec.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteIndex(const std::filesystem::path& dir, const std::vector<TensorPlan>& plans,
                        int shards, uint64_t total_bytes) {
  OrderedJson j;
  j["metadata"] = {{"total_size", total_bytes}};
  OrderedJson map = OrderedJson::object();
  for (const TensorPlan& p : plans) map[p.name] = ShardName(p.shard, shards);
  j["weight_map"] = std::move(map);
  return base::WriteTextFile(dir / "model.safetensors.index.json", j.dump(2) + "\n");
}

absl::Status PrepareDir(bool overwrite, const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir.string(), ": create: ", ec.message()));
  if (!overwrite && std::filesystem::exists(dir / "config.json")) {
    return absl::AlreadyExistsError(
        absl::StrCat((dir / "config.json").string(), " already exists (use overwrite/--force)"));
  }
  std::filesystem::remove(dir / "config.json", ec);
  return RemoveOldWeights(dir);
}

}  // namespace

absl::Status WriteModelDir(std::vector<TensorPlan> plans, const WriteOptions& options,
                           const std::string& config_json, const std::filesystem::path& dir) {
  XLSTMD_RETURN_IF_ERROR(PrepareDir(options.overwrite, dir));
  const bool bf16 = options.dtype == kernels::DType::kBF16;
  const size_t dsize = bf16 ? 2 : 4;
  for (TensorPlan& p : plans) {
    p.elements = 1;
    for (int64_t d : p.shape) p.elements *= d;
  }
  const int num_shards = AssignShards(&plans, dsize, options.max_shard_bytes);
  std::vector<ShardFile> shards(num_shards);
  uint64_t total_bytes = 0;
  absl::Status status;
  for (int i = 0; i < num_shards && status.ok(); ++i) {
    ShardFile& s = shards[i];
    s.final_path = dir / ShardName(i, num_shards);
    s.tmp_path = s.final_path;
    s.tmp_path += ".tmp";
    s.header = BuildHeader(plans, i, dsize, bf16 ? "BF16" : "F32", &s.data_bytes);
    total_bytes += s.data_bytes;
    status = OpenShard(&s);
  }
  int threads = options.threads > 0
                    ? options.threads
                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (status.ok()) status = WriteAllChunks(plans, shards, options, threads);
  for (ShardFile& s : shards) {
    if (s.fd >= 0 && ::close(s.fd) != 0 && status.ok())
      status = IoError(s.tmp_path, "close", errno);
    s.fd = -1;
  }
  for (ShardFile& s : shards) {
    if (status.ok() && ::rename(s.tmp_path.c_str(), s.final_path.c_str()) != 0) {
      status = IoError(s.final_path, "rename", errno);
    }
    if (!status.ok()) ::unlink(s.tmp_path.c_str());
  }
  XLSTMD_RETURN_IF_ERROR(status);
  if (num_shards > 1) XLSTMD_RETURN_IF_ERROR(WriteIndex(dir, plans, num_shards, total_bytes));
  return base::WriteTextFile(dir / "config.json", config_json);
}

}  // namespace xlstmd::core::random_model_internal
