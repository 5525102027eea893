#include "core/state/snapshot_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/base/file_io.h"
#include "core/base/scoped_fd.h"
#include "core/base/status_macros.h"

namespace xlstmd::core {
namespace {

constexpr const char* kLockName = ".lock";
constexpr const char* kSidecarSuffix = ".why";
constexpr size_t kSessionIdChars = 22;  // 128 bits of unpadded base64url
constexpr size_t kMaxReasonChars = 32;
constexpr size_t kMaxQuarantinedNameChars = 64;

// Debian's Abseil has its own string_view type, distinct from std::string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t MtimeMs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
}

// splitmix64: spreads a counter over 64 bits so temp names do not look sequential.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Errors name the file `name` inside the store directory (the directory itself for "").
absl::Status IoError(const std::filesystem::path& dir, std::string_view name, std::string_view op,
                     int err) {
  return base::IoError(dir / std::string(name), Av(op), err);
}

using base::ScopedFd;

absl::Status WriteAll(int fd, std::string_view data, const std::filesystem::path& dir,
                      std::string_view name) {
  return base::WriteAll(fd, data.data(), data.size(), dir / std::string(name));
}

bool IsValidReason(std::string_view reason) {
  if (reason.empty() || reason.size() > kMaxReasonChars) return false;
  return std::all_of(reason.begin(), reason.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// A name from the directory listing may hold any byte but '/' and NUL: keep the quarantined
// copy's name printable and short (the sidecar records the original exactly).
std::string SanitizedName(std::string_view name) {
  std::string out(name.substr(0, kMaxQuarantinedNameChars));
  for (char& c : out) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '_' || c == '.';
    if (!keep) c = '_';
  }
  return out;
}

// Returns the session id if `name` is `<valid id>.xss`.
std::optional<std::string_view> SnapshotNameToId(std::string_view name) {
  if (!absl::EndsWith(Av(name), Av(SnapshotDir::kSuffix))) return std::nullopt;
  name.remove_suffix(SnapshotDir::kSuffix.size());
  if (!SnapshotDir::IsValidSessionId(name)) return std::nullopt;
  return name;
}

std::string SnapshotName(std::string_view session_id) {
  return absl::StrCat(Av(session_id), Av(SnapshotDir::kSuffix));
}

}  // namespace

bool SnapshotDir::IsValidSessionId(std::string_view id) {
  if (id.size() != kSessionIdChars) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

absl::StatusOr<std::unique_ptr<SnapshotDir>> SnapshotDir::Open(const std::filesystem::path& dir,
                                                               Options options) {
  if (dir.empty()) return absl::InvalidArgumentError("state directory path is empty");
  if (dir.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(dir.parent_path(), ec);
    if (ec) {
      return absl::Status(absl::ErrnoToStatusCode(ec.value()),
                          absl::StrCat(dir.parent_path().string(), ": create: ", ec.message()));
    }
  }
  // Snapshots hold users' conversations: owner-only. An existing directory keeps its mode.
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return IoError(dir, "", "mkdir", errno);
  }
  ScopedFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0) {
    if (errno == ENOTDIR) {
      return absl::FailedPreconditionError(absl::StrCat(dir.string(), " is not a directory"));
    }
    return IoError(dir, "", "open", errno);
  }
  ScopedFd lock_fd(
      ::openat(dir_fd.get(), kLockName, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (lock_fd.get() < 0) return IoError(dir, kLockName, "open", errno);
  if (::flock(lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat("state directory ", dir.string(),
                                                        " is in use by another xlstmd (", kLockName,
                                                        " is locked): stop that daemon or use another "
                                                        "state directory"));
    }
    return IoError(dir, kLockName, "flock", errno);
  }
  const std::string qname(kQuarantineDirName);
  if (::mkdirat(dir_fd.get(), qname.c_str(), 0700) != 0 && errno != EEXIST) {
    return IoError(dir, qname, "mkdir", errno);
  }
  ScopedFd q_fd(
      ::openat(dir_fd.get(), qname.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (q_fd.get() < 0) {
    if (errno == ENOTDIR || errno == ELOOP) {
      return absl::FailedPreconditionError(
          absl::StrCat((dir / qname).string(), " is not a directory"));
    }
    return IoError(dir, qname, "open", errno);
  }
  // The quarantine directory's entry (and the lock file's) must survive a crash too.
  if (::fsync(dir_fd.get()) != 0) return IoError(dir, "", "fsync directory", errno);
  std::random_device rd;
  const uint64_t seed = (uint64_t{rd()} << 32) ^ rd() ^ static_cast<uint64_t>(::getpid());
  return std::unique_ptr<SnapshotDir>(new SnapshotDir(dir, std::move(options), dir_fd.release(),
                                                      q_fd.release(), lock_fd.release(), seed));
}

SnapshotDir::SnapshotDir(std::filesystem::path path, Options options, int dir_fd, int quarantine_fd,
                         int lock_fd, uint64_t temp_seed)
    : path_(std::move(path)),
      options_(std::move(options)),
      dir_fd_(dir_fd),
      quarantine_fd_(quarantine_fd),
      lock_fd_(lock_fd),
      temp_seed_(temp_seed) {}

SnapshotDir::~SnapshotDir() {
  ::close(quarantine_fd_);
  ::close(dir_fd_);
  ::close(lock_fd_);  // releases the flock
}

std::filesystem::path SnapshotDir::FilePath(std::string_view session_id) const {
  return path_ / SnapshotName(session_id);
}

absl::Status SnapshotDir::Fault(std::string_view step) const {
  if (!options_.fault_injection_for_test) return absl::OkStatus();
  return options_.fault_injection_for_test(step);
}

absl::Status SnapshotDir::SyncDir(int fd, std::string_view what) const {
  if (::fsync(fd) != 0) return IoError(path_, what, "fsync directory", errno);
  return absl::OkStatus();
}

std::string SnapshotDir::NewTempName(std::string_view session_id) {
  absl::MutexLock lock(&mu_);
  std::string name = absl::StrCat(Av(kTempPrefix), Av(session_id), ".",
                                  absl::Hex(Mix(temp_seed_ + temp_counter_++), absl::kZeroPad16));
  temps_in_flight_.insert(name);
  return name;
}

absl::Status SnapshotDir::WriteTemp(int fd, const std::string& temp,
                                    absl::Span<const std::string_view> pieces,
                                    int64_t* mtime_unix_ms) {
  XLSTMD_RETURN_IF_ERROR(Fault("write"));
  for (std::string_view piece : pieces) XLSTMD_RETURN_IF_ERROR(WriteAll(fd, piece, path_, temp));
  XLSTMD_RETURN_IF_ERROR(Fault("fsync"));
  if (::fsync(fd) != 0) return IoError(path_, temp, "fsync", errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) return IoError(path_, temp, "stat", errno);
  *mtime_unix_ms = MtimeMs(st);
  return absl::OkStatus();
}

absl::Status SnapshotDir::Write(std::string_view session_id, std::string_view bytes) {
  return Write(session_id, absl::MakeConstSpan(&bytes, 1));
}

absl::Status SnapshotDir::Write(std::string_view session_id,
                                absl::Span<const std::string_view> pieces) {
  if (!IsValidSessionId(session_id)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid session id \"", Av(session_id), "\""));
  }
  uint64_t total = 0;
  for (std::string_view p : pieces) {
    if (__builtin_add_overflow(total, p.size(), &total)) total = UINT64_MAX;
  }
  if (total > options_.max_file_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("snapshot of ", total, " bytes exceeds the ",
                                                     options_.max_file_bytes, "-byte file limit"));
  }
  // Everything up to the rename happens on a private temp file, so a crash or an error at any
  // step leaves the previous `<sid>.xss` untouched and only a `.tmp.*` for Scan to delete.
  std::string temp;
  absl::StatusOr<int> raw_fd = CreateTemp(session_id, total, &temp);
  absl::Status s = raw_fd.status();
  ScopedFd fd(raw_fd.ok() ? *raw_fd : -1);
  int64_t mtime_ms = 0;
  if (s.ok()) s = WriteTemp(fd.get(), temp, pieces, &mtime_ms);
  if (s.ok()) s = Fault("close");
  if (s.ok() && fd.Close() != 0) s = IoError(path_, temp, "close", errno);
  if (s.ok()) s = Fault("rename");  // outside mu_: a test hook may call Stats()
  XLSTMD_RETURN_IF_ERROR(RenameTemp(session_id, temp, raw_fd.ok(), total, mtime_ms, s));
  s = Fault("fsync_dir");
  if (s.ok()) s = SyncDir(dir_fd_, "");
  absl::MutexLock lock(&mu_);
  if (!s.ok()) {
    stats_.write_failures += 1;
    return s;
  }
  stats_.writes += 1;
  return absl::OkStatus();
}

absl::StatusOr<int> SnapshotDir::CreateTemp(std::string_view session_id, uint64_t bytes,
                                            std::string* temp) {
  XLSTMD_RETURN_IF_ERROR(Fault("create"));
  for (int attempt = 0; attempt < 16; ++attempt) {
    *temp = NewTempName(session_id);
    const int fd = reserve_.Open([&] {
      return ::openat(dir_fd_, temp->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                      0600);
    });
    const int err = errno;
    absl::MutexLock lock(&mu_);
    if (fd >= 0) {
      stats_.temp_bytes += bytes;
      return fd;
    }
    temps_in_flight_.erase(*temp);
    if (err != EEXIST) return IoError(path_, *temp, "create", err);
  }
  return IoError(path_, *temp, "create", EEXIST);
}

absl::Status SnapshotDir::RenameTemp(std::string_view session_id, const std::string& temp,
                                     bool created, uint64_t bytes, int64_t mtime_unix_ms,
                                     absl::Status status) {
  const std::string final_name = SnapshotName(session_id);
  absl::MutexLock lock(&mu_);
  // Rename and index update under one lock: the index then follows the order in which the
  // directory entry actually changed, even when two writes of a session race.
  if (status.ok() && ::renameat(dir_fd_, temp.c_str(), dir_fd_, final_name.c_str()) != 0) {
    status = IoError(path_, final_name, "rename", errno);
  }
  if (created) {
    stats_.temp_bytes -= bytes;
    temps_in_flight_.erase(temp);
  }
  if (!status.ok()) {
    // Never leave a partial file, and never trust a descriptor whose fsync failed: the caller
    // writes again later through a brand-new temp file.
    if (created) ::unlinkat(dir_fd_, temp.c_str(), 0);
    stats_.write_failures += 1;
    return status;
  }
  SnapshotFileInfo& info = index_[Av(session_id)];
  if (info.session_id.empty()) {
    info.session_id = std::string(session_id);
    stats_.files += 1;
  } else {
    stats_.bytes -= info.bytes;
  }
  info.bytes = bytes;
  info.mtime_unix_ms = mtime_unix_ms;
  stats_.bytes += bytes;
  return absl::OkStatus();
}

absl::StatusOr<std::string> SnapshotDir::Read(std::string_view session_id) {
  if (!IsValidSessionId(session_id)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid session id \"", Av(session_id), "\""));
  }
  const std::string name = SnapshotName(session_id);
  // O_NONBLOCK: opening a FIFO planted under this name must not hang the I/O thread.
  ScopedFd fd(reserve_.Open([&] {
    return ::openat(dir_fd_, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  }));
  if (fd.get() < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat((path_ / name).string(), ": no such snapshot"));
    }
    if (errno == ELOOP) {
      return absl::DataLossError(absl::StrCat((path_ / name).string(), " is a symbolic link"));
    }
    return IoError(path_, name, "open", errno);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return IoError(path_, name, "stat", errno);
  if (!S_ISREG(st.st_mode)) {
    return absl::DataLossError(absl::StrCat((path_ / name).string(), " is not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > options_.max_file_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat((path_ / name).string(), " is ", size,
                                                     " bytes, over the ", options_.max_file_bytes,
                                                     "-byte limit"));
  }
  std::string out;
  out.resize(size);
  size_t got = 0;
  while (got < size) {
    const ssize_t r = ::read(fd.get(), out.data() + got, std::min<size_t>(size - got, 1u << 30));
    if (r < 0) {
      if (errno == EINTR) continue;
      return IoError(path_, name, "read", errno);
    }
    if (r == 0) {
      // Files are replaced by rename, never rewritten in place, so this is outside tampering.
      return absl::DataLossError(absl::StrCat((path_ / name).string(), " shrank to ", got,
                                              " bytes while being read (", size, " expected)"));
    }
    got += static_cast<size_t>(r);
  }
  return out;
}

absl::Status SnapshotDir::Remove(std::string_view session_id) {
  if (!IsValidSessionId(session_id)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid session id \"", Av(session_id), "\""));
  }
  const std::string name = SnapshotName(session_id);
  {
    absl::MutexLock lock(&mu_);
    const int rc = ::unlinkat(dir_fd_, name.c_str(), 0);
    const int err = errno;
    if (rc != 0 && err != ENOENT) return IoError(path_, name, "unlink", err);
    if (auto it = index_.find(Av(session_id)); it != index_.end()) {
      stats_.files -= 1;
      stats_.bytes -= it->second.bytes;
      index_.erase(it);
    }
    if (rc != 0) {
      return absl::NotFoundError(absl::StrCat((path_ / name).string(), ": no such snapshot"));
    }
  }
  return SyncDir(dir_fd_, "");
}

absl::Status SnapshotDir::Quarantine(std::string_view session_id, std::string_view reason,
                                     std::string_view detail) {
  if (!IsValidSessionId(session_id)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid session id \"", Av(session_id), "\""));
  }
  return QuarantineEntry(SnapshotName(session_id), reason, detail);
}

absl::Status SnapshotDir::QuarantineEntry(std::string_view name, std::string_view reason,
                                          std::string_view detail) {
  // One existing component of DIR and nothing else: this is what keeps a hostile name from
  // moving files from elsewhere.
  if (name.empty() || name == "." || name == ".." || name == kQuarantineDirName ||
      name == kLockName || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", Av(name), "\" is not an entry of the state directory"));
  }
  if (!IsValidReason(reason)) {
    return absl::InvalidArgumentError(
        absl::StrCat("quarantine reason \"", Av(reason), "\" must match [a-z0-9_]{1,32}"));
  }
  {
    absl::MutexLock lock(&mu_);
    std::string moved_to;
    XLSTMD_RETURN_IF_ERROR(QuarantineLocked(name, reason, detail, &moved_to));
  }
  XLSTMD_RETURN_IF_ERROR(SyncDir(quarantine_fd_, kQuarantineDirName));
  return SyncDir(dir_fd_, "");
}

absl::Status SnapshotDir::QuarantineLocked(std::string_view name, std::string_view reason,
                                           std::string_view detail, std::string* moved_to) {
  const std::string from(name);
  // Time first so `ls` sorts by age; the counter keeps names unique within a millisecond.
  *moved_to = absl::StrCat(NowUnixMs(), "-",
                           absl::Hex(Mix(temp_seed_ ^ temp_counter_++) & 0xffff, absl::kZeroPad4),
                           ".", Av(reason), ".", SanitizedName(name));
  // RENAME_NOREPLACE: never overwrite an earlier quarantined file.
  if (::renameat2(dir_fd_, from.c_str(), quarantine_fd_, moved_to->c_str(), RENAME_NOREPLACE) !=
      0) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat((path_ / from).string(), ": no such file"));
    }
    return IoError(path_, from, "move to quarantine", err);
  }
  if (std::optional<std::string_view> id = SnapshotNameToId(name)) {
    if (auto it = index_.find(Av(*id)); it != index_.end()) {
      stats_.files -= 1;
      stats_.bytes -= it->second.bytes;
      index_.erase(it);
    }
  }
  stats_.quarantined_by_reason[std::string(reason)] += 1;
  // The sidecar is diagnostics for an operator: best effort, and not fsynced (the moved file's
  // directory entry is what matters, and the caller syncs that).
  const std::string sidecar = absl::StrCat(*moved_to, kSidecarSuffix);
  ScopedFd fd(::openat(quarantine_fd_, sidecar.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd.get() >= 0) {
    const std::string text =
        absl::StrCat("reason: ", Av(reason), "\noriginal name: ", Av(name),
                     "\nquarantined at unix ms: ", NowUnixMs(), "\ndetail: ", Av(detail), "\n");
    (void)WriteAll(fd.get(), text, path_, sidecar);
  }
  return absl::OkStatus();
}

absl::StatusOr<SnapshotScanResult> SnapshotDir::Scan() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> names;
  {
    // fdopendir takes ownership of the descriptor it is given, so give it a duplicate.
    const int fd = ::openat(dir_fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return IoError(path_, "", "open", errno);
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      const int err = errno;
      ::close(fd);
      return IoError(path_, "", "opendir", err);
    }
    errno = 0;
    while (const struct dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    const int err = errno;
    ::closedir(d);
    if (err != 0) return IoError(path_, "", "readdir", err);
  }
  std::sort(names.begin(), names.end());

  SnapshotScanResult result;
  absl::flat_hash_map<std::string, SnapshotFileInfo> index;
  bool changed = false;
  for (const std::string& name : names) {
    if (name == "." || name == ".." || name == kLockName || name == kQuarantineDirName) continue;
    struct stat st;
    if (::fstatat(dir_fd_, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // removed meanwhile
      return IoError(path_, name, "stat", errno);
    }
    if (absl::StartsWith(name, Av(kTempPrefix)) && !S_ISDIR(st.st_mode)) {
      if (temps_in_flight_.contains(name)) continue;  // a Write of this process, not a leftover
      if (::unlinkat(dir_fd_, name.c_str(), 0) != 0 && errno != ENOENT) {
        return IoError(path_, name, "unlink", errno);
      }
      result.temps_removed += 1;
      changed = true;
      continue;
    }
    const std::optional<std::string_view> id = SnapshotNameToId(name);
    if (id && S_ISREG(st.st_mode)) {
      SnapshotFileInfo info{std::string(*id), static_cast<uint64_t>(st.st_size), MtimeMs(st)};
      result.files.push_back(info);
      index.emplace(info.session_id, std::move(info));
      continue;
    }
    std::string moved_to;
    const std::string detail =
        id ? "a snapshot name that is not a regular file"
           : "not a snapshot name (<22-char base64url session id>.xss) nor a temp file";
    XLSTMD_RETURN_IF_ERROR(
        QuarantineLocked(name, id ? "not_regular" : "bad_name", detail, &moved_to));
    result.quarantined += 1;
    changed = true;
  }
  index_ = std::move(index);
  stats_.files = static_cast<int64_t>(index_.size());
  stats_.bytes = 0;
  for (const auto& [sid, info] : index_) stats_.bytes += info.bytes;
  stats_.temps_removed += result.temps_removed;
  if (changed) {
    XLSTMD_RETURN_IF_ERROR(SyncDir(quarantine_fd_, kQuarantineDirName));
    XLSTMD_RETURN_IF_ERROR(SyncDir(dir_fd_, ""));
  }
  return result;
}

std::optional<SnapshotFileInfo> SnapshotDir::Find(std::string_view session_id) const {
  absl::MutexLock lock(&mu_);
  auto it = index_.find(Av(session_id));
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

std::vector<SnapshotFileInfo> SnapshotDir::List() const {
  std::vector<SnapshotFileInfo> out;
  {
    absl::MutexLock lock(&mu_);
    out.reserve(index_.size());
    for (const auto& [sid, info] : index_) out.push_back(info);
  }
  std::sort(out.begin(), out.end(), [](const SnapshotFileInfo& a, const SnapshotFileInfo& b) {
    return a.session_id < b.session_id;
  });
  return out;
}

SnapshotDirStats SnapshotDir::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace xlstmd::core
