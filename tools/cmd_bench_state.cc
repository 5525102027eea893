// `xlstm bench-state`: what moving one session state between tiers costs, next to the
// hardware baseline measured in the same run (issue 5's benchmark). Per state layout:
//   memcpy            host memcpy of the state's bytes (the baseline of the RAM tiers)
//   host_to_slot      the backend's CopyToDevice into a slot arena (a restore from host RAM)
//   slot_to_host      CopyToHost (an eviction to host RAM)
//   disk_write_sync   snapshot encode + SnapshotDir::Write (temp file, fsync, rename, dir
//                     fsync), vs raw write()+fsync of the same bytes
//   disk_restore      SnapshotDir::Read + checksum-verified decode, cold (page cache dropped
//                     with posix_fadvise) and warm, vs raw read() of the same file
//   redis_put/get     with --redis-url: RedisStore Put, and Get + decode
// Each figure is the median of --repeat runs. JSON lines on stdout.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/base/flags.h"
#include "core/base/status_macros.h"
#include "core/model/state_layout.h"
#include "core/state/redis_store.h"
#include "core/state/snapshot.h"
#include "core/state/snapshot_store.h"
#include "kernels/backend_registry.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"

namespace xlstmd::tools {
namespace {

using Clock = std::chrono::steady_clock;

struct Preset {
  const char* name;
  const char* what;
  int64_t blocks, heads, dqk, dv;
};

// E=1024: xlstm mkmodel --embedding-dim 1024 --num-blocks 12 --num-heads 8 (qk factor 0.5).
// 7b: the released xLSTM-7B (E=4096, 32 blocks, 8 heads, qk factor 0.5): a 128 MiB state.
constexpr Preset kPresets[] = {
    {"e1024", "mkmodel E=1024, 12 blocks, 8 heads", 12, 8, 64, 128},
    {"7b", "xLSTM-7B layout, 32 blocks, 8 heads", 32, 8, 256, 512},
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Runs `fn` once untimed (first-touch page faults of fresh buffers are not a tier's cost: a
// daemon's slot arena and buffers are long-lived), then `repeat` times; the median in ms.
absl::StatusOr<double> TimeMs(int64_t repeat, const std::function<absl::Status()>& fn) {
  if (absl::Status s = fn(); !s.ok()) return s;
  std::vector<double> ms;
  for (int64_t i = 0; i < repeat; ++i) {
    const auto t0 = Clock::now();
    if (absl::Status s = fn(); !s.ok()) return s;
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return Median(std::move(ms));
}

double Gbps(uint64_t bytes, double ms) { return ms > 0 ? bytes / (ms * 1e6) : 0; }

void DropCache(const std::filesystem::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

absl::Status RawWriteSync(const std::filesystem::path& file, const char* data, size_t n) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", file.string()));
  size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(fd, data + done, n - done);
    if (w <= 0) {
      ::close(fd);
      return absl::InternalError("write");
    }
    done += static_cast<size_t>(w);
  }
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : absl::InternalError("fsync");
}

absl::Status RawRead(const std::filesystem::path& file, std::vector<char>* buf) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", file.string()));
  size_t done = 0;
  while (true) {
    const ssize_t r = ::read(fd, buf->data() + done, buf->size() - done);
    if (r < 0) {
      ::close(fd);
      return absl::InternalError("read");
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
    if (done == buf->size()) break;
  }
  ::close(fd);
  return absl::OkStatus();
}

void Emit(nlohmann::json j) { std::printf("%s\n", j.dump().c_str()); std::fflush(stdout); }

absl::Status BenchLayout(const Preset& p, int64_t repeat, const std::filesystem::path& dir,
                         const std::string& redis_url, kernels::Backend& backend) {
  const core::StateLayout layout = core::StateLayout::ForMlstmStack(p.blocks, p.heads, p.dqk, p.dv);
  const uint64_t bytes = static_cast<uint64_t>(layout.bytes_per_slot());
  const size_t floats = static_cast<size_t>(layout.floats_per_slot());
  const std::string tag = p.name;
  std::vector<float> state(floats), back(floats);
  for (size_t i = 0; i < floats; ++i) state[i] = static_cast<float>(i % 977) * 1e-3f;
  std::vector<float> copy(floats, 1.0f);

  // RAM tiers.
  XLSTMD_ASSIGN_OR_RETURN(void* arena, backend.Alloc(bytes));
  auto* slot = static_cast<float*>(arena);
  XLSTMD_ASSIGN_OR_RETURN(double memcpy_ms, TimeMs(repeat, [&] {
    std::memcpy(copy.data(), state.data(), bytes);
    return absl::OkStatus();
  }));
  XLSTMD_ASSIGN_OR_RETURN(double h2s_ms, TimeMs(repeat, [&] {
    backend.CopyToDevice(slot, state.data(), bytes);
    return absl::OkStatus();
  }));
  XLSTMD_ASSIGN_OR_RETURN(double s2h_ms, TimeMs(repeat, [&] {
    backend.CopyToHost(back.data(), slot, bytes);
    return absl::OkStatus();
  }));
  backend.Free(arena);
  const double memcpy_gbps = Gbps(bytes, memcpy_ms);
  Emit({{"state", tag}, {"layout", p.what}, {"state_bytes", bytes}, {"op", "memcpy"},
        {"ms", memcpy_ms}, {"gbps", memcpy_gbps}});
  Emit({{"state", tag}, {"op", "host_to_slot"}, {"ms", h2s_ms}, {"gbps", Gbps(bytes, h2s_ms)},
        {"fraction_of_memcpy", Gbps(bytes, h2s_ms) / memcpy_gbps}});
  Emit({{"state", tag}, {"op", "slot_to_host"}, {"ms", s2h_ms}, {"gbps", Gbps(bytes, s2h_ms)},
        {"fraction_of_memcpy", Gbps(bytes, s2h_ms) / memcpy_gbps}});

  // Disk tier.
  const auto fp = core::StateFingerprint::For("bench-state", layout);
  core::SnapshotMeta meta;
  meta.session_id = "AAAAAAAAAAAAAAAAAAAAAA";
  meta.owner = "bench";
  meta.version = 7;
  core::SnapshotDir::Options dopts;
  dopts.max_file_bytes = core::MaxSnapshotBytes(layout);
  XLSTMD_ASSIGN_OR_RETURN(auto sdir, core::SnapshotDir::Open(dir / tag, dopts));
  uint64_t file_bytes = 0;
  XLSTMD_ASSIGN_OR_RETURN(double write_ms, TimeMs(repeat, [&]() -> absl::Status {
    XLSTMD_ASSIGN_OR_RETURN(core::SnapshotParts parts,
                            core::EncodeSnapshotParts(meta, fp, layout, state));
    const std::string_view payload(reinterpret_cast<const char*>(parts.payload.data()),
                                   parts.payload.size() * sizeof(float));
    const std::string_view pieces[] = {parts.head, payload, parts.tail};
    file_bytes = parts.total_bytes();
    return sdir->Write(meta.session_id, pieces);
  }));
  const auto raw_file = dir / tag / "raw.bin";
  XLSTMD_ASSIGN_OR_RETURN(double raw_write_ms, TimeMs(repeat, [&] {
    return RawWriteSync(raw_file, reinterpret_cast<const char*>(state.data()), bytes);
  }));
  Emit({{"state", tag}, {"op", "disk_write_sync"}, {"ms", write_ms},
        {"mbps", Gbps(file_bytes, write_ms) * 1e3}, {"raw_write_fsync_ms", raw_write_ms},
        {"raw_mbps", Gbps(bytes, raw_write_ms) * 1e3},
        {"fraction_of_raw", Gbps(file_bytes, write_ms) / Gbps(bytes, raw_write_ms)}});

  const auto snap_file = sdir->FilePath(meta.session_id);
  std::vector<char> raw_buf(bytes);
  for (const bool cold : {true, false}) {
    XLSTMD_ASSIGN_OR_RETURN(double read_ms, TimeMs(repeat, [&]() -> absl::Status {
      if (cold) DropCache(snap_file);
      XLSTMD_ASSIGN_OR_RETURN(std::string file, sdir->Read(meta.session_id));
      return core::DecodeSnapshotInto(file, fp, layout, absl::MakeSpan(back)).status();
    }));
    XLSTMD_ASSIGN_OR_RETURN(double raw_ms, TimeMs(repeat, [&] {
      if (cold) DropCache(raw_file);
      return RawRead(raw_file, &raw_buf);
    }));
    Emit({{"state", tag}, {"op", cold ? "disk_restore_cold" : "disk_restore_warm"},
          {"ms", read_ms}, {"mbps", Gbps(file_bytes, read_ms) * 1e3}, {"raw_read_ms", raw_ms},
          {"raw_mbps", Gbps(bytes, raw_ms) * 1e3},
          {"fraction_of_raw_read", Gbps(file_bytes, read_ms) / Gbps(bytes, raw_ms)}});
  }
  if (back != state) return absl::InternalError("the restored state differs from the written one");
  std::filesystem::remove_all(dir / tag);

  if (!redis_url.empty()) {
    core::RedisStore::Options ropts;
    ropts.key_prefix = core::RedisStore::KeyPrefixFor(fp.Id());
    ropts.max_snapshot_bytes = core::MaxSnapshotBytes(layout);
    ropts.pool.io_timeout_ms = 30000;
    XLSTMD_ASSIGN_OR_RETURN(auto redis, core::RedisStore::Connect(redis_url, ropts));
    (void)redis->Delete(meta.session_id);
    uint64_t version = 0;
    XLSTMD_ASSIGN_OR_RETURN(double put_ms, TimeMs(repeat, [&]() -> absl::Status {
      XLSTMD_ASSIGN_OR_RETURN(core::SnapshotParts parts,
                              core::EncodeSnapshotParts(meta, fp, layout, state));
      const std::string_view payload(reinterpret_cast<const char*>(parts.payload.data()),
                                     parts.payload.size() * sizeof(float));
      const std::string_view pieces[] = {parts.head, payload, parts.tail};
      core::RedisPutRequest req;
      req.session_id = meta.session_id;
      req.expected = version == 0 ? core::ExpectedVersion::Absent()
                                  : core::ExpectedVersion::Is(version);
      req.new_version = version + 1;
      req.owner = meta.owner;
      XLSTMD_RETURN_IF_ERROR(redis->Put(req, pieces).status());
      ++version;
      return absl::OkStatus();
    }));
    XLSTMD_ASSIGN_OR_RETURN(double get_ms, TimeMs(repeat, [&]() -> absl::Status {
      XLSTMD_ASSIGN_OR_RETURN(core::RedisSnapshot snap, redis->Get(meta.session_id));
      return core::DecodeSnapshotInto(snap.bytes, fp, layout, absl::MakeSpan(back)).status();
    }));
    (void)redis->Delete(meta.session_id);
    Emit({{"state", tag}, {"op", "redis_put"}, {"ms", put_ms},
          {"mbps", Gbps(file_bytes, put_ms) * 1e3}});
    Emit({{"state", tag}, {"op", "redis_restore"}, {"ms", get_ms},
          {"mbps", Gbps(file_bytes, get_ms) * 1e3}});
  }
  return absl::OkStatus();
}

}  // namespace

int RunBenchState(int argc, char** argv) {
  std::string states = "e1024,7b", dir, redis_url;
  int64_t repeat = 5, threads = 0;
  FlagSet flags("bench-state",
                "Measures restore and spill of one session state per tier (RAM, disk, Redis) "
                "next to memcpy, raw write+fsync and raw read of the same bytes, measured in "
                "the same run. JSON lines.");
  flags.String("states", &states, "state layouts, comma-separated: e1024 (mkmodel E=1024), "
                                  "7b (xLSTM-7B, 128 MiB)");
  flags.String("dir", &dir, "directory for the disk tier's files (default: a temp dir)");
  flags.String("redis-url", &redis_url, "also measure a Redis tier at this URL");
  flags.Int("repeat", &repeat, 1, 1000, "runs per figure (the median is printed)");
  flags.Int("threads", &threads, 0, 1024,
            "backend threads for slot copies, as xlstmd --threads (0 = one per core)");
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  std::vector<const Preset*> chosen;
  for (const absl::string_view name : absl::StrSplit(states, ',', absl::SkipEmpty())) {
    const Preset* found = nullptr;
    for (const Preset& p : kPresets) {
      if (name == p.name) found = &p;
    }
    if (found == nullptr) {
      std::fprintf(stderr, "xlstm bench-state: error: --states: unknown layout '%s' (e1024, 7b)\n",
                   std::string(name).c_str());
      return kExitUsage;
    }
    chosen.push_back(found);
  }
  std::filesystem::path base =
      dir.empty() ? std::filesystem::temp_directory_path() / absl::StrCat("xlstm-bench-state-",
                                                                          ::getpid())
                  : std::filesystem::path(dir);
  kernels::BackendOptions bopts;
  bopts.threads = static_cast<int>(threads);
  auto backend = kernels::CreateBackend("cpu", bopts);
  if (!backend.ok()) {
    std::fprintf(stderr, "xlstm bench-state: error: %s\n", backend.status().ToString().c_str());
    return kExitRuntime;
  }
  for (const Preset* p : chosen) {
    if (absl::Status s = BenchLayout(*p, repeat, base, redis_url, **backend); !s.ok()) {
      std::fprintf(stderr, "xlstm bench-state: error: %s\n", s.ToString().c_str());
      if (dir.empty()) std::filesystem::remove_all(base);
      return kExitRuntime;
    }
  }
  if (dir.empty()) std::filesystem::remove_all(base);
  return kExitOk;
}

}  // namespace xlstmd::tools
