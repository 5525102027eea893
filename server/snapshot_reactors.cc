#include "server/snapshot_reactors.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "server/convert.h"
#include "server/grpc_post.h"
#include "server/raw_messages.h"

namespace xlstmd::server {
namespace {

// The status a cancelled call reports (the client does not see it; logs and tests might).
absl::Status CancelReason(const grpc::CallbackServerContext* ctx) {
  return ctx->deadline() <= std::chrono::system_clock::now()
             ? absl::DeadlineExceededError("deadline exceeded")
             : absl::CancelledError("client cancelled the call");
}

}  // namespace

// ---------------------------------------------------------------------------------------
// ExportReactor

void ExportReactor::Reject(const absl::Status& status) { FinishOnce(ToGrpcStatus(status)); }

void ExportReactor::Start(core::Engine* engine, std::string owner, std::string session_id,
                          const SnapshotBudgets& budgets) {
  if (absl::Status s = hold_.Take(budgets, owner, engine->max_snapshot_bytes()); !s.ok()) {
    Reject(s);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    engine_pending_ = true;
  }
  // The engine may complete on any thread, even this one, before ExportSession returns.
  engine->ExportSession(std::move(owner), std::move(session_id),
                        [this](absl::StatusOr<std::string> s) { OnSnapshot(std::move(s)); });
}

void ExportReactor::FinishOnce(const grpc::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    writing_ = false;
  }
  Finish(status);
}

void ExportReactor::OnSnapshot(absl::StatusOr<std::string> snapshot) {
  // Decided under the lock in one go: once engine_pending_ is cleared, OnDone may delete
  // the reactor at any moment unless this callback still has to finish the call.
  enum class Next { kDelete, kNothing, kFail, kWrite } next;
  {
    absl::MutexLock lock(&mu_);
    engine_pending_ = false;
    if (done_) {
      next = Next::kDelete;  // the call is long over; only this callback kept us alive
    } else if (finished_) {
      next = Next::kNothing;  // a cancel finished the call while the engine worked
    } else if (!snapshot.ok()) {
      next = Next::kFail;
      finished_ = true;
    } else {
      next = Next::kWrite;
      writing_ = true;
    }
  }
  switch (next) {
    case Next::kDelete:
      delete this;
      return;
    case Next::kNothing:
      return;
    case Next::kFail:
      Finish(ToGrpcStatus(snapshot.status()));
      return;
    case Next::kWrite:
      snapshot_ = *std::move(snapshot);
      hold_.ShrinkTo(snapshot_.size());  // charged the largest snapshot until now
      offset_ = 0;
      WriteNext();
      return;
  }
}

void ExportReactor::WriteNext() {
  std::optional<grpc::Status> cancelled;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) cancelled = cancel_status_;
  }
  if (cancelled.has_value()) {
    FinishOnce(*cancelled);
    return;
  }
  const size_t n = std::min(kSnapshotChunkBytes, snapshot_.size() - offset_);
  chunk_.Clear();
  chunk_.set_data(snapshot_.data() + offset_, n);
  if (offset_ == 0) chunk_.set_total_bytes(snapshot_.size());
  offset_ += n;
  const grpc::Status ser = SerializeResponse(chunk_, &out_);
  if (!ser.ok()) {
    FinishOnce(grpc::Status(grpc::StatusCode::INTERNAL, "could not serialize a SnapshotChunk"));
    return;
  }
  if (offset_ < snapshot_.size()) {
    StartWrite(&out_);  // writing_ stays set until OnWriteDone
    return;
  }
  // The last chunk goes out together with the status: one round trip less.
  {
    absl::MutexLock lock(&mu_);
    finished_ = true;  // only the write owner finishes while writing_ is set
  }
  StartWriteAndFinish(&out_, grpc::WriteOptions(), grpc::Status::OK);
}

void ExportReactor::OnWriteDone(bool ok) {
  if (!ok) {
    // The transport is gone (client left, or the call was cancelled).
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "write failed: the client went away"));
    return;
  }
  WriteNext();  // the write role is still ours
}

void ExportReactor::OnCancel() {
  bool finish_now = false;
  grpc::Status status = ToGrpcStatus(CancelReason(ctx_));
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    cancel_status_ = status;
    // With a write in flight, OnWriteDone (then WriteNext) finishes; otherwise nobody else
    // will, even while the engine is still preparing the snapshot.
    finish_now = !finished_ && !writing_;
  }
  if (finish_now) FinishOnce(status);
}

void ExportReactor::OnDone() {
  bool delete_now = false;
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
    delete_now = !engine_pending_;  // else OnSnapshot deletes
  }
  if (delete_now) delete this;
}

// ---------------------------------------------------------------------------------------
// ImportReactor

void ImportReactor::Reject(const absl::Status& status) { FinishOnce(ToGrpcStatus(status)); }

void ImportReactor::Start(core::Engine* engine, std::string owner,
                          const SnapshotBudgets& budgets) {
  engine_ = engine;
  owner_ = std::move(owner);
  budgets_ = budgets;
  cap_ = engine->max_snapshot_bytes();
  StartRead(&in_);
}

void ImportReactor::FinishOnce(const grpc::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
  }
  // data_ is not released here: a read may be completing on another thread. The reactor
  // (and its buffer) goes in OnDone, right after the call ends.
  Finish(status);
}

void ImportReactor::OnReadDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;  // a cancel ended the call while this read was in flight
  }
  if (!ok) {
    // The end of the client's stream, or of the call: only a half-close is an import (a
    // cancelled call must not leave a session behind that nobody knows the id of).
    if (ctx_->IsCancelled()) {
      FinishOnce(ToGrpcStatus(CancelReason(ctx_)));
      return;
    }
    Import();
    return;
  }
  if (absl::Status s = Append(); !s.ok()) {
    FinishOnce(ToGrpcStatus(s));
    return;
  }
  StartRead(&in_);
}

absl::Status ImportReactor::Append() {
  if (absl::Status s = ParseRequest(&in_, &chunk_); !s.ok()) return s;
  in_.Clear();
  ++chunks_;
  if (chunks_ == 1 && chunk_.total_bytes() != 0) {
    declared_ = chunk_.total_bytes();
    if (declared_ > cap_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the snapshot declares ", declared_,
                       " bytes; this model's snapshots are at most ", cap_));
    }
    XLSTMD_RETURN_IF_ERROR(hold_.Take(budgets_, owner_, declared_));
    // Bounded by the cap just checked: the one allocation the import needs.
    data_.reserve(declared_);
  } else if (chunks_ > 1 && chunk_.total_bytes() != 0 && chunk_.total_bytes() != declared_) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", chunks_, " declares total_bytes ", chunk_.total_bytes(),
                     " (set it on the first chunk only; that one said ", declared_, ")"));
  }
  const uint64_t size = chunk_.data().size();
  // Undeclared size: charged as the largest snapshot before the first byte is buffered.
  if (chunks_ == 1 && declared_ == 0) XLSTMD_RETURN_IF_ERROR(hold_.Take(budgets_, owner_, cap_));
  // Checked before appending, so nothing beyond the cap is ever buffered.
  if (data_.size() + size > cap_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the snapshot stream exceeds ", cap_, " bytes, the most this model's snapshots can be (",
        data_.size() + size, " bytes received so far)"));
  }
  if (declared_ != 0 && data_.size() + size > declared_) {
    return absl::InvalidArgumentError(absl::StrCat("the snapshot stream holds more than the ",
                                                   declared_, " bytes its first chunk declared"));
  }
  data_.append(chunk_.data());
  chunk_.Clear();
  return absl::OkStatus();
}

void ImportReactor::Import() {
  if (data_.empty()) {
    FinishOnce(
        ToGrpcStatus(absl::InvalidArgumentError("ImportSession received no snapshot bytes")));
    return;
  }
  if (declared_ != 0 && data_.size() != declared_) {
    FinishOnce(ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("the snapshot stream ended after ", data_.size(), " of the ", declared_,
                     " bytes its first chunk declared (truncated)"))));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    engine_pending_ = true;
  }
  // May complete on this thread (a snapshot refused while decoding) or the engine's.
  // The answer is converted and finished on a gRPC thread, never the engine's (engine_pending_
  // keeps this reactor alive until OnImported runs).
  engine_->ImportSession(owner_, std::move(data_), [this](absl::StatusOr<core::SessionInfo> info) {
    RunOnGrpcThread([this, info = std::move(info)]() mutable { OnImported(std::move(info)); });
  });
}

void ImportReactor::OnImported(absl::StatusOr<core::SessionInfo> info) {
  bool delete_now = false;
  bool finish = false;
  {
    absl::MutexLock lock(&mu_);
    engine_pending_ = false;
    delete_now = done_;
    // Nobody else finishes while the engine imports (OnCancel leaves it to us).
    finish = !done_ && !finished_;
    if (finish) finished_ = true;
  }
  if (delete_now) {
    delete this;
    return;
  }
  if (!finish) return;
  if (!info.ok()) {
    Finish(ToGrpcStatus(info.status()));
    return;
  }
  v1::Session session;
  ToProto(*info, &session);
  Finish(SerializeResponse(session, response_));
}

void ImportReactor::OnCancel() {
  bool finish_now = false;
  {
    absl::MutexLock lock(&mu_);
    // While the engine imports, its completion finishes the call (and a session it created
    // is reported, even if to nobody).
    finish_now = !finished_ && !engine_pending_;
  }
  if (finish_now) FinishOnce(ToGrpcStatus(CancelReason(ctx_)));
}

void ImportReactor::OnDone() {
  bool delete_now = false;
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
    delete_now = !engine_pending_;
  }
  if (delete_now) delete this;
}

}  // namespace xlstmd::server
