// The request path of a Chat call: wire bytes -> xlstmd.v1.ChatRequest -> the server's
// conversion (server/convert.h) -> Engine::StartTurn on a real engine serving a tiny random
// model, run to its end, every event converted back to the wire. Whatever the request, the
// call must end (OK or an error status), the session must stay usable, and every event must
// serialize (proto3 strings must be valid UTF-8).
//
// A request whose session_id is "s" is pointed at a live session, so the fuzzer reaches the
// engine's checks behind the session lookup; any other id exercises the lookup's errors.
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "absl/synchronization/notification.h"
#include "core/engine/engine.h"
#include "core/model/random_model.h"
#include "core/tokenizer/chat_template.h"
#include "core/tokenizer/tokenizer.h"
#include "google/protobuf/stubs/logging.h"
#include "kernels/backend_registry.h"
#include "server/convert.h"
#include "tests/fuzz/fuzz_target.h"
#include "xlstmd/v1/chat.pb.h"

namespace {

namespace core = xlstmd::core;
namespace v1 = xlstmd::v1;

struct World {
  std::unique_ptr<xlstmd::kernels::Backend> backend;
  std::unique_ptr<core::Engine> engine;
  std::string session_id;
};

[[noreturn]] void Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "chat_request_fuzz: %s: %s\n", what, status.ToString().c_str());
  __builtin_trap();
}

std::string NewSession(core::Engine& engine) {
  absl::Notification done;
  absl::StatusOr<core::SessionInfo> info;
  engine.CreateSession("fuzz", "", [&](absl::StatusOr<core::SessionInfo> r) {
    info = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  if (!info.ok()) Fail("CreateSession", info.status());
  return info->session_id;
}

World& TheWorld() {
  static World* world = [] {
    auto* w = new World;
    const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                      ("xlstmd-fuzz-model-" + std::to_string(getpid()));
    core::RandomModelSpec spec;
    spec.embedding_dim = 32;
    spec.num_blocks = 1;
    spec.num_heads = 2;
    spec.vocab = 257;  // the byte tokenizer's 256 bytes + <|endoftext|>
    spec.seed = 1;
    spec.overwrite = true;
    if (absl::Status s = core::WriteRandomModel(spec, dir); !s.ok()) Fail("WriteRandomModel", s);
    xlstmd::kernels::BackendOptions bopts;
    bopts.threads = 1;
    auto backend = xlstmd::kernels::CreateBackend("cpu", bopts);
    if (!backend.ok()) Fail("CreateBackend", backend.status());
    w->backend = std::move(*backend);
    auto model = core::XlstmModel::Load(dir, w->backend.get());
    if (!model.ok()) Fail("Load", model.status());
    auto tok = core::LoadModelTokenizer(dir);
    if (!tok.ok()) Fail("LoadModelTokenizer", tok.status());
    auto tmpl = core::ChatTemplate::ForModel(dir, **tok);
    if (!tmpl.ok()) Fail("ChatTemplate", tmpl.status());
    std::filesystem::remove_all(dir);
    core::EngineOptions options;
    options.resident_slots = 4;
    options.max_batch = 4;
    options.max_sessions = 64;
    options.max_prompt_tokens = 512;
    options.sampling.default_max_tokens = 2;
    options.sampling.max_tokens = 4;  // keeps every accepted turn short
    auto engine = core::Engine::Create(std::move(*model), std::move(*tok), std::move(*tmpl),
                                       options);
    if (!engine.ok()) Fail("Engine::Create", engine.status());
    w->engine = std::move(*engine);
    w->session_id = NewSession(*w->engine);
    return w;
  }();
  return *world;
}

// Drains a stream to its end; a turn that has not ended after 30 s is a hang.
absl::Status Drain(core::TurnStream& stream, std::mutex& mu, std::condition_variable& cv,
                   int64_t& pokes) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (true) {
    core::TurnEvent event;
    if (stream.TryPop(&event)) {
      v1::ChatEvent wire;
      xlstmd::server::ToProto(event, &wire);
      std::string bytes;
      v1::ChatEvent back;
      if (!wire.SerializeToString(&bytes) || !back.ParseFromString(bytes)) {
        Fail("event does not round-trip the wire", absl::OkStatus());
      }
      continue;
    }
    if (stream.Done()) return stream.final_status();
    std::unique_lock<std::mutex> lock(mu);
    const int64_t seen = pokes;
    cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return pokes != seen; });
    if (std::chrono::steady_clock::now() > give_up) Fail("turn never ended", absl::OkStatus());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Invalid UTF-8 in a string field is an expected parse failure, not news worth a log line.
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);
  (void)quiet;
  v1::ChatRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  World& world = TheWorld();
  if (request.session_id() == "s") request.set_session_id(world.session_id);
  auto turn = xlstmd::server::ToTurnRequest(request, "fuzz");
  if (!turn.ok()) return 0;

  // The engine holds each turn's stream (and its wakeup) until it retires the turn, which
  // can be after this function has returned: the wakeup's state must not live on its stack.
  struct Wakeups {
    std::mutex mu;
    std::condition_variable cv;
    int64_t pokes = 0;
  };
  auto w = std::make_shared<Wakeups>();
  auto wakeup = [w] {
    std::lock_guard<std::mutex> lock(w->mu);
    ++w->pokes;
    w->cv.notify_all();
  };
  auto stream = world.engine->StartTurn(std::move(*turn), wakeup);
  if (stream.ok()) (void)Drain(**stream, w->mu, w->cv, w->pokes);

  // Whatever happened, the session must take the next turn.
  core::TurnRequest probe;
  probe.session_id = world.session_id;
  probe.owner = "fuzz";
  probe.tokens = {1};
  probe.sampling.max_tokens = 1;
  auto next = world.engine->StartTurn(std::move(probe), wakeup);
  if (!next.ok()) Fail("the session refuses the next turn", next.status());
  if (absl::Status s = Drain(**next, w->mu, w->cv, w->pokes); !s.ok()) Fail("next turn failed", s);
  return 0;
}

namespace xlstmd::fuzz {

std::vector<std::string> FuzzSeeds() {
  std::vector<std::string> seeds;
  auto add = [&](const v1::ChatRequest& r) { seeds.push_back(r.SerializeAsString()); };
  v1::ChatRequest r;
  r.set_session_id("s");
  r.set_message("Hello there");
  add(r);
  r.mutable_sampling()->set_temperature(0.8f);
  r.mutable_sampling()->set_top_p(0.9f);
  r.mutable_sampling()->set_top_k(5);
  r.mutable_sampling()->set_max_tokens(3);
  *r.mutable_sampling()->add_stop() = std::string("\n");
  r.mutable_sampling()->add_stop_token_ids(256);
  r.mutable_sampling()->set_logprobs(2);
  r.mutable_sampling()->set_repetition_penalty(1.1f);
  r.set_request_id("0b9d8a6e-3c1f-4f5a-9e2d-7c4b1a2f3e01");
  add(r);
  v1::ChatRequest t;
  t.set_session_id("s");
  for (int id : {72, 105, 256}) t.mutable_tokens()->add_ids(id);
  t.set_expected_version(0);
  add(t);
  v1::ChatRequest unknown;
  unknown.set_session_id("AbCdEfGhIjKlMnOpQr_-0w");
  unknown.set_message("x");
  add(unknown);
  return seeds;
}

}  // namespace xlstmd::fuzz
