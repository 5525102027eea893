// Engine: option checks and the public methods, forwarded to Engine::Impl.
#include "absl/strings/str_cat.h"
#include "core/engine/engine_impl.h"

namespace xlstmd::core {
namespace {

absl::Status CheckOptions(const EngineOptions& options, const XlstmModel& model,
                          const ChatTemplate& chat_template) {
  for (auto [v, name] : {std::pair<int64_t, const char*>{options.resident_slots, "resident_slots"},
                         {options.max_batch, "max_batch"},
                         {options.prefill_token_budget, "prefill_token_budget"},
                         {options.prefill_piece, "prefill_piece"},
                         {options.prefill_chunk_size, "prefill_chunk_size"},
                         {options.queue_depth, "queue_depth"},
                         {options.max_prompt_tokens, "max_prompt_tokens"},
                         {options.max_sessions, "max_sessions"},
                         {options.stream_buffer_events, "stream_buffer_events"}}) {
    if (v < 1) return absl::InvalidArgumentError(absl::StrCat(name, " must be >= 1, got ", v));
  }
  if (options.idle_ttl_ms < 0) return absl::InvalidArgumentError("idle_ttl_ms must be >= 0");
  if (options.max_turn_ms < 0) return absl::InvalidArgumentError("max_turn_ms must be >= 0");
  if (options.stalled_stream_ms < 0) {
    return absl::InvalidArgumentError("stalled_stream_ms must be >= 0");
  }
  if (options.io_threads < 1) return absl::InvalidArgumentError("io_threads must be >= 1");
  if (options.keep_turn_checkpoints < 0) {
    return absl::InvalidArgumentError("keep_turn_checkpoints must be >= 0");
  }
  if (options.host_state_bytes < 0 || options.disk_state_bytes < 0) {
    return absl::InvalidArgumentError("state byte budgets must be >= 0");
  }
  for (int32_t id : chat_template.stop_token_ids) {
    if (id < 0 || id >= model.vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat template stop token id ", id, " is outside the model's vocabulary"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<XlstmModel> model,
                                                       std::unique_ptr<Tokenizer> tokenizer,
                                                       ChatTemplate chat_template,
                                                       const EngineOptions& options) {
  if (model == nullptr || tokenizer == nullptr) {
    return absl::InvalidArgumentError("Engine::Create needs a model and a tokenizer");
  }
  if (absl::Status s = CheckOptions(options, *model, chat_template); !s.ok()) return s;
  auto impl = std::make_unique<Impl>(std::move(model), std::move(tokenizer),
                                     std::move(chat_template), options);
  if (absl::Status s = impl->Start(); !s.ok()) return s;
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

absl::StatusOr<std::shared_ptr<TurnStream>> Engine::StartTurn(TurnRequest request,
                                                              std::function<void()> wakeup) {
  return impl_->StartTurn(std::move(request), std::move(wakeup));
}
void Engine::CreateSession(std::string owner, std::string system_prompt,
                           std::function<void(absl::StatusOr<SessionInfo>)> done) {
  impl_->CreateSession(std::move(owner), std::move(system_prompt), std::move(done));
}
void Engine::ForkSession(std::string owner, std::string id,
                         std::function<void(absl::StatusOr<SessionInfo>)> done) {
  impl_->ForkSession(std::move(owner), std::move(id), std::move(done));
}
void Engine::ForkSessionAt(std::string owner, std::string id, uint64_t version,
                           std::function<void(absl::StatusOr<SessionInfo>)> done) {
  impl_->ForkSessionAt(std::move(owner), std::move(id), version, std::move(done));
}
void Engine::DeleteSession(std::string owner, std::string id,
                           std::function<void(absl::Status)> done) {
  impl_->DeleteSession(std::move(owner), std::move(id), std::move(done));
}
void Engine::ExportSession(std::string owner, std::string id,
                           std::function<void(absl::StatusOr<std::string>)> done) {
  impl_->ExportSession(std::move(owner), std::move(id), std::move(done));
}
void Engine::ImportSession(std::string owner, std::string snapshot,
                           std::function<void(absl::StatusOr<SessionInfo>)> done) {
  impl_->ImportSession(std::move(owner), std::move(snapshot), std::move(done));
}
void Engine::RewindSession(std::string owner, std::string id, uint64_t version,
                           std::function<void(absl::StatusOr<SessionInfo>)> done) {
  impl_->RewindSession(std::move(owner), std::move(id), version, std::move(done));
}
absl::StatusOr<SessionInfo> Engine::GetSession(const std::string& owner,
                                               const std::string& id) const {
  return impl_->GetSession(owner, id);
}
void Engine::LookupSession(std::string owner, std::string id,
                           std::function<void(absl::StatusOr<SessionInfo>)> done) const {
  impl_->LookupSession(owner, id, std::move(done));
}
std::vector<SessionInfo> Engine::ListSessions(const std::string& owner, const std::string& after_id,
                                              int32_t limit) const {
  return impl_->ListSessions(owner, after_id, limit);
}
uint64_t Engine::max_snapshot_bytes() const { return impl_->max_snapshot_bytes(); }
void Engine::BeginDrain() { impl_->scheduler().BeginDrain(); }
bool Engine::draining() const { return impl_->scheduler().draining(); }
bool Engine::WaitIdle(int64_t timeout_ms) {
  return impl_->scheduler().WaitIdle(absl::Milliseconds(timeout_ms));
}
void Engine::CancelAll(absl::Status reason) { impl_->scheduler().CancelAll(std::move(reason)); }
bool Engine::FlushToDisk(int64_t timeout_ms) { return impl_->FlushToDisk(timeout_ms); }
int64_t Engine::DiskWritesInFlight() const { return impl_->DiskWritesInFlight(); }
const XlstmModel& Engine::model() const { return impl_->model(); }
const Tokenizer& Engine::tokenizer() const { return impl_->tokenizer(); }
const ChatTemplate& Engine::chat_template() const { return impl_->chat_template(); }
const EngineOptions& Engine::options() const { return impl_->options(); }
EngineStats Engine::stats() const { return impl_->stats(); }

}  // namespace xlstmd::core
