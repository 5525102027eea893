// The reactors of ChatService.ExportSession and ImportSession: a session's snapshot
// (docs/snapshot-format.md) streamed out, or in, as SnapshotChunks.
//
// ExportReactor (server streaming) asks the engine for the snapshot, then writes it in chunks
// of at most kSnapshotChunkBytes, the first one carrying the total size. One write is in
// flight at a time, so a snapshot costs its own size in memory whatever the client's speed.
// A client cancel or deadline ends the call at the next write (or at once while none is in
// flight).
//
// ImportReactor (client streaming) reads chunks one at a time into one buffer, hard-capped at
// the engine's max_snapshot_bytes(): RESOURCE_EXHAUSTED as soon as a chunk would go past it
// or the first chunk declares more, so a client can never make the daemon buffer more than
// one maximal snapshot per call. At the end of the stream the engine validates and imports
// it (engine.h: foreign model FAILED_PRECONDITION, corrupt or truncated INVALID_ARGUMENT).
//
// Lifetime. Both heap-allocate themselves in the handler and delete themselves once two
// things have happened: gRPC's OnDone, and the engine's completion callback when one was
// started (it may run on the engine or an I/O thread, before or after OnDone). Neither ever
// calls gRPC or the engine with its mutex held.
#ifndef XLSTMD_SERVER_SNAPSHOT_REACTORS_H_
#define XLSTMD_SERVER_SNAPSHOT_REACTORS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/engine/engine.h"
#include "server/byte_budget.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "xlstmd/v1/chat.pb.h"

namespace xlstmd::server {

// Largest `data` of an exported chunk: far below gRPC's 4 MiB default message limit, and
// large enough that per-message overhead does not matter.
inline constexpr size_t kSnapshotChunkBytes = size_t{1} << 20;

class ExportReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit ExportReactor(grpc::CallbackServerContext* ctx) : ctx_(ctx) {}

  // Ends the call with `status` before anything was asked of the engine.
  void Reject(const absl::Status& status);
  // Asks `engine` for the snapshot of `session_id` (owned by `owner`) and streams it. Once.
  // `budgets` (snapshot bytes in flight, shared and the owner's) are charged the largest
  // snapshot before the engine is asked, then the snapshot's size until the call ends.
  void Start(core::Engine* engine, std::string owner, std::string session_id,
             const SnapshotBudgets& budgets);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  // One of --max-streams, given back when the reactor goes.
  BudgetHold stream_hold;

 private:
  ~ExportReactor() override = default;
  // The engine's completion (engine or I/O thread).
  void OnSnapshot(absl::StatusOr<std::string> snapshot);
  // Writes the next chunk, or finishes. The caller owns the write (writing_ is set).
  void WriteNext();
  // Marks the call finished (when it was not yet) and, if so, sends `status`.
  void FinishOnce(const grpc::Status& status);

  grpc::CallbackServerContext* const ctx_;

  absl::Mutex mu_;
  bool engine_pending_ ABSL_GUARDED_BY(mu_) = false;  // the engine still owes OnSnapshot
  bool writing_ ABSL_GUARDED_BY(mu_) = false;         // a write is in flight
  bool finished_ ABSL_GUARDED_BY(mu_) = false;        // Finish (or ...AndFinish) was called
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;  // OnDone ran
  grpc::Status cancel_status_ ABSL_GUARDED_BY(mu_);

  // Owned by whoever holds the write (set by OnSnapshot before the first write).
  std::string snapshot_;
  SnapshotHold hold_;  // snapshot bytes in flight, given back when the reactor goes
  size_t offset_ = 0;
  v1::SnapshotChunk chunk_;
  grpc::ByteBuffer out_;  // the bytes of the write in flight
};

class ImportReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  ImportReactor(grpc::CallbackServerContext* ctx, grpc::ByteBuffer* response)
      : ctx_(ctx), response_(response) {}

  // Ends the call with `status` without reading.
  void Reject(const absl::Status& status);
  // Starts reading chunks; at the end of the stream imports them into `engine` for `owner`.
  // `budgets` (snapshot bytes in flight, shared and the owner's) are charged the declared size
  // (the largest snapshot when the first chunk declares none) before anything is buffered.
  void Start(core::Engine* engine, std::string owner, const SnapshotBudgets& budgets);

  void OnReadDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  // One of --max-streams, given back when the reactor goes.
  BudgetHold stream_hold;

 private:
  ~ImportReactor() override = default;
  // Checks and appends one received chunk; an error ends the call.
  absl::Status Append();
  // End of the client's stream: hands the snapshot to the engine.
  void Import();
  // The engine's completion (engine thread, or this one for a snapshot refused at once).
  void OnImported(absl::StatusOr<core::SessionInfo> info);
  void FinishOnce(const grpc::Status& status);

  grpc::CallbackServerContext* const ctx_;
  grpc::ByteBuffer* const response_;
  core::Engine* engine_ = nullptr;
  std::string owner_;
  uint64_t cap_ = 0;  // engine->max_snapshot_bytes()

  absl::Mutex mu_;
  bool engine_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;

  // Owned by the reading side: one read is in flight at a time, and the next starts only
  // after OnReadDone handled the last.
  grpc::ByteBuffer in_;
  v1::SnapshotChunk chunk_;
  std::string data_;
  SnapshotBudgets budgets_;
  SnapshotHold hold_;
  uint64_t declared_ = 0;  // total_bytes of the first chunk, 0 = not given
  int64_t chunks_ = 0;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_SNAPSHOT_REACTORS_H_
