#include "core/model/random_model.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/file_io.h"
#include "core/base/status_macros.h"
#include "core/model/config.h"
#include "nlohmann/json.hpp"

namespace xlstmd::core {
namespace {

using OrderedJson = nlohmann::ordered_json;
using base::IoError;
using base::PwriteAll;

// Elements per independently seeded chunk. Fixed: changing it changes every file written.
constexpr int64_t kChunkElements = int64_t{1} << 20;

enum class Dist { kNormal, kUniform };

// One tensor of the checkpoint and where it lands on disk.
struct TensorPlan {
  std::string name;
  std::vector<int64_t> shape;
  Dist dist;
  double a;  // kNormal: std; kUniform: low
  double b;  // kUniform: high
  int64_t elements = 0;
  int shard = 0;
  uint64_t begin = 0;  // byte offset inside the shard's data section
};

struct ShardFile {
  std::filesystem::path final_path;
  std::filesystem::path tmp_path;
  std::string header;  // JSON, space-padded so data starts 8-byte aligned
  uint64_t data_bytes = 0;
  int fd = -1;
};

ModelConfig DimsOf(const RandomModelSpec& spec) {
  ModelConfig c;
  c.model_type = "xlstm";
  c.vocab_size = spec.vocab;
  c.embedding_dim = spec.embedding_dim;
  c.num_blocks = spec.num_blocks;
  c.num_heads = spec.num_heads;
  c.qk_dim_factor = spec.qk_dim_factor;
  c.v_dim_factor = spec.v_dim_factor;
  c.ffn_proj_factor = spec.ffn_proj_factor;
  return c;
}

std::vector<TensorPlan> PlanTensors(const RandomModelSpec& spec) {
  const ModelConfig c = DimsOf(spec);
  const int64_t e = c.embedding_dim, qk = c.qk_dim(), v = c.v_dim(), f = c.ffn_dim();
  const int64_t nh = c.num_heads;
  const double in_e = 1.0 / std::sqrt(static_cast<double>(e));
  const double depth = 1.0 / std::sqrt(2.0 * static_cast<double>(c.num_blocks));
  std::vector<TensorPlan> t;
  auto normal = [&t](std::string name, std::vector<int64_t> shape, double std_dev) {
    t.push_back({std::move(name), std::move(shape), Dist::kNormal, std_dev, 0.0});
  };
  auto uniform = [&t](std::string name, std::vector<int64_t> shape, double lo, double hi) {
    t.push_back({std::move(name), std::move(shape), Dist::kUniform, lo, hi});
  };
  normal("backbone.embeddings.weight", {c.vocab_size, e}, 1.0);
  for (int64_t b = 0; b < c.num_blocks; ++b) {
    const std::string p = absl::StrCat("backbone.blocks.", b, ".");
    const std::string m = p + "mlstm_layer.";
    uniform(p + "norm_mlstm.weight", {e}, 0.9, 1.1);
    normal(m + "q.weight", {qk, e}, in_e);
    normal(m + "k.weight", {qk, e}, in_e);
    normal(m + "v.weight", {v, e}, in_e);
    normal(m + "ogate_preact.weight", {v, e}, in_e);
    normal(m + "igate_preact.weight", {nh, e}, in_e);
    uniform(m + "igate_preact.bias", {nh}, -3.0, 0.0);
    normal(m + "fgate_preact.weight", {nh, e}, in_e);
    uniform(m + "fgate_preact.bias", {nh}, 3.0, 6.0);
    uniform(m + "multihead_norm.weight", {v}, 0.9, 1.1);
    normal(m + "out_proj.weight", {e, v}, depth / std::sqrt(static_cast<double>(v)));
    uniform(p + "norm_ffn.weight", {e}, 0.9, 1.1);
    normal(p + "ffn.proj_up_gate.weight", {f, e}, in_e);
    normal(p + "ffn.proj_up.weight", {f, e}, in_e);
    normal(p + "ffn.proj_down.weight", {e, f}, depth / std::sqrt(static_cast<double>(f)));
  }
  uniform("backbone.out_norm.weight", {e}, 0.9, 1.1);
  normal("lm_head.weight", {c.vocab_size, e}, in_e);
  for (TensorPlan& p : t) {
    p.elements = 1;
    for (int64_t d : p.shape) p.elements *= d;
  }
  return t;
}

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

// Fills out[0, n) with chunk `chunk` of tensor `tensor`: a counter-based stream, so each
// value depends only on (seed, tensor, chunk, position).
void FillChunk(const TensorPlan& p, uint64_t seed, uint64_t tensor, uint64_t chunk, float* out,
               int64_t n) {
  constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
  const uint64_t base = Mix64(seed + kGolden * (tensor + 1)) ^
                        Mix64(chunk * 0xd1b54a32d192ed03ULL + 0x632be59bd9b4e019ULL);
  if (p.dist == Dist::kNormal) {
    // Irwin–Hall: four 16-bit uniforms, centred and scaled to unit variance.
    constexpr double kMean = 2.0 * 65535.0;
    const double scale = p.a * std::sqrt(3.0) / 65536.0;
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t r = Mix64(base + kGolden * static_cast<uint64_t>(i + 1));
      const uint64_t s = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
      out[i] = static_cast<float>((static_cast<double>(s) - kMean) * scale);
    }
  } else {
    const double span = (p.b - p.a) * 0x1.0p-53;
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t r = Mix64(base + kGolden * static_cast<uint64_t>(i + 1));
      out[i] = static_cast<float>(p.a + static_cast<double>(r >> 11) * span);
    }
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
                            const std::vector<ShardFile>& shards, const RandomModelSpec& spec,
                            int threads) {
  std::vector<WorkItem> items;
  for (size_t t = 0; t < plans.size(); ++t) {
    const int64_t chunks = (plans[t].elements + kChunkElements - 1) / kChunkElements;
    for (int64_t c = 0; c < chunks; ++c) items.push_back({static_cast<int32_t>(t), c});
  }
  const bool bf16 = spec.dtype == kernels::DType::kBF16;
  const size_t dsize = bf16 ? 2 : 4;
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
      FillChunk(p, spec.seed, static_cast<uint64_t>(items[i].tensor),
                static_cast<uint64_t>(items[i].chunk), buf.data(), n);
      const void* src = buf.data();
      if (bf16) {
        ToBf16(buf.data(), half.data(), n);
        src = half.data();
      }
      const ShardFile& s = shards[p.shard];
      const uint64_t offset = 8 + s.header.size() + p.begin + static_cast<uint64_t>(start) * dsize;
      absl::Status st = PwriteAll(s.fd, src, static_cast<size_t>(n) * dsize, offset, s.tmp_path);
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

std::string ConfigJson(const RandomModelSpec& spec) {
  const bool bf16 = spec.dtype == kernels::DType::kBF16;
  OrderedJson j;
  j["add_out_norm"] = true;
  j["architectures"] = {"xLSTMForCausalLM"};
  j["autocast_kernel_dtype"] = "bfloat16";
  j["bos_token_id"] = 0;
  j["chunk_size"] = 64;
  j["chunkwise_kernel"] = "chunkwise--native_autograd";
  j["embedding_dim"] = spec.embedding_dim;
  j["eos_token_id"] = 2;
  j["eps"] = 1e-6;
  j["ffn_proj_factor"] = spec.ffn_proj_factor;
  j["ffn_round_up_to_multiple_of"] = 64;
  j["force_bos_token_insert"] = true;
  j["gate_soft_cap"] = 15.0;
  j["hidden_size"] = spec.embedding_dim;
  j["inference_state_dtype"] = "float32";
  j["max_inference_chunksize"] = 16384;
  j["mode"] = "inference";
  j["model_type"] = "xlstm";
  j["norm_eps"] = 1e-6;
  j["norm_reduction_force_float32"] = true;
  j["num_blocks"] = spec.num_blocks;
  j["num_heads"] = spec.num_heads;
  j["num_hidden_layers"] = spec.num_blocks;
  j["output_logit_soft_cap"] = 30.0;
  j["pad_token_id"] = 1;
  j["qk_dim_factor"] = spec.qk_dim_factor;
  j["return_last_states"] = true;
  j["sequence_kernel"] = "native_sequence__native";
  j["step_kernel"] = "native";
  j["tie_word_embeddings"] = false;
  j["torch_dtype"] = bf16 ? "bfloat16" : "float32";
  j["use_bias"] = false;
  j["use_cache"] = true;
  j["v_dim_factor"] = spec.v_dim_factor;
  j["vocab_size"] = spec.vocab;
  j["weight_mode"] = "single";
  return j.dump(2) + "\n";
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

absl::Status PrepareDir(const RandomModelSpec& spec, const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir.string(), ": create: ", ec.message()));
  if (!spec.overwrite && std::filesystem::exists(dir / "config.json")) {
    return absl::AlreadyExistsError(
        absl::StrCat((dir / "config.json").string(), " already exists (use overwrite/--force)"));
  }
  std::filesystem::remove(dir / "config.json", ec);
  return RemoveOldWeights(dir);
}

}  // namespace

absl::Status ValidateRandomModelSpec(const RandomModelSpec& spec) {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError(what); };
  if (spec.embedding_dim < 1 || spec.embedding_dim > (int64_t{1} << 20)) {
    return bad(absl::StrCat("embedding_dim ", spec.embedding_dim, " out of range [1, 1048576]"));
  }
  if (spec.num_blocks < 1 || spec.num_blocks > 4096) {
    return bad(absl::StrCat("num_blocks ", spec.num_blocks, " out of range [1, 4096]"));
  }
  if (spec.vocab < 1 || spec.vocab > (int64_t{1} << 24)) {
    return bad(absl::StrCat("vocab ", spec.vocab, " out of range [1, 16777216]"));
  }
  if (spec.num_heads < 1 || spec.num_heads > spec.embedding_dim) {
    return bad(absl::StrCat("num_heads ", spec.num_heads, " out of range [1, embedding_dim]"));
  }
  for (double f : {spec.qk_dim_factor, spec.v_dim_factor, spec.ffn_proj_factor}) {
    if (!(f > 0.0 && f <= 64.0)) return bad(absl::StrCat("dim factor ", f, " out of (0, 64]"));
  }
  if (spec.dtype != kernels::DType::kF32 && spec.dtype != kernels::DType::kBF16) {
    return bad("dtype must be f32 or bf16");
  }
  const ModelConfig c = DimsOf(spec);
  if (c.qk_dim() < c.num_heads || c.qk_dim() % c.num_heads != 0) {
    return bad(absl::StrCat("num_heads ", c.num_heads, " does not divide qk_dim ", c.qk_dim()));
  }
  if (c.v_dim() < c.num_heads || c.v_dim() % c.num_heads != 0) {
    return bad(absl::StrCat("num_heads ", c.num_heads, " does not divide v_dim ", c.v_dim()));
  }
  if (spec.max_shard_bytes == 0) return bad("max_shard_bytes must be > 0");
  return absl::OkStatus();
}

absl::Status WriteRandomModel(const RandomModelSpec& spec, const std::filesystem::path& out_dir) {
  XLSTMD_RETURN_IF_ERROR(ValidateRandomModelSpec(spec));
  XLSTMD_RETURN_IF_ERROR(PrepareDir(spec, out_dir));
  const bool bf16 = spec.dtype == kernels::DType::kBF16;
  const size_t dsize = bf16 ? 2 : 4;
  std::vector<TensorPlan> plans = PlanTensors(spec);
  const int num_shards = AssignShards(&plans, dsize, spec.max_shard_bytes);
  std::vector<ShardFile> shards(num_shards);
  uint64_t total_bytes = 0;
  absl::Status status;
  for (int i = 0; i < num_shards && status.ok(); ++i) {
    ShardFile& s = shards[i];
    s.final_path = out_dir / ShardName(i, num_shards);
    s.tmp_path = s.final_path;
    s.tmp_path += ".tmp";
    s.header = BuildHeader(plans, i, dsize, bf16 ? "BF16" : "F32", &s.data_bytes);
    total_bytes += s.data_bytes;
    status = OpenShard(&s);
  }
  int threads = spec.threads > 0
                    ? spec.threads
                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (status.ok()) status = WriteAllChunks(plans, shards, spec, threads);
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
  if (num_shards > 1) XLSTMD_RETURN_IF_ERROR(WriteIndex(out_dir, plans, num_shards, total_bytes));
  return base::WriteTextFile(out_dir / "config.json", ConfigJson(spec));
}

}  // namespace xlstmd::core
