// ExportSession / ImportSession and the drain's flush to the disk tier, with the server
// in-process on 127.0.0.1:0 and the golden model, through the generated C++ stubs (the
// server registers these methods raw; this checks the typed client agrees with it).
// tests/e2e/test_export_import.py and test_persistence.py cover the real binary.
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "server/convert.h"
#include "server/server.h"
#include "server/snapshot_reactors.h"
#include "tests/testing/golden.h"
#include "tests/testing/status_matchers.h"
#include "xlstmd/v1/chat.grpc.pb.h"

namespace xlstmd::server {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using xlstmd::testing::StatusIs;

constexpr char kGoldenModel[] = "xlstm-large-a1";

ServerOptions TestOptions() {
  ServerOptions o = DefaultServerOptions();
  o.listen = "127.0.0.1:0";
  o.weight_dtype = "f32";
  o.threads = 1;
  o.slots = 4;
  o.max_batch = 4;
  return o;
}

void Deadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
}

// A fresh directory under the system temp dir, removed with the fixture.
std::string MakeTempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "xlstmd-snaprpc-XXXXXX").string();
  const char* dir = mkdtemp(tmpl.data());
  return dir == nullptr ? "" : std::string(dir);
}

class SnapshotRpcTest : public ::testing::Test {
 protected:
  void TearDown() override {
    server_.reset();
    std::error_code ec;
    for (const std::string& d : dirs_) std::filesystem::remove_all(d, ec);
  }

  void Start(ServerOptions options = TestOptions()) {
    server_.reset();
    absl::StatusOr<std::unique_ptr<Server>> s = Server::Start(options, Authenticator());
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    absl::StatusOr<LoadedModel> m = LoadModel(options, xlstmd::testing::GoldenDir(kGoldenModel));
    ASSERT_TRUE(m.ok()) << m.status();
    server_->Serve(*std::move(m));
    channel_ = grpc::CreateChannel(server_->listen_address(), grpc::InsecureChannelCredentials());
    chat_ = v1::ChatService::NewStub(channel_);
  }

  std::string TempDir() {
    dirs_.push_back(MakeTempDir());
    return dirs_.back();
  }

  std::string NewSession() {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    v1::Session out;
    EXPECT_TRUE(chat_->CreateSession(&ctx, v1::CreateSessionRequest(), &out).ok());
    return out.session_id();
  }

  // Runs a greedy raw-token turn; returns the generated ids (empty on error).
  std::vector<int32_t> Turn(const std::string& id, const std::vector<int32_t>& ids, int n) {
    v1::ChatRequest req;
    req.set_session_id(id);
    for (int32_t t : ids) req.mutable_tokens()->add_ids(t);
    req.mutable_sampling()->set_max_tokens(n);
    grpc::ClientContext ctx;
    Deadline(&ctx);
    auto reader = chat_->Chat(&ctx, req);
    std::vector<int32_t> out;
    v1::ChatEvent e;
    while (reader->Read(&e)) {
      if (e.has_delta())
        out.insert(out.end(), e.delta().token_ids().begin(), e.delta().token_ids().end());
    }
    const grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  absl::StatusOr<std::vector<v1::SnapshotChunk>> Export(const std::string& id) {
    v1::ExportSessionRequest req;
    req.set_session_id(id);
    grpc::ClientContext ctx;
    Deadline(&ctx);
    auto reader = chat_->ExportSession(&ctx, req);
    std::vector<v1::SnapshotChunk> chunks;
    v1::SnapshotChunk c;
    while (reader->Read(&c)) chunks.push_back(c);
    const grpc::Status s = reader->Finish();
    if (!s.ok()) return FromGrpcStatus(s);
    return chunks;
  }

  absl::StatusOr<v1::Session> Import(const std::vector<v1::SnapshotChunk>& chunks) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    v1::Session out;
    auto writer = chat_->ImportSession(&ctx, &out);
    for (const v1::SnapshotChunk& c : chunks) {
      if (!writer->Write(c)) break;  // the server ended the call early
    }
    writer->WritesDone();
    const grpc::Status s = writer->Finish();
    if (!s.ok()) return FromGrpcStatus(s);
    return out;
  }

  // Snapshot bytes in flight once they reach `want` (a call's bytes go back when its reactor
  // goes, just after the client saw the status), or what they are after 2 s.
  uint64_t WaitInFlight(uint64_t want) {
    for (int i = 0; i < 1000 && server_->snapshot_bytes_in_flight() != want; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return server_->snapshot_bytes_in_flight();
  }

  // An import of `bytes` held open after its first half: it holds the declared size from
  // its first chunk on. Finish() sends the rest.
  class HeldImport {
   public:
    HeldImport(v1::ChatService::Stub* chat, std::string bytes) : bytes_(std::move(bytes)) {
      Deadline(&ctx_);
      writer_ = chat->ImportSession(&ctx_, &out_);
      v1::SnapshotChunk first;
      first.set_data(bytes_.substr(0, bytes_.size() / 2));
      first.set_total_bytes(bytes_.size());
      started_ = writer_->Write(first);
    }
    bool started() const { return started_; }
    grpc::Status Finish() {
      v1::SnapshotChunk rest;
      rest.set_data(bytes_.substr(bytes_.size() / 2));
      if (!writer_->Write(rest)) return grpc::Status(grpc::StatusCode::UNKNOWN, "write failed");
      writer_->WritesDone();
      return writer_->Finish();
    }

   private:
    std::string bytes_;
    grpc::ClientContext ctx_;
    v1::Session out_;
    std::unique_ptr<grpc::ClientWriter<v1::SnapshotChunk>> writer_;
    bool started_ = false;
  };

  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ChatService::Stub> chat_;
  std::vector<std::string> dirs_;
};

TEST_F(SnapshotRpcTest, ExportThenImportContinuesLikeTheOriginal) {
  Start();
  const std::string a = NewSession();
  Turn(a, {155, 60, 131, 158}, 6);
  absl::StatusOr<std::vector<v1::SnapshotChunk>> chunks = Export(a);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  ASSERT_EQ(chunks->size(), 1u);  // a 17 KB state
  EXPECT_EQ((*chunks)[0].total_bytes(), (*chunks)[0].data().size());
  EXPECT_LE((*chunks)[0].data().size(), kSnapshotChunkBytes);

  // Re-chunked small, as a client may: the server only concatenates.
  const std::string bytes = (*chunks)[0].data();
  std::vector<v1::SnapshotChunk> small;
  for (size_t off = 0; off < bytes.size(); off += 1000) {
    small.emplace_back().set_data(bytes.substr(off, 1000));
  }
  small[0].set_total_bytes(bytes.size());
  absl::StatusOr<v1::Session> b = Import(small);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(b->session_id(), a);
  EXPECT_EQ(b->version(), 1u);
  EXPECT_EQ(b->token_count(), 10u);
  EXPECT_THAT(Turn(b->session_id(), {7, 8}, 8), ElementsAreArray(Turn(a, {7, 8}, 8)));
}

TEST_F(SnapshotRpcTest, ImportRefusesWhatIsNotASnapshotOfThisModel) {
  Start();
  const std::string a = NewSession();
  Turn(a, {1, 2, 3}, 4);
  std::vector<v1::SnapshotChunk> chunks = Export(a).value();
  std::string bytes = chunks[0].data();

  std::vector<v1::SnapshotChunk> bad(1);
  bad[0].set_data(bytes);
  bad[0].mutable_data()->at(bytes.size() / 2) ^= 1;
  EXPECT_THAT(Import(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("corrupt")));
  bad[0].set_data(bytes.substr(0, bytes.size() - 10));
  EXPECT_THAT(Import(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad[0].set_total_bytes(bytes.size());  // declared but not delivered
  EXPECT_THAT(Import(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
  EXPECT_THAT(Import({}), StatusIs(absl::StatusCode::kInvalidArgument));

  const uint64_t cap = server_->model()->engine->max_snapshot_bytes();
  std::vector<v1::SnapshotChunk> huge(1);
  huge[0].set_total_bytes(cap + 1);
  huge[0].set_data("XLSTMSS");
  EXPECT_THAT(Import(huge), StatusIs(absl::StatusCode::kResourceExhausted));
  // Undeclared: refused at the chunk that crosses the cap (chunks of 48 KiB fit the test
  // server's message limit).
  std::vector<v1::SnapshotChunk> many(cap / (48 << 10) + 2);
  for (v1::SnapshotChunk& c : many) c.set_data(std::string(48 << 10, '\0'));
  EXPECT_THAT(Import(many), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(SnapshotRpcTest, ExportErrors) {
  Start();
  EXPECT_THAT(Export("AAAAAAAAAAAAAAAAAAAAAA"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Export(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Export("a/b"), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Calls that end while the engine is still preparing the snapshot, or mid-stream: each
// reactor must finish exactly once and free itself whichever of gRPC and the engine is last.
TEST_F(SnapshotRpcTest, CallsCancelledAtAnyMomentLeaveTheServerWorking) {
  Start();
  const std::string a = NewSession();
  Turn(a, {1, 2, 3}, 4);
  const std::string bytes = Export(a).value()[0].data();
  for (int i = 0; i < 200; ++i) {
    const auto deadline =
        std::chrono::system_clock::now() + std::chrono::microseconds(50 * (i % 40));
    {
      grpc::ClientContext ctx;
      ctx.set_deadline(deadline);
      v1::ExportSessionRequest req;
      req.set_session_id(a);
      auto reader = chat_->ExportSession(&ctx, req);
      v1::SnapshotChunk c;
      while (reader->Read(&c)) {
      }
      const grpc::Status s = reader->Finish();
      EXPECT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
          << s.error_message();
    }
    {
      grpc::ClientContext ctx;
      ctx.set_deadline(deadline);
      v1::Session out;
      auto writer = chat_->ImportSession(&ctx, &out);
      v1::SnapshotChunk c;
      c.set_data(bytes.substr(0, bytes.size() / 2));
      c.set_total_bytes(bytes.size());
      writer->Write(c);
      if (i % 2 == 0) {  // half of them complete the snapshot
        c.Clear();
        c.set_data(bytes.substr(bytes.size() / 2));
        writer->Write(c);
      }
      if (i % 3 == 0) ctx.TryCancel();
      writer->WritesDone();
      const grpc::Status s = writer->Finish();
      EXPECT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
                  s.error_code() == grpc::StatusCode::CANCELLED ||
                  s.error_code() == grpc::StatusCode::INVALID_ARGUMENT)
          << s.error_message();
    }
  }
  EXPECT_THAT(Turn(a, {4}, 3).size(), 3u);
  absl::StatusOr<std::vector<v1::SnapshotChunk>> again = Export(a);
  ASSERT_TRUE(again.ok()) << again.status();
}

// Imports and exports share --snapshot-bytes-in-flight: while one import holds its declared
// bytes (a limit below one snapshot lets one call through alone), a second import and an
// export are refused at once; when it ends, its bytes are free again.
TEST_F(SnapshotRpcTest, SnapshotBytesInFlightAreSharedAndBounded) {
  ServerOptions o = TestOptions();
  o.snapshot_bytes_in_flight = 1;
  Start(o);
  const std::string a = NewSession();
  Turn(a, {1, 2, 3}, 2);
  const std::vector<v1::SnapshotChunk> chunks = Export(a).value();
  const std::string bytes = chunks[0].data();
  ASSERT_EQ(WaitInFlight(0), 0u);
  HeldImport held(chat_.get(), bytes);
  ASSERT_TRUE(held.started());
  // The held import takes its declared bytes when the server reads its first chunk.
  ASSERT_EQ(WaitInFlight(bytes.size()), bytes.size());
  EXPECT_THAT(Import(chunks).status(), StatusIs(absl::StatusCode::kResourceExhausted,
                                                HasSubstr("snapshot bytes in flight")));
  EXPECT_THAT(Export(a).status(), StatusIs(absl::StatusCode::kResourceExhausted));
  ASSERT_TRUE(held.Finish().ok());
  EXPECT_EQ(WaitInFlight(0), 0u);
  EXPECT_TRUE(Import(chunks).ok());
  EXPECT_EQ(WaitInFlight(0), 0u);
  EXPECT_TRUE(Export(a).ok());
  EXPECT_EQ(WaitInFlight(0), 0u);
}

// --tenant-snapshot-bytes applies within the shared budget: with room to spare there, a
// tenant (here the anonymous one: no API keys) holding one import is refused a second one
// naming its quota, and gets its bytes back when the first ends.
TEST_F(SnapshotRpcTest, TenantSnapshotQuotaRefusesBeyondItsShare) {
  ServerOptions o = TestOptions();
  o.tenant_snapshot_bytes = 1;  // below one snapshot: one call of the tenant at a time
  Start(o);
  const std::string a = NewSession();
  Turn(a, {1, 2, 3}, 2);
  const std::vector<v1::SnapshotChunk> chunks = Export(a).value();
  const std::string bytes = chunks[0].data();
  ASSERT_EQ(WaitInFlight(0), 0u);
  HeldImport held(chat_.get(), bytes);
  ASSERT_TRUE(held.started());
  ASSERT_EQ(WaitInFlight(bytes.size()), bytes.size());
  EXPECT_THAT(Export(a).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("tenant (anonymous)'s snapshot bytes in flight are at its "
                                 "quota")));
  ASSERT_TRUE(held.Finish().ok());
  EXPECT_EQ(WaitInFlight(0), 0u);
  EXPECT_TRUE(Export(a).ok());
}

// A flush that cannot write (the state directory vanished) reports every session it did not
// get written, and the drain says it is incomplete (xlstmd then exits 3).
TEST_F(SnapshotRpcTest, DrainReportsSessionsItCouldNotWrite) {
  ServerOptions o = TestOptions();
  o.state_dir = TempDir();
  ASSERT_FALSE(o.state_dir.empty());
  o.durability = "none";
  Start(o);
  const std::string a = NewSession();
  Turn(a, {155, 60, 131}, 3);
  NewSession();
  std::filesystem::remove_all(o.state_dir);
  const Server::DrainReport report = server_->Drain(absl::Seconds(5), [] { return false; });
  EXPECT_TRUE(report.flush_ran);
  EXPECT_FALSE(report.flush_complete());
  EXPECT_GE(report.snapshot_write_failures, 2);
  EXPECT_EQ(report.sessions_not_written(),
            report.snapshot_write_failures + report.writes_in_flight);
  EXPECT_EQ(report.snapshots_written, 0);
}

// /readyz tells the truth about --state-dir: while no file can be created there (here: the
// directory is gone) the server is not ready, and it is again once it can (issue 16, req 4).
TEST_F(SnapshotRpcTest, ReadinessFailsWhileTheStateDirCannotBeWritten) {
  ServerOptions o = TestOptions();
  o.state_dir = TempDir();
  ASSERT_FALSE(o.state_dir.empty());
  Start(o);
  EXPECT_EQ(server_->NotReadyReason(), "");
  std::filesystem::remove_all(o.state_dir);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // one probe a second
  EXPECT_THAT(server_->NotReadyReason(),
              ::testing::AllOf(::testing::HasSubstr("cannot be written"),
                               ::testing::HasSubstr(o.state_dir)));
  std::filesystem::create_directories(o.state_dir);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_EQ(server_->NotReadyReason(), "");
}

TEST_F(SnapshotRpcTest, DrainFlushesCommittedStatesSoARestartLosesNothing) {
  ServerOptions o = TestOptions();
  o.state_dir = TempDir();
  ASSERT_FALSE(o.state_dir.empty());
  o.durability = "none";  // nothing is written before the drain
  Start(o);
  const std::string a = NewSession();
  const std::vector<int32_t> first = Turn(a, {155, 60, 131}, 5);
  const std::string b = NewSession();  // never ran a turn: the zero state
  const Server::DrainReport report = server_->Drain(absl::Seconds(5), [] { return false; });
  EXPECT_TRUE(report.turns_finished);
  EXPECT_TRUE(report.flushed);
  EXPECT_TRUE(report.flush_complete());
  EXPECT_EQ(report.sessions_not_written(), 0);
  EXPECT_EQ(report.snapshot_write_failures, 0);
  EXPECT_GE(report.snapshots_written, 2);
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(o.state_dir) / (a + ".xss")));
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(o.state_dir) / (b + ".xss")));

  Start(o);
  grpc::ClientContext ctx;
  Deadline(&ctx);
  v1::GetSessionRequest req;
  req.set_session_id(a);
  v1::Session s;
  ASSERT_TRUE(chat_->GetSession(&ctx, req, &s).ok());
  EXPECT_EQ(s.version(), 1u);
  EXPECT_EQ(s.token_count(), 8u);
  // The restored state continues like a replay of its history on a fresh session.
  std::vector<int32_t> history = {155, 60, 131};
  history.insert(history.end(), first.begin(), first.end());
  history.push_back(9);
  const std::string fresh = NewSession();
  EXPECT_THAT(Turn(a, {9}, 6), ElementsAreArray(Turn(fresh, history, 6)));
  EXPECT_EQ(Turn(b, {1, 2}, 3).size(), 3u);
}

}  // namespace
}  // namespace xlstmd::server
