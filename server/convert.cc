#include "server/convert.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/base/retry.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "kernels/backend.h"

namespace xlstmd::server {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(status.code());
  std::string message(status.message());
  const std::string field = base::ErrorField(status);
  const std::string reason = base::CapacityReason(status);
  if (field.empty() && reason.empty()) return grpc::Status(code, message);
  // The rich error model (AIP-193): gRPC sends these bytes as grpc-status-details-bin.
  google::rpc::Status details;
  details.set_code(static_cast<int32_t>(code));
  details.set_message(message);
  if (!field.empty()) {
    google::rpc::BadRequest bad;
    google::rpc::BadRequest::FieldViolation* v = bad.add_field_violations();
    v->set_field(field);
    v->set_description(message);
    details.add_details()->PackFrom(bad);
  }
  if (!reason.empty()) {
    google::rpc::ErrorInfo info;
    info.set_reason(reason);
    info.set_domain(std::string(kErrorDomain));
    details.add_details()->PackFrom(info);
    google::rpc::RetryInfo retry;
    const int64_t ms = RetryDelayMs(reason);
    retry.mutable_retry_delay()->set_seconds(ms / 1000);
    retry.mutable_retry_delay()->set_nanos(static_cast<int32_t>(ms % 1000) * 1000000);
    details.add_details()->PackFrom(retry);
  }
  return grpc::Status(code, message, details.SerializeAsString());
}

int64_t RetryDelayMs(absl::string_view reason) {
  // A full queue or stream table drains within a turn or two; sessions free up only when
  // clients delete them or they idle out, so retrying those soon only adds load.
  if (reason == base::kShedQueueFull || reason == base::kShedTenantQueue ||
      reason == base::kShedStreams || reason == base::kShedSnapshotBytes ||
      reason == base::kShedTenantSnapshotBytes) {
    return 1000;
  }
  return 30000;
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::Status ValidateSessionId(absl::string_view id, absl::string_view field) {
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  if (id.size() > kMaxSessionIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is malformed: ", id.size(), " bytes, at most ", kMaxSessionIdBytes));
  }
  for (const char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.' &&
        c != '~') {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " is malformed: only letters, digits and -_.~ occur in session ids"));
    }
  }
  return absl::OkStatus();
}

core::SamplingConfig ToSamplingConfig(const v1::SamplingParams& p) {
  core::SamplingConfig c;
  c.temperature = p.temperature();
  c.top_k = p.top_k();
  c.top_p = p.top_p() == 0.0f ? 1.0f : p.top_p();
  c.min_p = p.min_p();
  c.repetition_penalty = p.repetition_penalty() == 0.0f ? 1.0f : p.repetition_penalty();
  c.seed = p.seed();
  c.max_tokens = p.max_tokens();
  c.stop.assign(p.stop().begin(), p.stop().end());
  c.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  c.logprobs = p.logprobs();
  return c;
}

absl::StatusOr<core::TurnRequest> ToTurnRequest(const v1::ChatRequest& request, std::string owner) {
  if (absl::Status s = ValidateSessionId(request.session_id()); !s.ok()) return s;
  core::TurnRequest t;
  t.session_id = request.session_id();
  t.owner = std::move(owner);
  switch (request.input_case()) {
    case v1::ChatRequest::kMessage:
      if (request.message().empty()) {
        return absl::InvalidArgumentError("message is empty");
      }
      t.message = request.message();
      break;
    case v1::ChatRequest::kTokens:
      if (request.tokens().ids().empty()) {
        return absl::InvalidArgumentError("tokens.ids is empty");
      }
      t.tokens.assign(request.tokens().ids().begin(), request.tokens().ids().end());
      break;
    case v1::ChatRequest::INPUT_NOT_SET:
      return absl::InvalidArgumentError("ChatRequest has no input: set message or tokens");
  }
  t.sampling = ToSamplingConfig(request.sampling());
  if (request.has_expected_version()) t.expected_version = request.expected_version();
  t.request_id = request.request_id();
  return t;
}

absl::StatusOr<v1::ListSessionsResponse> ListSessionsPage(const core::Engine& engine,
                                                          const std::string& owner,
                                                          int32_t page_size,
                                                          const std::string& page_token) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size must not be negative (got ", page_size, ")"));
  }
  page_size = page_size == 0 ? kDefaultPageSize : std::min(page_size, kMaxPageSize);
  if (!page_token.empty()) {
    if (absl::Status s = ValidateSessionId(page_token, "page_token"); !s.ok()) return s;
  }
  // One more than asked tells whether another page follows.
  std::vector<core::SessionInfo> sessions = engine.ListSessions(owner, page_token, page_size + 1);
  v1::ListSessionsResponse out;
  const bool more = static_cast<int32_t>(sessions.size()) > page_size;
  if (more) sessions.resize(page_size);
  for (const core::SessionInfo& info : sessions) ToProto(info, out.add_sessions());
  if (more) out.set_next_page_token(sessions.back().session_id);
  return out;
}

v1::FinishReason ToProto(core::FinishReason reason) {
  switch (reason) {
    case core::FinishReason::kStopToken:
      return v1::FINISH_REASON_STOP_TOKEN;
    case core::FinishReason::kStopString:
      return v1::FINISH_REASON_STOP_STRING;
    case core::FinishReason::kMaxTokens:
      return v1::FINISH_REASON_MAX_TOKENS;
    case core::FinishReason::kNone:
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

namespace {

void AddLogprobs(const std::vector<core::TokenLogprob>& in,
                 google::protobuf::RepeatedPtrField<v1::TokenLogprob>* out) {
  out->Reserve(static_cast<int>(in.size()));
  for (const core::TokenLogprob& lp : in) {
    v1::TokenLogprob* p = out->Add();
    p->set_token_id(lp.token_id);
    p->set_logprob(lp.logprob);
  }
}

}  // namespace

void ToProto(const core::TurnEvent& event, v1::ChatEvent* out) {
  out->Clear();
  switch (event.kind) {
    case core::TurnEvent::Kind::kStarted: {
      v1::TurnStarted* s = out->mutable_started();
      s->mutable_input_token_ids()->Add(event.input_ids.begin(), event.input_ids.end());
      s->set_base_version(event.base_version);
      break;
    }
    case core::TurnEvent::Kind::kDelta: {
      v1::TokenDelta* d = out->mutable_delta();
      d->set_text(event.text);
      d->mutable_token_ids()->Add(event.token_ids.begin(), event.token_ids.end());
      AddLogprobs(event.logprobs, d->mutable_logprobs());
      AddLogprobs(event.top_logprobs, d->mutable_top_logprobs());
      break;
    }
    case core::TurnEvent::Kind::kFinished: {
      v1::TurnFinished* f = out->mutable_finished();
      f->set_finish_reason(ToProto(event.finish_reason));
      f->set_session_version(event.session_version);
      f->set_durable(event.durable);
      f->set_state_digest(event.state_digest);
      v1::Usage* u = f->mutable_usage();
      u->set_prompt_tokens(event.usage.prompt_tokens);
      u->set_completion_tokens(event.usage.completion_tokens);
      u->set_queue_ms(event.usage.queue_ms);
      u->set_prefill_ms(event.usage.prefill_ms);
      u->set_first_token_ms(event.usage.first_token_ms);
      u->set_total_ms(event.usage.total_ms);
      u->set_history_tokens(event.usage.history_tokens);
      break;
    }
  }
}

void ToProto(const core::SessionInfo& info, v1::Session* out) {
  out->Clear();
  out->set_session_id(info.session_id);
  out->set_version(info.version);
  out->set_token_count(info.token_count);
  out->set_created_unix_ms(info.created_unix_ms);
  out->set_updated_unix_ms(info.updated_unix_ms);
  out->set_turn_running(info.turn_running);
}

void ToProto(const core::XlstmModel& model, const std::string& model_name, v1::ModelInfo* out) {
  out->Clear();
  const core::ModelConfig& c = model.config();
  out->set_model(model_name);
  out->set_family(c.model_type);
  out->set_vocab_size(c.vocab_size);
  out->set_embedding_dim(c.embedding_dim);
  out->set_num_blocks(c.num_blocks);
  // The mLSTM cells' heads (family B: of its mLSTM blocks), as the state layout has them.
  out->set_num_heads(model.state_layout().heads());
  out->set_qk_head_dim(model.state_layout().dqk());
  out->set_v_head_dim(model.state_layout().dv());
  out->set_state_bytes_per_session(model.state_bytes_per_session());
  out->set_backend(model.backend().Name());
  out->set_isa(model.backend().Isa());
  out->set_weight_dtype(kernels::DTypeName(model.matrix_dtype()));
  out->set_weights_digest(model.weights_digest());
}

}  // namespace xlstmd::server
