// `xlstm chat`: a streaming chat client for a running xlstmd.
//
// Interactive mode reads one user message per stdin line, sends it as a Chat `message` turn on
// the current session and prints the reply on stdout as its deltas arrive (flushed per delta).
// Lines starting with '/' are commands: /new, /fork, /quit, /help ("//text" sends "/text").
// EOF ends the conversation. `--message TEXT` runs exactly one turn instead (for scripts).
//
// stdout carries only reply text (each reply ends with a newline); on a terminal, control
// characters in it (a model may emit ESC, NUL, ...) are shown escaped instead of reaching the
// terminal (terminal_text.h). stderr carries `session: <id>` whenever the current session
// changes, the prompt when stdin and stderr are terminals, `--stats` lines, the `resume with`
// hint on exit, and errors as one line `xlstm chat: error: <CODE>: <message>`. `--message`
// deletes the session it created when it exits (unless --keep), also after a refused turn, so
// that one-shot runs leave nothing behind; a session given with --session is never deleted.
// A failed turn leaves the session at its previous version (server side); interactive mode
// reports it and goes on, --message mode exits 1. In interactive mode Ctrl-C while a reply
// streams cancels that turn (the server rolls it back) and returns to the prompt; Ctrl-C at
// the prompt ends the program (exit 130).
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/base/flags.h"
#include "tools/commands.h"
#include "tools/grpc_client.h"
#include "tools/terminal_text.h"
#include "tools/tool_model.h"
#include "xlstmd/v1/chat.grpc.pb.h"

namespace xlstmd::tools {
namespace {

namespace pb = ::xlstmd::v1;
using Clock = std::chrono::steady_clock;

constexpr const char* kCommand = "chat";
// Deadline of the small unary calls (CreateSession may prefill a system prompt).
constexpr double kUnaryTimeoutS = 300;

struct ChatArgs {
  std::string server = kDefaultServer;
  std::string session;
  std::string message;
  std::string system;
  std::string api_key;
  int64_t max_tokens = 0;
  double temperature = 0;
  int64_t seed = 0;
  double connect_timeout = 5;
  ClientTls tls;
  double timeout = 600;
  bool stats = false;
  bool keep = false;
};

const char* FinishReasonName(pb::FinishReason r) {
  switch (r) {
    case pb::FINISH_REASON_STOP_TOKEN:
      return "stop_token";
    case pb::FINISH_REASON_STOP_STRING:
      return "stop_string";
    case pb::FINISH_REASON_MAX_TOKENS:
      return "max_tokens";
    default:
      return "unspecified";
  }
}

// Interactive Ctrl-C: SIGINT is blocked in every thread (Install must run before gRPC starts
// any) and taken by one thread with sigwait, which cancels the streaming call if there is one
// and otherwise ends the process.
class InterruptWatcher {
 public:
  // The line printed when Ctrl-C at the prompt ends the program.
  void SetExitHint(std::string hint) {
    std::lock_guard<std::mutex> lock(mu_);
    exit_hint_ = std::move(hint);
  }

  void Install() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([this, set] {
      while (true) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) continue;
        std::lock_guard<std::mutex> lock(mu_);
        if (call_ == nullptr) {
          std::fputc('\n', stderr);
          if (!exit_hint_.empty()) std::fputs(exit_hint_.c_str(), stderr);
          std::fflush(stdout);
          std::_Exit(130);
        }
        call_->TryCancel();
        cancelled_ = true;
      }
    }).detach();
  }

  // The call Ctrl-C cancels (nullptr: none). Returns whether Ctrl-C cancelled the previous one.
  bool SetCall(grpc::ClientContext* ctx) {
    std::lock_guard<std::mutex> lock(mu_);
    call_ = ctx;
    const bool cancelled = cancelled_;
    cancelled_ = false;
    return cancelled;
  }

 private:
  std::mutex mu_;
  grpc::ClientContext* call_ = nullptr;
  bool cancelled_ = false;
  std::string exit_hint_;
};

// Warns once on stderr when the server says its weights are random (an `xlstm mkmodel` model),
// so gibberish replies are not mistaken for a broken server. Any failure is ignored: an older
// server, or a key without access to ModelService, just gets no warning.
void WarnIfRandomModel(const std::shared_ptr<grpc::Channel>& channel, const ChatArgs& args) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, args.api_key, kUnaryTimeoutS);
  pb::ModelInfo info;
  const grpc::Status s =
      pb::ModelService::NewStub(channel)->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info);
  if (!s.ok() || !info.random_weights()) return;
  std::fprintf(stderr,
               "xlstm chat: warning: the server's model %s has random weights (written by xlstm "
               "mkmodel): its replies are noise; serve a trained model (xlstmd without --model "
               "serves the bundled demo model)\n",
               info.model().c_str());
}

class ChatClient {
 public:
  // `interrupts` may be null (no Ctrl-C handling).
  ChatClient(const ChatArgs& args, std::shared_ptr<grpc::Channel> channel,
             InterruptWatcher* interrupts)
      : args_(args),
        stub_(pb::ChatService::NewStub(channel)),
        interrupts_(interrupts),
        terminal_(::isatty(STDOUT_FILENO) != 0) {}

  const std::string& session() const { return session_; }

  absl::Status Delete() {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, args_.api_key, kUnaryTimeoutS, session_);
    pb::DeleteSessionRequest req;
    req.set_session_id(session_);
    pb::DeleteSessionResponse resp;
    return FromGrpc(stub_->DeleteSession(&ctx, req, &resp));
  }

  // "resume with ... --session ID" for the current session (for stderr).
  std::string ResumeHint() const {
    if (session_.empty()) return std::string();
    return absl::StrCat("resume with: xlstm chat --server ", args_.server, " --session ",
                        session_, "\n");
  }

  absl::Status CreateSession() {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, args_.api_key, kUnaryTimeoutS);
    pb::CreateSessionRequest req;
    req.set_system_prompt(args_.system);
    pb::Session s;
    if (grpc::Status st = stub_->CreateSession(&ctx, req, &s); !st.ok()) return FromGrpc(st);
    SwitchTo(s.session_id());
    return absl::OkStatus();
  }

  // Checks that `id` exists (and belongs to this caller) before resuming it.
  absl::Status Resume(const std::string& id) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, args_.api_key, kUnaryTimeoutS, id);
    pb::GetSessionRequest req;
    req.set_session_id(id);
    pb::Session s;
    if (grpc::Status st = stub_->GetSession(&ctx, req, &s); !st.ok()) return FromGrpc(st);
    SwitchTo(s.session_id());
    return absl::OkStatus();
  }

  absl::Status Fork() {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, args_.api_key, kUnaryTimeoutS, session_);
    pb::ForkSessionRequest req;
    req.set_session_id(session_);
    pb::Session s;
    if (grpc::Status st = stub_->ForkSession(&ctx, req, &s); !st.ok()) return FromGrpc(st);
    SwitchTo(s.session_id());
    return absl::OkStatus();
  }

  // Runs one turn, writing the reply text to stdout as it streams. A complete reply always
  // ends with a newline on stdout; after an error, partial text is ended with one too.
  absl::Status Turn(const std::string& text) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, args_.api_key, args_.timeout, session_);
    pb::ChatRequest req;
    req.set_session_id(session_);
    req.set_message(text);
    pb::SamplingParams* sp = req.mutable_sampling();
    sp->set_temperature(static_cast<float>(args_.temperature));
    sp->set_seed(static_cast<uint64_t>(args_.seed));
    sp->set_max_tokens(static_cast<int32_t>(args_.max_tokens));

    const Clock::time_point start = Clock::now();
    double ttft_ms = -1;
    int64_t tokens = 0;
    bool finished = false;
    bool printed = false;
    bool ends_with_newline = false;
    pb::TurnFinished fin;
    if (interrupts_ != nullptr) interrupts_->SetCall(&ctx);
    std::unique_ptr<grpc::ClientReader<pb::ChatEvent>> reader = stub_->Chat(&ctx, req);
    pb::ChatEvent ev;
    while (reader->Read(&ev)) {
      if (ev.has_delta()) {
        const pb::TokenDelta& d = ev.delta();
        if (d.token_ids_size() > 0 && ttft_ms < 0) {
          ttft_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        }
        tokens += d.token_ids_size();
        if (!d.text().empty()) {
          const std::string shown = terminal_ ? ForTerminal(d.text()) : d.text();
          std::fwrite(shown.data(), 1, shown.size(), stdout);
          std::fflush(stdout);
          printed = true;
          ends_with_newline = d.text().back() == '\n';
        }
      } else if (ev.has_finished()) {
        finished = true;
        fin = ev.finished();
      }
    }
    const grpc::Status st = reader->Finish();
    const bool interrupted = interrupts_ != nullptr && interrupts_->SetCall(nullptr);
    const bool complete = st.ok() && finished;
    if ((complete || printed) && !ends_with_newline) std::fputc('\n', stdout);
    std::fflush(stdout);
    if (interrupted && !complete) {
      return absl::CancelledError("reply interrupted; the session stays at its previous version");
    }
    if (!st.ok()) return FromGrpc(st);
    if (!finished) return absl::InternalError("the reply stream ended without a finished event");
    if (args_.stats) {
      const double total_ms =
          std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      std::fprintf(stderr,
                   "finished: reason=%s completion_tokens=%lld version=%llu ttft_ms=%.1f "
                   "total_ms=%.1f\n",
                   FinishReasonName(fin.finish_reason()), static_cast<long long>(tokens),
                   static_cast<unsigned long long>(fin.session_version()), ttft_ms, total_ms);
    }
    return absl::OkStatus();
  }

 private:
  void SwitchTo(const std::string& id) {
    session_ = id;
    std::fprintf(stderr, "session: %s\n", id.c_str());
    std::fflush(stderr);
    if (interrupts_ != nullptr) interrupts_->SetExitHint(ResumeHint());
  }

  const ChatArgs& args_;
  std::unique_ptr<pb::ChatService::Stub> stub_;
  InterruptWatcher* interrupts_;
  const bool terminal_;
  std::string session_;
};

void ReportAndContinue(const absl::Status& s) {
  std::string text = s.ToString();
  for (char& c : text) c = c == '\n' ? ' ' : c;
  std::fprintf(stderr, "xlstm %s: error: %s\n", kCommand, text.c_str());
  std::fflush(stderr);
}

int Interactive(ChatClient& client) {
  const bool prompt = ::isatty(STDIN_FILENO) && ::isatty(STDERR_FILENO);
  std::string line;
  while (true) {
    if (prompt) {
      std::fputs("> ", stderr);
      std::fflush(stderr);
    }
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line[0] == '/' && line.rfind("//", 0) != 0) {
      if (line == "/quit" || line == "/exit") break;
      absl::Status s;
      if (line == "/new") {
        s = client.CreateSession();
      } else if (line == "/fork") {
        s = client.Fork();
      } else if (line == "/help") {
        std::fputs(
            "commands: /new (new session), /fork (fork this session and switch to the fork), "
            "/quit; //text sends /text\n",
            stderr);
      } else {
        std::fprintf(stderr,
                     "xlstm %s: error: unknown command '%s' (commands: /new, /fork, /quit, "
                     "/help)\n",
                     kCommand, line.c_str());
      }
      if (!s.ok()) ReportAndContinue(s);
      continue;
    }
    if (line.rfind("//", 0) == 0) line.erase(0, 1);
    if (absl::Status s = client.Turn(line); !s.ok()) ReportAndContinue(s);
  }
  std::fputs(client.ResumeHint().c_str(), stderr);
  return kExitOk;
}

}  // namespace

int RunChat(int argc, char** argv) {
  ChatArgs a;
  FlagSet flags(
      kCommand,
      "Streaming chat with a running xlstmd. Reads one message per stdin line and prints\n"
      "the reply as it streams; `session: <id>` goes to stderr whenever the session\n"
      "changes. Commands: /new (new session), /fork (fork the current session and\n"
      "switch to the fork), /help, /quit; //text sends /text; EOF also ends, and so does\n"
      "Ctrl-C at the prompt (exit 130; during a reply it cancels the reply). On exit it\n"
      "prints how to resume the session. With --message, runs one turn and exits,\n"
      "deleting the session it created unless --keep. On a terminal, control characters\n"
      "in replies are shown escaped. Errors: one line\n"
      "`xlstm chat: error: <CODE>: <message>` on stderr.");
  flags.String("server", &a.server, kServerHelp);
  flags.String("session", &a.session, "resume this session id instead of creating one");
  flags.String("message", &a.message, "send this one message, print the reply, exit");
  flags.String("system", &a.system, "system prompt of the sessions this command creates");
  flags.String("api-key", &a.api_key, kApiKeyHelp);
  flags.Int("max-tokens", &a.max_tokens, 0, INT32_MAX,
            "most tokens per reply (0 = the server's default)");
  flags.Double("temperature", &a.temperature, 0, 100, "sampling temperature (0 = greedy)");
  flags.Int("seed", &a.seed, 0, INT64_MAX, "sampling seed");
  flags.DurationSeconds("connect-timeout", &a.connect_timeout, 0.001, 3600, kConnectTimeoutHelp);
  a.tls.Declare(flags);
  flags.DurationSeconds("timeout", &a.timeout, 0, 1e6, "deadline of each reply (0 = none)");
  flags.Bool("stats", &a.stats,
             "after each reply, print finish reason, tokens, version and latency on stderr");
  flags.Bool("keep", &a.keep,
             "with --message: keep the session it creates (and print how to resume it)");
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  if (a.server.empty()) {
    flags.PrintError("--server: empty address");
    return kExitUsage;
  }
  if (flags.WasSet("session") && a.session.empty()) {
    flags.PrintError("--session: empty session id");
    return kExitUsage;
  }
  if (flags.WasSet("message") && a.message.empty()) {
    flags.PrintError("--message: empty message");
    return kExitUsage;
  }
  a.api_key = ResolveApiKey(flags.WasSet("api-key"), a.api_key);

  const bool interactive = !flags.WasSet("message");
  static InterruptWatcher interrupts;  // its thread outlives this function
  if (interactive) interrupts.Install();  // before gRPC starts its threads
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      ConnectChannel(a.server, a.connect_timeout, 0, a.tls);
  if (!channel.ok()) return ReportRuntimeError(kCommand, channel.status());
  WarnIfRandomModel(*channel, a);
  ChatClient client(a, *channel, interactive ? &interrupts : nullptr);
  const absl::Status opened = a.session.empty() ? client.CreateSession() : client.Resume(a.session);
  if (!opened.ok()) return ReportRuntimeError(kCommand, opened);
  if (!interactive) {
    const absl::Status s = client.Turn(a.message);
    // A one-shot run cleans up the session it created, whether the turn ran or was refused.
    if (a.session.empty() && !a.keep) {
      if (absl::Status d = client.Delete(); !d.ok() && s.ok()) {
        return ReportRuntimeError(kCommand, d);
      }
    } else if (s.ok()) {
      std::fputs(client.ResumeHint().c_str(), stderr);
    }
    if (!s.ok()) return ReportRuntimeError(kCommand, s);
    return kExitOk;
  }
  return Interactive(client);
}

}  // namespace xlstmd::tools
