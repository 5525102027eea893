// SnapshotDir: the disk tier's files. One snapshot per session, `DIR/<session_id>.xss`, written
// crash-safely (temp file, fsync, rename, directory fsync), read with a size cap, removed, or
// moved to `DIR/quarantine/` with a reason. It stores opaque bytes: validating them is the
// caller's job (snapshot.h), and so is deciding to quarantine what fails validation.
//
// Guarantees: a reader never sees a half-written `<sid>.xss` (the file name only ever points
// at a complete, fsynced file); after a crash, Scan() removes leftover temp files; a file name
// is only ever built from a validated session id (22 chars of base64url), so no id can reach
// outside DIR. An exclusive lock on DIR/.lock keeps a second process from using the same
// directory (its Scan would delete our in-flight temp files).
//
// Thread-safe: the engine's I/O pool calls every method from several threads. Writes of
// different sessions run in parallel; only the rename and index update are serialized, so the
// index and byte accounting always match the directory. Two concurrent writes of one session
// are both safe, and the last rename wins: callers order a session's writes by version.
#ifndef XLSTMD_CORE_STATE_SNAPSHOT_STORE_H_
#define XLSTMD_CORE_STATE_SNAPSHOT_STORE_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/base/descriptor_reserve.h"
#include "absl/types/span.h"

namespace xlstmd::core {

// One snapshot file as listed by Scan() or after a Write (the bytes are not read).
struct SnapshotFileInfo {
  std::string session_id;
  uint64_t bytes = 0;
  int64_t mtime_unix_ms = 0;
};

struct SnapshotScanResult {
  std::vector<SnapshotFileInfo> files;  // sorted by session id
  int64_t temps_removed = 0;            // leftovers of writes a crash interrupted
  int64_t quarantined = 0;              // entries whose names are not `<valid id>.xss` files
};

// Counters for the metrics layer; a consistent copy.
struct SnapshotDirStats {
  int64_t files = 0;        // live `<sid>.xss` files
  uint64_t bytes = 0;       // their total size: what a disk budget is enforced against
  uint64_t temp_bytes = 0;  // in-flight writes (temp files not yet renamed)
  int64_t writes = 0;       // successful Writes
  int64_t write_failures = 0;
  int64_t temps_removed = 0;
  std::map<std::string, int64_t> quarantined_by_reason;  // xlstmd_snapshot_corrupt_total{reason}
};

class SnapshotDir {
 public:
  struct Options {
    // Largest file Write accepts and Read loads (RESOURCE_EXHAUSTED above it). Set it to
    // MaxSnapshotBytes(layout) of the loaded model.
    uint64_t max_file_bytes = uint64_t{1} << 30;
    // Testing only: called before each step of Write ("create", "write", "fsync", "close",
    // "rename", "fsync_dir"); a non-OK return makes that step fail with this status, as an
    // I/O error would. Lets tests prove that no failure leaves a partial file behind.
    std::function<absl::Status(std::string_view step)> fault_injection_for_test;
  };

  // Opens (creating it, mode 0700, if missing) the state directory and its quarantine/
  // subdirectory and locks it. FAILED_PRECONDITION if another process holds the lock or the
  // path is not a directory. Does not look at the files: call Scan() once at startup.
  static absl::StatusOr<std::unique_ptr<SnapshotDir>> Open(const std::filesystem::path& dir,
                                                           Options options);
  ~SnapshotDir();
  SnapshotDir(const SnapshotDir&) = delete;
  SnapshotDir& operator=(const SnapshotDir&) = delete;

  // 22 characters of unpadded base64url, as the engine's session ids are.
  static bool IsValidSessionId(std::string_view id);

  // Startup recovery: deletes `.tmp.*` leftovers (not this process's in-flight ones), lists
  // `<sid>.xss` files without reading them, quarantines entries with invalid names (reason
  // "bad_name") or that are not regular files ("not_regular"), and rebuilds the index.
  absl::StatusOr<SnapshotScanResult> Scan();

  // Atomically replaces `<sid>.xss` with the concatenation of `pieces` (e.g. SnapshotParts:
  // head, payload, tail). OK means durable: the data and the directory entry are fsynced. On
  // any error no temp file is left and the old file, if any, is intact, except when only the
  // final directory fsync failed: the new file is then in place but not known to be durable,
  // and the caller must treat the write as failed and write again later (a new temp file;
  // a failed fsync is never retried on the same descriptor). INVALID_ARGUMENT for a bad id,
  // RESOURCE_EXHAUSTED over max_file_bytes, other codes from the failing system call.
  absl::Status Write(std::string_view session_id, absl::Span<const std::string_view> pieces);
  absl::Status Write(std::string_view session_id, std::string_view bytes);

  // The whole file. NOT_FOUND if absent, RESOURCE_EXHAUSTED over max_file_bytes (checked with
  // fstat before anything is read), DATA_LOSS if it is not a regular file or shrank meanwhile.
  absl::StatusOr<std::string> Read(std::string_view session_id);

  // Deletes `<sid>.xss` durably (a removed session must not come back after a crash).
  // NOT_FOUND if there is none.
  absl::Status Remove(std::string_view session_id);

  // Moves `<sid>.xss` to quarantine/ (reason: a metric label, [a-z0-9_]{1,32}, e.g.
  // SnapshotErrorReason(status); detail: free text such as the status message, kept in a
  // sidecar file), drops it from the index and counts it. NOT_FOUND if there is none.
  absl::Status Quarantine(std::string_view session_id, std::string_view reason,
                          std::string_view detail);
  // Same for any entry of DIR by name (one path component, never "." or ".." or the
  // quarantine directory itself), e.g. a file whose name is not a session id.
  absl::Status QuarantineEntry(std::string_view name, std::string_view reason,
                               std::string_view detail);

  // Index lookups (no I/O).
  std::optional<SnapshotFileInfo> Find(std::string_view session_id) const;
  std::vector<SnapshotFileInfo> List() const;
  SnapshotDirStats Stats() const;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path FilePath(std::string_view session_id) const;  // no validation
  static constexpr std::string_view kQuarantineDirName = "quarantine";
  static constexpr std::string_view kSuffix = ".xss";
  static constexpr std::string_view kTempPrefix = ".tmp.";

 private:
  SnapshotDir(std::filesystem::path path, Options options, int dir_fd, int quarantine_fd,
              int lock_fd, uint64_t temp_seed);
  absl::Status Fault(std::string_view step) const;
  std::string NewTempName(std::string_view session_id);
  // Creates and registers an in-flight temp file; returns its descriptor.
  absl::StatusOr<int> CreateTemp(std::string_view session_id, uint64_t bytes, std::string* temp);
  // Moves a finished temp file into place when `status` is OK (else removes it) and updates
  // the index and counters.
  absl::Status RenameTemp(std::string_view session_id, const std::string& temp, bool created,
                          uint64_t bytes, int64_t mtime_unix_ms, absl::Status status);
  absl::Status WriteTemp(int fd, const std::string& temp, absl::Span<const std::string_view> pieces,
                         int64_t* mtime_unix_ms);
  absl::Status QuarantineLocked(std::string_view name, std::string_view reason,
                                std::string_view detail, std::string* moved_to)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SyncDir(int fd, std::string_view what) const;

  const std::filesystem::path path_;
  const Options options_;
  const int dir_fd_;  // all file operations are *at() calls relative to these
  const int quarantine_fd_;
  const int lock_fd_;
  const uint64_t temp_seed_;  // makes temp names of different runs differ
  // Snapshot files open through it: a commit must not fail because connections took every
  // descriptor (base/descriptor_reserve.h).
  mutable base::DescriptorReserve reserve_{4};

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, SnapshotFileInfo> index_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> temps_in_flight_ ABSL_GUARDED_BY(mu_);
  uint64_t temp_counter_ ABSL_GUARDED_BY(mu_) = 0;
  SnapshotDirStats stats_ ABSL_GUARDED_BY(mu_);  // files/bytes kept in step with index_
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_STATE_SNAPSHOT_STORE_H_
