// SnapshotDir: the write protocol leaves no temp file and never a half snapshot (injected I/O
// failures at every step, and a real process crash between write and rename), Scan's startup
// recovery, quarantine, id validation (no path escapes DIR), the size cap, byte accounting,
// the directory lock and concurrent writers.
#include "core/state/snapshot_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/state/snapshot.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/model_files_testutil.h"
#include "tests/state/snapshot_testutil.h"
#include "tests/testing/status_matchers.h"

namespace xlstmd::core {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::xlstmd::testing::Fingerprint;
using ::xlstmd::testing::IsOk;
using ::xlstmd::testing::Layout;
using ::xlstmd::testing::RandomState;
using ::xlstmd::testing::ReadFile;
using ::xlstmd::testing::SampleMeta;
using ::xlstmd::testing::ScopedTempDir;
using ::xlstmd::testing::StatusIs;
using ::xlstmd::testing::WriteFile;

constexpr char kSid[] = "AbCdEfGhIjKlMnOpQr_-0w";
constexpr char kSid2[] = "zzzzzzzzzzzzzzzzzzzzzA";

// Names in `dir`, sorted, without the lock file and the quarantine directory.
std::vector<std::string> Entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n != ".lock" && n != "quarantine") names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> QuarantineEntries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(dir / "quarantine")) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class SnapshotDirTest : public ::testing::Test {
 protected:
  fs::path dir() const { return tmp_.path() / "state"; }
  std::unique_ptr<SnapshotDir> OpenDir(SnapshotDir::Options options = {}) {
    absl::StatusOr<std::unique_ptr<SnapshotDir>> d = SnapshotDir::Open(dir(), std::move(options));
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? std::move(*d) : nullptr;
  }
  ScopedTempDir tmp_;
};

TEST_F(SnapshotDirTest, OpenCreatesPrivateDirectories) {
  const fs::path nested = tmp_.path() / "a" / "b" / "state";
  absl::StatusOr<std::unique_ptr<SnapshotDir>> d = SnapshotDir::Open(nested, {});
  ASSERT_TRUE(d.ok()) << d.status();
  struct stat st;
  ASSERT_EQ(::stat(nested.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((nested / "quarantine").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  WriteFile(tmp_.path() / "plainfile", "x");
  EXPECT_THAT(SnapshotDir::Open(tmp_.path() / "plainfile", {}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a directory")));
}

TEST_F(SnapshotDirTest, TheDirectoryIsLockedAgainstASecondUser) {
  std::unique_ptr<SnapshotDir> first = OpenDir();
  EXPECT_THAT(SnapshotDir::Open(dir(), {}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("in use")));
  first.reset();
  EXPECT_NE(OpenDir(), nullptr);
}

TEST_F(SnapshotDirTest, WriteIsAtomicAndLeavesNoTempFile) {
  std::unique_ptr<SnapshotDir> d = OpenDir();
  ASSERT_THAT(d->Write(kSid, "first version"), IsOk());
  ASSERT_THAT(d->Write(kSid, "second, longer version"), IsOk());
  EXPECT_THAT(Entries(dir()), ElementsAre(std::string(kSid) + ".xss"));
  EXPECT_EQ(ReadFile(d->FilePath(kSid)), "second, longer version");
  struct stat st;
  ASSERT_EQ(::stat(d->FilePath(kSid).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  absl::StatusOr<std::string> r = d->Read(kSid);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "second, longer version");
  const SnapshotDirStats stats = d->Stats();
  EXPECT_EQ(stats.files, 1);
  EXPECT_EQ(stats.bytes, 22u);
  EXPECT_EQ(stats.temp_bytes, 0u);
  EXPECT_EQ(stats.writes, 2);
  ASSERT_TRUE(d->Find(kSid).has_value());
  EXPECT_EQ(d->Find(kSid)->bytes, 22u);
  EXPECT_GT(d->Find(kSid)->mtime_unix_ms, 0);
}

// With every descriptor under the open-file limit taken (idle connections, in production),
// a snapshot is still written and read: the store gives back one of its reserved
// descriptors for it (base/descriptor_reserve.h).
TEST_F(SnapshotDirTest, WritesAndReadsSurviveDescriptorExhaustion) {
  std::unique_ptr<SnapshotDir> d = OpenDir();
  std::vector<int> hog;
  while (true) {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    hog.push_back(fd);
    ASSERT_LT(hog.size(), 1u << 20) << "no open-file limit to exhaust";
  }
  ASSERT_EQ(errno, EMFILE);
  const absl::Status written = d->Write(kSid, "committed while out of descriptors");
  absl::StatusOr<std::string> read = d->Read(kSid);
  for (int fd : hog) ::close(fd);
  ASSERT_THAT(written, IsOk());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, "committed while out of descriptors");
  // The reserve refills once descriptors are free again.
  ASSERT_THAT(d->Write(kSid, "again"), IsOk());
}

TEST_F(SnapshotDirTest, WritesPiecesAndRoundTripsASnapshot) {
  std::unique_ptr<SnapshotDir> d = OpenDir();
  const StateLayout layout = Layout(2, 3, 5, 7);
  const StateFingerprint fp = Fingerprint(layout);
  const std::vector<float> state = RandomState(layout, 9);
  absl::StatusOr<SnapshotParts> parts = EncodeSnapshotParts(SampleMeta(), fp, layout, state);
  ASSERT_TRUE(parts.ok()) << parts.status();
  const std::string_view payload(reinterpret_cast<const char*>(parts->payload.data()),
                                 parts->payload.size() * sizeof(float));
  const std::string_view pieces[] = {parts->head, payload, parts->tail};
  ASSERT_THAT(d->Write(kSid, pieces), IsOk());
  EXPECT_EQ(d->Stats().bytes, parts->total_bytes());

  absl::StatusOr<std::string> bytes = d->Read(kSid);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<DecodedSnapshot> decoded = DecodeSnapshot(*bytes, fp, layout);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->meta, SampleMeta());
  EXPECT_EQ(std::memcmp(decoded->state.data(), state.data(), state.size() * 4), 0);
}

TEST_F(SnapshotDirTest, RemoveDeletesAndUpdatesAccounting) {
  std::unique_ptr<SnapshotDir> d = OpenDir();
  ASSERT_THAT(d->Write(kSid, "aaaa"), IsOk());
  ASSERT_THAT(d->Write(kSid2, "bbbbbbbb"), IsOk());
  EXPECT_EQ(d->Stats().bytes, 12u);
  ASSERT_THAT(d->Remove(kSid), IsOk());
  EXPECT_THAT(d->Remove(kSid), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(d->Read(kSid), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(d->Find(kSid).has_value());
  EXPECT_EQ(d->Stats().files, 1);
  EXPECT_EQ(d->Stats().bytes, 8u);
  EXPECT_THAT(Entries(dir()), ElementsAre(std::string(kSid2) + ".xss"));
}

TEST_F(SnapshotDirTest, BadSessionIdsNeverReachTheFileSystem) {
  std::unique_ptr<SnapshotDir> d = OpenDir();
  WriteFile(tmp_.path() / "victim.xss", "outside");
  const std::string bad[] = {"",
                             "../victim",
                             "../../../../etc/passwd",
                             "AbCdEfGhIjKlMnOpQr_-0",    // 21 chars
                             "AbCdEfGhIjKlMnOpQr_-0wX",  // 23 chars
                             "AbCdEfGhIjKlMnOpQr/-0w",
                             "AbCdEfGhIjKlMnOpQr+-0w",
                             "AbCdEfGhIjKlMnOpQr.-0w",
                             std::string("AbCdEfGhIjKlMnOpQr\0-0w", 22),
                             "....................ab"};
  for (const std::string& id : bad) {
    EXPECT_FALSE(SnapshotDir::IsValidSessionId(id)) << id;
    EXPECT_THAT(d->Write(id, "x"), StatusIs(absl::StatusCode::kInvalidArgument)) << id;
    EXPECT_THAT(d->Read(id), StatusIs(absl::StatusCode::kInvalidArgument)) << id;
    EXPECT_THAT(d->Remove(id), StatusIs(absl::StatusCode::kInvalidArgument)) << id;
    EXPECT_THAT(d->Quarantine(id, "checksum", ""), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  for (const char* name : {"", ".", "..", "quarantine", ".lock", "../victim.xss", "a/b"}) {
    EXPECT_THAT(d->QuarantineEntry(name, "bad_name", ""),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << name;
  }
  EXPECT_TRUE(SnapshotDir::IsValidSessionId(kSid));
  EXPECT_EQ(ReadFile(tmp_.path() / "victim.xss"), "outside");
  EXPECT_THAT(Entries(dir()), ElementsAre());
}

TEST_F(SnapshotDirTest, SizeCapIsEnforcedBeforeReading) {
  SnapshotDir::Options options;
  options.max_file_bytes = 100;
  std::unique_ptr<SnapshotDir> d = OpenDir(options);
  EXPECT_THAT(d->Write(kSid, std::string(101, 'x')),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("101")));
  EXPECT_THAT(Entries(dir()), ElementsAre());
  ASSERT_THAT(d->Write(kSid, std::string(100, 'x')), IsOk());
  // A file that grew on disk behind our back.
  WriteFile(d->FilePath(kSid2), std::string(1 << 20, 'y'));
  EXPECT_THAT(d->Read(kSid2),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("over the 100-byte limit")));
}

TEST_F(SnapshotDirTest, ReadRefusesNonRegularFiles) {
  std::unique_ptr<SnapshotDir> d = OpenDir();
  WriteFile(tmp_.path() / "target", "secret");
  ASSERT_EQ(::symlink((tmp_.path() / "target").c_str(), d->FilePath(kSid).c_str()), 0);
  EXPECT_THAT(d->Read(kSid), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("symbolic link")));
  ASSERT_EQ(::mkfifo(d->FilePath(kSid2).c_str(), 0600), 0);
  EXPECT_THAT(d->Read(kSid2), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("regular file")));
}

TEST_F(SnapshotDirTest, ScanRecoversTheDirectory) {
  {
    std::unique_ptr<SnapshotDir> d = OpenDir();
    ASSERT_THAT(d->Write(kSid, "good one"), IsOk());
    ASSERT_THAT(d->Write(kSid2, "good two!"), IsOk());
  }
  // What crashes and strangers leave behind.
  WriteFile(dir() / (std::string(".tmp.") + kSid + ".0123456789abcdef"), "half a snap");
  WriteFile(dir() / ".tmp.garbage", "");
  WriteFile(dir() / "notes.txt", "hello");
  WriteFile(dir() / "short.xss", "bad id");
  WriteFile(dir() / (std::string(kSid) + ".xss.bak"), "backup");
  fs::create_directory(dir() / "somedir");
  const std::string sid3 = "BBBBBBBBBBBBBBBBBBBBBA";
  WriteFile(tmp_.path() / "target", "not ours");
  ASSERT_EQ(::symlink((tmp_.path() / "target").c_str(), (dir() / (sid3 + ".xss")).c_str()), 0);

  std::unique_ptr<SnapshotDir> d = OpenDir();
  absl::StatusOr<SnapshotScanResult> scan = d->Scan();
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_EQ(scan->temps_removed, 2);
  EXPECT_EQ(scan->quarantined, 5);
  ASSERT_EQ(scan->files.size(), 2u);
  EXPECT_EQ(scan->files[0].session_id, kSid);
  EXPECT_EQ(scan->files[0].bytes, 8u);
  EXPECT_EQ(scan->files[1].session_id, kSid2);
  EXPECT_EQ(scan->files[1].bytes, 9u);
  EXPECT_THAT(Entries(dir()), ElementsAre(std::string(kSid) + ".xss", std::string(kSid2) + ".xss"));

  const SnapshotDirStats stats = d->Stats();
  EXPECT_EQ(stats.files, 2);
  EXPECT_EQ(stats.bytes, 17u);
  EXPECT_EQ(stats.temps_removed, 2);
  EXPECT_EQ(stats.quarantined_by_reason.at("bad_name"), 4);
  EXPECT_EQ(stats.quarantined_by_reason.at("not_regular"), 1);
  // Five moved entries, each with a sidecar saying why.
  const std::vector<std::string> q = QuarantineEntries(dir());
  EXPECT_EQ(q.size(), 10u);
  int sidecars = 0;
  for (const std::string& name : q) {
    if (name.ends_with(".why")) {
      ++sidecars;
      EXPECT_THAT(ReadFile(dir() / "quarantine" / name), HasSubstr("reason: "));
    }
  }
  EXPECT_EQ(sidecars, 5);
  EXPECT_EQ(ReadFile(tmp_.path() / "target"), "not ours") << "a symlink's target is untouched";
}

TEST_F(SnapshotDirTest, QuarantineMovesTheFileAndCountsIt) {
  std::unique_ptr<SnapshotDir> d = OpenDir();
  ASSERT_THAT(d->Write(kSid, "corrupt bytes"), IsOk());
  const absl::Status why = absl::DataLossError("snapshot section 4 (block 1 n) checksum mismatch");
  ASSERT_THAT(d->Quarantine(kSid, "checksum", std::string(why.message())), IsOk());
  EXPECT_THAT(Entries(dir()), ElementsAre());
  EXPECT_FALSE(d->Find(kSid).has_value());
  EXPECT_EQ(d->Stats().bytes, 0u);
  EXPECT_EQ(d->Stats().quarantined_by_reason.at("checksum"), 1);
  const std::vector<std::string> q = QuarantineEntries(dir());
  ASSERT_EQ(q.size(), 2u);
  EXPECT_THAT(q[0], HasSubstr(std::string(".checksum.") + kSid + ".xss"));
  EXPECT_EQ(ReadFile(dir() / "quarantine" / q[0]), "corrupt bytes");
  EXPECT_THAT(ReadFile(dir() / "quarantine" / q[1]),
              HasSubstr("detail: snapshot section 4 (block 1 n) checksum mismatch"));

  EXPECT_THAT(d->Quarantine(kSid, "checksum", ""), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(d->Write(kSid, "again"), IsOk());
  EXPECT_THAT(d->Quarantine(kSid, "Bad Reason!", ""), StatusIs(absl::StatusCode::kInvalidArgument));
  // The same session quarantined twice keeps both copies.
  ASSERT_THAT(d->Quarantine(kSid, "checksum", ""), IsOk());
  EXPECT_EQ(QuarantineEntries(dir()).size(), 4u);
  EXPECT_EQ(d->Stats().quarantined_by_reason.at("checksum"), 2);
}

TEST_F(SnapshotDirTest, DecodeFailureToQuarantineFlow) {
  std::unique_ptr<SnapshotDir> d = OpenDir();
  const StateLayout layout = Layout(1, 2, 4, 4);
  const StateFingerprint fp = Fingerprint(layout);
  std::string bytes = *EncodeSnapshot(SampleMeta(), fp, layout, RandomState(layout, 1));
  bytes[bytes.size() - 40] ^= 1;  // inside the last section
  ASSERT_THAT(d->Write(kSid, bytes), IsOk());
  const absl::Status s = DecodeSnapshot(*d->Read(kSid), fp, layout).status();
  ASSERT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
  ASSERT_THAT(d->Quarantine(kSid, SnapshotErrorReason(s), std::string(s.message())), IsOk());
  EXPECT_EQ(d->Stats().quarantined_by_reason.at("checksum"), 1);
}

// An I/O failure at any step of a write keeps the previous snapshot and leaves no temp file.
TEST_F(SnapshotDirTest, FailureAtAnyStepKeepsTheOldFileAndNoTemp) {
  for (const char* step : {"create", "write", "fsync", "close", "rename"}) {
    SCOPED_TRACE(step);
    {
      std::unique_ptr<SnapshotDir> setup = OpenDir();
      ASSERT_THAT(setup->Write(kSid, "old version"), IsOk());
    }
    SnapshotDir::Options options;
    options.fault_injection_for_test = [step](std::string_view s) {
      return s == step ? absl::UnavailableError(absl::StrCat("injected EIO at ", step))
                       : absl::OkStatus();
    };
    std::unique_ptr<SnapshotDir> d = OpenDir(options);
    ASSERT_TRUE(d->Scan().ok());
    EXPECT_THAT(d->Write(kSid, "new version that must not appear"),
                StatusIs(absl::StatusCode::kUnavailable, HasSubstr(step)));
    EXPECT_THAT(Entries(dir()), ElementsAre(std::string(kSid) + ".xss"));
    EXPECT_EQ(*d->Read(kSid), "old version");
    const SnapshotDirStats stats = d->Stats();
    EXPECT_EQ(stats.write_failures, 1);
    EXPECT_EQ(stats.temp_bytes, 0u);
    EXPECT_EQ(stats.bytes, 11u);
  }
  // A failed directory fsync: the new file is in place but the write is reported failed, so
  // the caller does not treat it as durable.
  SnapshotDir::Options options;
  options.fault_injection_for_test = [](std::string_view s) {
    return s == "fsync_dir" ? absl::UnavailableError("injected EIO") : absl::OkStatus();
  };
  std::unique_ptr<SnapshotDir> d = OpenDir(options);
  EXPECT_THAT(d->Write(kSid, "newer"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(d->Stats().write_failures, 1);
  EXPECT_THAT(Entries(dir()), ElementsAre(std::string(kSid) + ".xss"));
}

// A real crash: a child process dies (no destructors, no cleanup) at a step of the protocol.
// After a "restart" (a fresh SnapshotDir and Scan) the snapshot is the old one, whole, and
// the leftover temp file is gone. Never a half snapshot.
TEST_F(SnapshotDirTest, CrashBeforeRenameNeverYieldsAHalfSnapshot) {
  const StateLayout layout = Layout(2, 2, 8, 8);
  const StateFingerprint fp = Fingerprint(layout);
  const std::string v1 = *EncodeSnapshot(SampleMeta(), fp, layout, RandomState(layout, 1));
  SnapshotMeta meta2 = SampleMeta();
  meta2.version = 43;
  const std::string v2 = *EncodeSnapshot(meta2, fp, layout, RandomState(layout, 2));

  for (const char* crash_at : {"write", "fsync", "close", "rename"}) {
    SCOPED_TRACE(crash_at);
    const pid_t parent = ::getpid();
    SnapshotDir::Options options;
    options.fault_injection_for_test = [crash_at, parent](std::string_view s) {
      if (s == crash_at && ::getpid() != parent) ::_exit(0);
      return absl::OkStatus();
    };
    std::unique_ptr<SnapshotDir> d = OpenDir(options);
    ASSERT_THAT(d->Write(kSid, v1), IsOk());
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      (void)d->Write(kSid, v2);
      ::_exit(1);  // the hook exits with 0 first; reaching here means it never fired
    }
    int wstatus = 0;
    ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
    ASSERT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    // The crash left its temp file beside the old snapshot.
    EXPECT_EQ(Entries(dir()).size(), 2u);

    d.reset();  // restart
    d = OpenDir();
    absl::StatusOr<SnapshotScanResult> scan = d->Scan();
    ASSERT_TRUE(scan.ok()) << scan.status();
    EXPECT_EQ(scan->temps_removed, 1);
    EXPECT_THAT(Entries(dir()), ElementsAre(std::string(kSid) + ".xss"));
    absl::StatusOr<std::string> bytes = d->Read(kSid);
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(*bytes, v1);
    absl::StatusOr<DecodedSnapshot> decoded = DecodeSnapshot(*bytes, fp, layout);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->meta.version, 42u);
    d.reset();
    fs::remove_all(dir());
  }
}

TEST_F(SnapshotDirTest, ScanKeepsThisProcesssInFlightTemps) {
  std::unique_ptr<SnapshotDir> d;
  SnapshotDir* raw = nullptr;
  absl::StatusOr<SnapshotScanResult> scan_during_write;
  SnapshotDir::Options options;
  options.fault_injection_for_test = [&](std::string_view s) {
    if (s == "close") scan_during_write = raw->Scan();
    return absl::OkStatus();
  };
  d = OpenDir(options);
  raw = d.get();
  ASSERT_THAT(d->Write(kSid, "payload"), IsOk());
  ASSERT_TRUE(scan_during_write.ok()) << scan_during_write.status();
  EXPECT_EQ(scan_during_write->temps_removed, 0);
  EXPECT_EQ(*d->Read(kSid), "payload");
}

TEST_F(SnapshotDirTest, ConcurrentWritersKeepAccountingExact) {
  std::unique_ptr<SnapshotDir> d = OpenDir();
  const std::vector<std::string> ids = {"AAAAAAAAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBBBBBBBB",
                                        "CCCCCCCCCCCCCCCCCCCCCC"};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        const std::string& id = ids[(t + i) % ids.size()];
        EXPECT_THAT(d->Write(id, std::string(10 + t * 8 + i, 'a' + t)), IsOk());
        if (i % 3 == 2) (void)d->Remove(id);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  uint64_t on_disk = 0;
  int64_t files = 0;
  for (const std::string& name : Entries(dir())) {
    ASSERT_TRUE(name.ends_with(".xss")) << "leftover " << name;
    on_disk += fs::file_size(dir() / name);
    ++files;
    const std::string id = name.substr(0, name.size() - 4);
    ASSERT_TRUE(d->Find(id).has_value());
    EXPECT_EQ(d->Find(id)->bytes, fs::file_size(dir() / name));
  }
  EXPECT_EQ(d->Stats().bytes, on_disk);
  EXPECT_EQ(d->Stats().files, files);
  EXPECT_EQ(d->Stats().writes, 32);
  EXPECT_EQ(d->List().size(), static_cast<size_t>(files));
}

}  // namespace
}  // namespace xlstmd::core
