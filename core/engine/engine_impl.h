// Engine::Impl: the facade's wiring of the engine's parts. Internal: only engine.cc and
// engine_sessions.cc include it.
#ifndef XLSTMD_CORE_ENGINE_ENGINE_IMPL_H_
#define XLSTMD_CORE_ENGINE_ENGINE_IMPL_H_

#include <memory>
#include <string>
#include <vector>

#include "core/engine/engine.h"
#include "core/engine/model_adapter.h"
#include "core/engine/scheduler.h"
#include "core/engine/session_index.h"
#include "core/engine/slot_pool.h"
#include "core/engine/state_tiers.h"
#include "core/engine/turn.h"

namespace xlstmd::core {

class Engine::Impl {
 public:
  Impl(std::unique_ptr<XlstmModel> model, std::unique_ptr<Tokenizer> tokenizer,
       ChatTemplate chat_template, const EngineOptions& options);
  ~Impl();

  absl::Status Start();

  // ---- engine.cc: turns, creation, state of the engine ----
  absl::StatusOr<std::shared_ptr<TurnStream>> StartTurn(TurnRequest req,
                                                        std::function<void()> wakeup);
  void CreateSession(std::string owner, std::string system_prompt, InfoDone done);
  absl::StatusOr<SessionInfo> GetSession(const std::string& owner, const std::string& id);
  void LookupSession(const std::string& owner, const std::string& id, InfoDone done);
  std::vector<SessionInfo> ListSessions(const std::string& owner, const std::string& after_id,
                                        int32_t limit) const {
    return index_->List(owner, after_id, limit);
  }
  EngineStats stats() const;
  bool FlushToDisk(int64_t timeout_ms);
  int64_t DiskWritesInFlight() const { return tiers_->WritesInFlight(); }

  // ---- engine_sessions.cc: session commands on the engine thread ----
  void ForkSession(std::string owner, std::string id, InfoDone done);
  void ForkSessionAt(std::string owner, std::string id, uint64_t version, InfoDone done);
  void RewindSession(std::string owner, std::string id, uint64_t version, InfoDone done);
  void ExportSession(std::string owner, std::string id,
                     std::function<void(absl::StatusOr<std::string>)> done);
  void ImportSession(std::string owner, std::string snapshot, InfoDone done);
  void DeleteSession(std::string owner, std::string id, StatusDone done);

  const XlstmModel& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ChatTemplate& chat_template() const { return template_; }
  const EngineOptions& options() const { return options_; }
  uint64_t max_snapshot_bytes() const { return snapshot_bytes_; }
  Scheduler& scheduler() { return *scheduler_; }

 private:
  // A validated turn before the session checks; the stream is made by the caller.
  absl::StatusOr<std::unique_ptr<Turn>> NewTurn(TurnRequest& req) const;
  // Claims the session, tokenizes, and queues the turn; on failure the session is released.
  // `reserved`: the turn holds a scheduler reservation (Scheduler::Reserve), consumed here.
  absl::Status ClaimAndQueue(TurnRequest req, std::unique_ptr<Turn> turn, bool reserved);
  absl::Status EncodeMessage(const std::string& message, const SessionMeta& meta,
                             Turn& turn) const;
  absl::Status PromptTooLong(size_t n, absl::string_view field) const;
  absl::Status CheckIdsInVocab(const std::vector<int32_t>& ids) const;
  // Brings `id` up to date with Redis (tiers' I/O pool), then runs `fn` on the engine thread
  // with the result.
  void AfterRefresh(const std::string& owner, const std::string& id,
                    std::function<void(absl::Status)> fn);

  std::unique_ptr<XlstmModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  const ChatTemplate template_;
  const EngineOptions options_;
  Clock* const clock_;
  ModelAdapter adapter_;
  // Host buffers of states. After the adapter (its pinned memory comes from the model's
  // backend) and before everything that holds states, so it is destroyed after them.
  std::unique_ptr<HostStatePool> host_states_;
  uint64_t snapshot_bytes_ = 0;
  int64_t state_bytes_ = 0;
  std::unique_ptr<SessionIndex> index_;
  std::unique_ptr<SlotPool> pool_;
  std::unique_ptr<Scheduler> scheduler_;
  // After the scheduler: destroyed first, so its I/O completions post into a live scheduler
  // (which no longer runs them).
  std::unique_ptr<StateTiers> tiers_;
};

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_ENGINE_IMPL_H_
