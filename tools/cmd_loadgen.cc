// `xlstm loadgen`: drives a running xlstmd with N concurrent multi-turn sessions and prints one
// JSON object with latency and throughput figures.
//
// Each session runs on its own thread and plays T sequential turns. A turn sends P token ids
// drawn uniformly from [0, vocab) (ModelService.GetModelInfo; the same --seed gives the same
// ids) as `tokens` input and asks for M new tokens (greedy unless --temperature).
//   default   one session per thread, created once; each turn sends only its P new ids.
//   --replay  the baseline a stateless server forces: every turn creates a fresh session and
//             sends the whole history (all earlier turns' prompt and generated ids, then this
//             turn's P ids), so the prompt grows turn by turn. The fresh session is deleted
//             right after its turn. A failed turn adds nothing to the history (as on the
//             stateful path, where the server rolls the session back).
// All sessions are deleted at the end.
//
// Measured per successful turn, on the client, from just before the call starts:
//   TTFT   until the first delta that carries at least one token id.
//   ITL    between successive token ids; ids that arrive in one delta arrive together, so the
//          first id of a delta counts the gap since the previous delta and the others count 0.
//          A turn with k tokens gives k - 1 samples.
// Output fields (times in ms unless named _s):
//   ttft_ms, itl_ms            {p50, p99, mean, max, n} (nearest-rank percentiles)
//   tokens_per_s               all generated ids / wall_s (the whole run, creates and deletes
//                              included)
//   decode_tokens_per_s        ids generated after each turn's first one, divided by the wall
//                              time during which at least one turn was decoding (the union of
//                              the turns' [first id, last id] intervals): the aggregate decode
//                              rate with prefill-only and idle time left out
//   decode_tokens_per_s_per_session   the same ids / the sum of the turns' decode intervals
//   ttft_ms_by_turn            median TTFT of turn index 0..T-1 (null where no turn succeeded)
//   errors_by_code             every failed RPC (CreateSession, Chat, DeleteSession) by code;
//                              error_examples holds the first message per code
//   server_queue_ms, server_prefill_ms   the server's own Usage figures, {p50, p99}
// Exit 0 once the JSON is printed, unless no turn succeeded (then also one error line, exit 1).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <latch>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/base/flags.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "tools/grpc_client.h"
#include "tools/tool_model.h"
#include "xlstmd/v1/chat.grpc.pb.h"

namespace xlstmd::tools {
namespace {

namespace pb = ::xlstmd::v1;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

constexpr const char* kCommand = "loadgen";
constexpr double kUnaryTimeoutS = 300;

struct LoadgenArgs {
  std::string server = kDefaultServer;
  int64_t sessions = 0;
  int64_t turns = 0;
  int64_t prompt_tokens = 0;
  int64_t max_tokens = 0;
  bool replay = false;
  int64_t seed = 1;
  std::string api_key;
  double temperature = 0;
  int64_t channels = 0;
  double connect_timeout = 5;
  ClientTls tls;
  double timeout = 600;
  // Chaos (scripts/soak.py): run until --duration-s instead of --turns turns (each session
  // starts over in a new session after --turns turns); cancel that fraction of turns after a
  // random number of tokens; give that fraction a deadline too short to finish.
  double duration_s = 0;
  double cancel_fraction = 0;
  double deadline_fraction = 0;
};

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A generator state for (seed, session, turn, stream): independent of thread timing.
uint64_t DeriveState(uint64_t seed, uint64_t session, uint64_t turn, uint64_t stream) {
  uint64_t s = seed;
  uint64_t x = SplitMix64(&s);
  for (const uint64_t v : {session, turn, stream}) {
    s = x ^ (v + 0x632be59bd9b4e019ULL);
    x = SplitMix64(&s);
  }
  return x;
}

// n ids uniform in [0, vocab) (rejection sampling: no modulo bias).
std::vector<int32_t> PromptTokens(uint64_t state, int64_t n, int64_t vocab) {
  const uint64_t v = static_cast<uint64_t>(vocab);
  const uint64_t rem = (UINT64_MAX % v + 1) % v;  // 2^64 mod v
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int32_t& t : out) {
    uint64_t r = SplitMix64(&state);
    while (rem != 0 && r >= 0 - rem) r = SplitMix64(&state);
    t = static_cast<int32_t>(r % v);
  }
  return out;
}

struct TurnResult {
  bool ok = false;
  int64_t index = 0;           // the turn's place in its session
  std::string error_code;      // when !ok
  double error_ms = 0;         // when !ok: how long until the error came back
  double ttft_ms = -1;         // -1: no token arrived
  std::vector<double> itl_ms;  // completion_tokens - 1 samples
  int64_t completion_tokens = 0;
  int64_t input_tokens = 0;
  double first_token_s = 0;  // since the run started
  double last_token_s = 0;
  double server_queue_ms = 0;
  double server_prefill_ms = 0;
};

struct SessionResult {
  std::vector<TurnResult> turns;
  std::map<std::string, int64_t> errors_by_code;
  std::map<std::string, std::string> error_examples;
};

class SessionRunner {
 public:
  SessionRunner(const LoadgenArgs& args, int64_t index, int64_t vocab,
                std::shared_ptr<grpc::Channel> channel, Clock::time_point* run_start)
      : args_(args),
        index_(index),
        vocab_(vocab),
        stub_(pb::ChatService::NewStub(channel)),
        run_start_(run_start) {}

  SessionResult Run() {
    do {
      if (args_.replay) {
        RunReplay();
      } else {
        RunStateful();
      }
    } while (args_.duration_s > 0 && !TimeUp());
    return std::move(result_);
  }

 private:
  bool TimeUp() const {
    return args_.duration_s > 0 &&
           std::chrono::duration<double>(Clock::now() - *run_start_).count() >= args_.duration_s;
  }

  void RunStateful() {
    std::optional<std::string> id = Create();
    if (!id) {  // every turn fails
      for (int64_t t = 0; t < args_.turns; ++t) result_.turns.push_back(Failed(t));
      return;
    }
    for (int64_t t = 0; t < args_.turns && !TimeUp(); ++t) {
      std::vector<int32_t> generated;
      result_.turns.push_back(Turn(*id, t, Prompt(t), &generated));
    }
    Delete(*id);
  }

  static TurnResult Failed(int64_t t) {
    TurnResult r;
    r.index = t;
    return r;
  }

  void RunReplay() {
    std::vector<int32_t> history;
    for (int64_t t = 0; t < args_.turns && !TimeUp(); ++t) {
      std::optional<std::string> id = Create();
      if (!id) {
        result_.turns.push_back(Failed(t));
        continue;
      }
      const std::vector<int32_t> prompt = Prompt(t);
      std::vector<int32_t> input = history;
      input.insert(input.end(), prompt.begin(), prompt.end());
      std::vector<int32_t> generated;
      TurnResult r = Turn(*id, t, input, &generated);
      if (r.ok) {
        history = std::move(input);
        history.insert(history.end(), generated.begin(), generated.end());
      }
      result_.turns.push_back(std::move(r));
      Delete(*id);
    }
  }

  std::vector<int32_t> Prompt(int64_t turn) const {
    return PromptTokens(DeriveState(static_cast<uint64_t>(args_.seed),
                                    static_cast<uint64_t>(index_), static_cast<uint64_t>(turn), 0),
                        args_.prompt_tokens, vocab_);
  }

  std::string RecordError(const grpc::Status& st) {
    const std::string code =
        absl::StatusCodeToString(static_cast<absl::StatusCode>(st.error_code()));
    ++result_.errors_by_code[code];
    result_.error_examples.emplace(code, st.error_message());
    return code;
  }

  std::optional<std::string> Create() {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, args_.api_key, kUnaryTimeoutS);
    pb::Session s;
    if (grpc::Status st = stub_->CreateSession(&ctx, pb::CreateSessionRequest(), &s); !st.ok()) {
      RecordError(st);
      return std::nullopt;
    }
    return s.session_id();
  }

  void Delete(const std::string& id) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, args_.api_key, kUnaryTimeoutS, id);
    pb::DeleteSessionRequest req;
    req.set_session_id(id);
    pb::DeleteSessionResponse resp;
    if (grpc::Status st = stub_->DeleteSession(&ctx, req, &resp); !st.ok()) RecordError(st);
  }

  double SinceRunStart(Clock::time_point t) const {
    return std::chrono::duration<double>(t - *run_start_).count();
  }

  TurnResult Turn(const std::string& id, int64_t turn, const std::vector<int32_t>& input,
                  std::vector<int32_t>* generated) {
    TurnResult r;
    r.index = turn;
    r.input_tokens = static_cast<int64_t>(input.size());
    // Chaos, drawn per turn from the seed: cancel after `cancel_after` tokens, or a deadline
    // of 1-20 ms (most turns cannot finish in it; some end queued, some mid-prefill).
    uint64_t chaos = DeriveState(static_cast<uint64_t>(args_.seed), static_cast<uint64_t>(index_),
                                 static_cast<uint64_t>(turn), 2) ^ chaos_round_++;
    const double u = static_cast<double>(SplitMix64(&chaos) >> 11) * 0x1.0p-53;
    const bool cancel = u < args_.cancel_fraction;
    const bool short_deadline =
        !cancel && u < args_.cancel_fraction + args_.deadline_fraction;
    const int64_t cancel_after =
        static_cast<int64_t>(SplitMix64(&chaos) % static_cast<uint64_t>(args_.max_tokens));
    grpc::ClientContext ctx;
    PrepareContext(&ctx, args_.api_key,
                   short_deadline ? static_cast<double>(1 + SplitMix64(&chaos) % 20) / 1000.0
                                  : args_.timeout,
                   id);
    pb::ChatRequest req;
    req.set_session_id(id);
    req.mutable_tokens()->mutable_ids()->Assign(input.begin(), input.end());
    pb::SamplingParams* sp = req.mutable_sampling();
    sp->set_temperature(static_cast<float>(args_.temperature));
    sp->set_max_tokens(static_cast<int32_t>(args_.max_tokens));
    sp->set_seed(DeriveState(static_cast<uint64_t>(args_.seed), static_cast<uint64_t>(index_),
                             static_cast<uint64_t>(turn), 1));

    bool finished = false;
    Clock::time_point last{};
    const Clock::time_point start = Clock::now();
    std::unique_ptr<grpc::ClientReader<pb::ChatEvent>> reader = stub_->Chat(&ctx, req);
    pb::ChatEvent ev;
    while (reader->Read(&ev)) {
      if (ev.has_delta()) {
        const int k = ev.delta().token_ids_size();
        if (k == 0) continue;
        const Clock::time_point now = Clock::now();
        if (r.completion_tokens == 0) {
          r.ttft_ms = std::chrono::duration<double, std::milli>(now - start).count();
          r.first_token_s = SinceRunStart(now);
        } else {
          r.itl_ms.push_back(std::chrono::duration<double, std::milli>(now - last).count());
        }
        for (int i = 1; i < k; ++i) r.itl_ms.push_back(0);
        last = now;
        r.last_token_s = SinceRunStart(now);
        r.completion_tokens += k;
        generated->insert(generated->end(), ev.delta().token_ids().begin(),
                          ev.delta().token_ids().end());
        if (cancel && r.completion_tokens > cancel_after) ctx.TryCancel();
      } else if (ev.has_finished()) {
        finished = true;
        r.server_queue_ms = ev.finished().usage().queue_ms();
        r.server_prefill_ms = ev.finished().usage().prefill_ms();
      }
    }
    grpc::Status st = reader->Finish();
    if (st.ok() && !finished) {
      st = grpc::Status(grpc::StatusCode::INTERNAL, "stream ended without a finished event");
    }
    if (!st.ok()) {
      TurnResult failed = Failed(turn);
      failed.error_code = RecordError(st);
      failed.error_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      return failed;
    }
    r.ok = true;
    return r;
  }

  const LoadgenArgs& args_;
  const int64_t index_;
  const int64_t vocab_;
  std::unique_ptr<pb::ChatService::Stub> stub_;
  const Clock::time_point* run_start_;
  SessionResult result_;
  uint64_t chaos_round_ = 0;  // sessions start over in duration mode: new draws each time
};

double Round3(double x) { return std::round(x * 1000.0) / 1000.0; }

// Nearest-rank percentile of sorted values (q in (0, 1]).
double Percentile(const std::vector<double>& sorted, double q) {
  const size_t n = sorted.size();
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(n)));
  rank = std::clamp<size_t>(rank, 1, n);
  return sorted[rank - 1];
}

Json Summary(std::vector<double> v) {
  Json j;
  if (v.empty()) {
    j["p50"] = nullptr;
    j["p99"] = nullptr;
    j["mean"] = nullptr;
    j["max"] = nullptr;
    j["n"] = 0;
    return j;
  }
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  j["p50"] = Round3(Percentile(v, 0.5));
  j["p99"] = Round3(Percentile(v, 0.99));
  j["mean"] = Round3(sum / static_cast<double>(v.size()));
  j["max"] = Round3(v.back());
  j["n"] = v.size();
  return j;
}

Json P50P99(std::vector<double> v) {
  Json j;
  if (v.empty()) {
    j["p50"] = nullptr;
    j["p99"] = nullptr;
    return j;
  }
  std::sort(v.begin(), v.end());
  j["p50"] = Round3(Percentile(v, 0.5));
  j["p99"] = Round3(Percentile(v, 0.99));
  return j;
}

// Total length of the union of [first, last] intervals.
double UnionLength(std::vector<std::pair<double, double>> intervals) {
  std::sort(intervals.begin(), intervals.end());
  double total = 0, begin = 0, end = 0;
  bool open = false;
  for (const auto& [b, e] : intervals) {
    if (!open || b > end) {
      if (open) total += end - begin;
      begin = b;
      end = e;
      open = true;
    } else {
      end = std::max(end, e);
    }
  }
  if (open) total += end - begin;
  return total;
}

absl::StatusOr<pb::ModelInfo> GetModelInfo(const std::shared_ptr<grpc::Channel>& channel,
                                           const std::string& api_key) {
  std::unique_ptr<pb::ModelService::Stub> stub = pb::ModelService::NewStub(channel);
  grpc::ClientContext ctx;
  PrepareContext(&ctx, api_key, kUnaryTimeoutS);
  pb::ModelInfo info;
  if (grpc::Status st = stub->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info); !st.ok()) {
    return FromGrpc(st);
  }
  if (info.vocab_size() <= 0 || info.vocab_size() > INT32_MAX) {
    return absl::FailedPreconditionError(
        absl::StrCat("the server reports vocab_size ", info.vocab_size()));
  }
  return info;
}

Json Report(const LoadgenArgs& a, const pb::ModelInfo& info, int64_t channels,
            const std::vector<SessionResult>& results, double wall_s) {
  std::vector<double> ttft, itl, queue, prefill;
  std::vector<std::vector<double>> ttft_by_turn(static_cast<size_t>(a.turns));
  std::map<std::string, std::vector<double>> error_ms;
  int64_t turns_run = 0;
  std::vector<std::pair<double, double>> decode_intervals;
  int64_t turns_ok = 0, tokens = 0, decode_tokens = 0, input_tokens = 0;
  double decode_time_sum = 0;
  std::map<std::string, int64_t> errors;
  std::map<std::string, std::string> examples;
  for (const SessionResult& s : results) {
    for (const auto& [code, n] : s.errors_by_code) errors[code] += n;
    for (const auto& [code, msg] : s.error_examples) examples.emplace(code, msg);
    for (const TurnResult& r : s.turns) {
      ++turns_run;
      if (!r.ok) {
        if (!r.error_code.empty()) error_ms[r.error_code].push_back(r.error_ms);
        continue;
      }
      ++turns_ok;
      tokens += r.completion_tokens;
      input_tokens += r.input_tokens;
      queue.push_back(r.server_queue_ms);
      prefill.push_back(r.server_prefill_ms);
      if (r.completion_tokens == 0) continue;
      ttft.push_back(r.ttft_ms);
      if (r.index >= 0 && r.index < a.turns) {
        ttft_by_turn[static_cast<size_t>(r.index)].push_back(r.ttft_ms);
      }
      itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
      if (r.completion_tokens > 1) {
        decode_tokens += r.completion_tokens - 1;
        decode_time_sum += r.last_token_s - r.first_token_s;
        decode_intervals.emplace_back(r.first_token_s, r.last_token_s);
      }
    }
  }
  const double decode_wall = UnionLength(decode_intervals);
  Json j;
  j["server"] = a.server;
  j["model"] = info.model();
  j["backend"] = info.backend();
  j["vocab_size"] = info.vocab_size();
  j["sessions"] = a.sessions;
  j["turns"] = a.turns;
  j["prompt_tokens"] = a.prompt_tokens;
  j["max_tokens"] = a.max_tokens;
  j["replay"] = a.replay;
  j["temperature"] = a.temperature;
  j["seed"] = a.seed;
  j["channels"] = channels;
  j["turns_ok"] = turns_ok;
  j["turns_failed"] = turns_run - turns_ok;
  j["completion_tokens"] = tokens;
  j["input_tokens"] = input_tokens;
  j["wall_s"] = Round3(wall_s);
  j["ttft_ms"] = Summary(ttft);
  j["itl_ms"] = Summary(itl);
  j["tokens_per_s"] = Round3(wall_s > 0 ? static_cast<double>(tokens) / wall_s : 0);
  j["decode_tokens_per_s"] =
      Round3(decode_wall > 0 ? static_cast<double>(decode_tokens) / decode_wall : 0);
  j["decode_tokens_per_s_per_session"] =
      Round3(decode_time_sum > 0 ? static_cast<double>(decode_tokens) / decode_time_sum : 0);
  Json by_turn = Json::array();
  for (std::vector<double>& v : ttft_by_turn) {
    if (v.empty()) {
      by_turn.push_back(nullptr);
    } else {
      std::sort(v.begin(), v.end());
      by_turn.push_back(Round3(Percentile(v, 0.5)));
    }
  }
  j["ttft_ms_by_turn"] = std::move(by_turn);
  j["server_queue_ms"] = P50P99(queue);
  j["server_prefill_ms"] = P50P99(prefill);
  Json err = Json::object();
  for (const auto& [code, n] : errors) err[code] = n;
  j["errors_by_code"] = std::move(err);
  Json ex = Json::object();
  for (const auto& [code, msg] : examples) ex[code] = msg;
  j["error_examples"] = std::move(ex);
  // How long the failures took to come back: a refusal (RESOURCE_EXHAUSTED) should be quick.
  Json err_ms = Json::object();
  for (auto& [code, v] : error_ms) err_ms[code] = P50P99(std::move(v));
  j["error_ms_by_code"] = std::move(err_ms);
  if (a.duration_s > 0) {
    j["duration_s"] = a.duration_s;
    j["cancel_fraction"] = a.cancel_fraction;
    j["deadline_fraction"] = a.deadline_fraction;
  }
  return j;
}

}  // namespace

int RunLoadgen(int argc, char** argv) {
  LoadgenArgs a;
  FlagSet flags(
      kCommand,
      "Drives a running xlstmd with --sessions concurrent sessions (a thread each), each\n"
      "playing --turns sequential turns of --prompt-tokens random token ids and\n"
      "--max-tokens generated ones; prints one JSON object (TTFT, inter-token latency,\n"
      "throughput, errors by code, median TTFT per turn index). --replay is the\n"
      "stateless baseline: a fresh session per turn that re-sends the whole history.");
  flags.String("server", &a.server, kServerHelp);
  flags.Int("sessions", &a.sessions, 1, 1024, "concurrent sessions", true);
  flags.Int("turns", &a.turns, 1, 100000, "sequential turns per session", true);
  flags.Int("prompt-tokens", &a.prompt_tokens, 1, 1 << 24, "new token ids sent per turn", true);
  flags.Int("max-tokens", &a.max_tokens, 1, INT32_MAX, "tokens generated per turn", true);
  flags.Bool("replay", &a.replay,
             "stateless baseline: fresh session per turn, re-send the whole history");
  flags.Int("seed", &a.seed, 0, INT64_MAX, "seed of the prompt ids and of sampling");
  flags.String("api-key", &a.api_key, kApiKeyHelp);
  flags.Double("temperature", &a.temperature, 0, 100, "sampling temperature (0 = greedy)");
  flags.Int("channels", &a.channels, 0, 256,
            "TCP connections the sessions share round-robin (0 = min(sessions, 4))");
  flags.DurationSeconds("connect-timeout", &a.connect_timeout, 0.001, 3600, kConnectTimeoutHelp);
  a.tls.Declare(flags);
  flags.DurationSeconds("timeout", &a.timeout, 0, 1e6, "deadline of each turn (0 = none)");
  flags.DurationSeconds("duration", &a.duration_s, 0, 1e7,
                        "run until this much time passed (sessions start over in a new "
                        "session after --turns turns); 0 = exactly --turns turns per session");
  flags.Renamed("duration-s", "duration", "s");
  flags.Double("cancel-fraction", &a.cancel_fraction, 0, 1,
               "fraction of turns the client cancels after a random number of tokens");
  flags.Double("deadline-fraction", &a.deadline_fraction, 0, 1,
               "fraction of turns given a 1-20 ms deadline (most end DEADLINE_EXCEEDED)");
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  if (a.server.empty()) {
    flags.PrintError("--server: empty address");
    return kExitUsage;
  }
  if (a.cancel_fraction + a.deadline_fraction > 1) {
    flags.PrintError("--cancel-fraction and --deadline-fraction add up to more than 1");
    return kExitUsage;
  }
  a.api_key = ResolveApiKey(flags.WasSet("api-key"), a.api_key);
  const int64_t channels =
      a.channels > 0 ? std::min(a.channels, a.sessions) : std::min<int64_t>(a.sessions, 4);

  std::vector<std::shared_ptr<grpc::Channel>> pool;
  for (int64_t c = 0; c < channels; ++c) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> ch =
        ConnectChannel(a.server, a.connect_timeout, static_cast<int>(c), a.tls);
    if (!ch.ok()) return ReportRuntimeError(kCommand, ch.status());
    pool.push_back(*std::move(ch));
  }
  absl::StatusOr<pb::ModelInfo> info = GetModelInfo(pool[0], a.api_key);
  if (!info.ok()) return ReportRuntimeError(kCommand, info.status());

  std::vector<SessionResult> results(static_cast<size_t>(a.sessions));
  std::vector<std::unique_ptr<SessionRunner>> runners;
  Clock::time_point run_start;
  for (int64_t s = 0; s < a.sessions; ++s) {
    runners.push_back(std::make_unique<SessionRunner>(
        a, s, info->vocab_size(), pool[static_cast<size_t>(s % channels)], &run_start));
  }
  std::latch go(1);
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(a.sessions));
  for (int64_t s = 0; s < a.sessions; ++s) {
    threads.emplace_back([&, s] {
      go.wait();
      results[static_cast<size_t>(s)] = runners[static_cast<size_t>(s)]->Run();
    });
  }
  run_start = Clock::now();
  go.count_down();  // publishes run_start to every thread
  for (std::thread& t : threads) t.join();
  const double wall_s = std::chrono::duration<double>(Clock::now() - run_start).count();

  const Json report = Report(a, *info, channels, results, wall_s);
  std::printf("%s\n", report.dump().c_str());
  std::fflush(stdout);
  if (report["turns_ok"].get<int64_t>() == 0) {
    std::string line = "no turn succeeded";
    for (const auto& [code, msg] : report["error_examples"].items()) {
      absl::StrAppend(&line, " (", code, ": ", msg.get<std::string>(), ")");
      break;
    }
    std::replace(line.begin(), line.end(), '\n', ' ');
    std::fprintf(stderr, "xlstm %s: error: %s\n", kCommand, line.c_str());
    return kExitRuntime;
  }
  return kExitOk;
}

}  // namespace xlstmd::tools
