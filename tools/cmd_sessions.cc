// `xlstm sessions list|get|delete|fork|rewind|export|import` and `xlstm info`: session
// management and model info of a running xlstmd, for people and (with --json) for scripts.
//
// Every verb is one gRPC call (list: one per page) with the same connection flags as `chat`.
// Text output is one line per session, `ID version=N tokens=N updated=ISO8601`; --json prints
// one JSON object (list: an array) with the proto's field names. Errors are one line
// `xlstm sessions: error: <CODE>: <message>` on stderr and exit 1; flag errors exit 2.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/base/flags.h"
#include "core/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "tools/grpc_client.h"
#include "tools/tool_model.h"
#include "xlstmd/v1/chat.grpc.pb.h"

namespace xlstmd::tools {
namespace {

namespace pb = ::xlstmd::v1;

constexpr const char* kVerbs = "list, get, delete, fork, rewind, export, import";
// Snapshots move in chunks well under gRPC's default 4 MiB message limit.
constexpr size_t kImportChunkBytes = 1 << 20;

struct ClientArgs {
  std::string server = kDefaultServer;
  std::string api_key;
  double connect_timeout = 5;
  double timeout = 60;
  ClientTls tls;
  bool json = false;

  void Declare(FlagSet& flags) {
    flags.String("server", &server, kServerHelp);
    flags.String("api-key", &api_key, kApiKeyHelp);
    flags.DurationSeconds("connect-timeout", &connect_timeout, 0.001, 3600, kConnectTimeoutHelp);
    flags.DurationSeconds("timeout", &timeout, 0.001, 1e6, "deadline of each call");
    tls.Declare(flags);
    flags.Bool("json", &json, "print JSON (for scripts) instead of text");
  }
};

class Calls {
 public:
  Calls(const ClientArgs& args, std::shared_ptr<grpc::Channel> channel)
      : args_(args),
        chat_(pb::ChatService::NewStub(channel)),
        model_(pb::ModelService::NewStub(channel)) {}

  std::unique_ptr<grpc::ClientContext> Context() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(DeadlineIn(args_.timeout));
    if (!args_.api_key.empty()) ctx->AddMetadata("authorization", "Bearer " + args_.api_key);
    return ctx;
  }

  pb::ChatService::Stub& chat() { return *chat_; }
  pb::ModelService::Stub& model() { return *model_; }

 private:
  const ClientArgs& args_;
  std::unique_ptr<pb::ChatService::Stub> chat_;
  std::unique_ptr<pb::ModelService::Stub> model_;
};

std::string IsoTime(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

nlohmann::json SessionJson(const pb::Session& s) {
  return {{"session_id", s.session_id()},           {"version", s.version()},
          {"token_count", s.token_count()},         {"created_unix_ms", s.created_unix_ms()},
          {"updated_unix_ms", s.updated_unix_ms()}, {"turn_running", s.turn_running()}};
}

std::string SessionLine(const pb::Session& s) {
  return absl::StrCat(s.session_id(), " version=", s.version(), " tokens=", s.token_count(),
                      " updated=", IsoTime(s.updated_unix_ms()),
                      s.turn_running() ? " turn_running" : "");
}

void PrintSession(const ClientArgs& a, const pb::Session& s) {
  if (a.json) {
    std::printf("%s\n", SessionJson(s).dump().c_str());
  } else {
    std::printf("%s\n", SessionLine(s).c_str());
  }
}

absl::Status List(const ClientArgs& a, Calls& calls, int64_t page_size) {
  nlohmann::json all = nlohmann::json::array();
  std::string token;
  size_t count = 0;
  do {
    pb::ListSessionsRequest req;
    req.set_page_size(static_cast<int32_t>(page_size));
    req.set_page_token(token);
    pb::ListSessionsResponse resp;
    auto ctx = calls.Context();
    XLSTMD_RETURN_IF_ERROR(FromGrpc(calls.chat().ListSessions(ctx.get(), req, &resp)));
    for (const pb::Session& s : resp.sessions()) {
      ++count;
      if (a.json) {
        all.push_back(SessionJson(s));
      } else {
        std::printf("%s\n", SessionLine(s).c_str());
      }
    }
    token = resp.next_page_token();
  } while (!token.empty());
  if (a.json) std::printf("%s\n", all.dump().c_str());
  if (!a.json && ::isatty(STDERR_FILENO)) std::fprintf(stderr, "%zu sessions\n", count);
  return absl::OkStatus();
}

absl::Status Export(Calls& calls, const std::string& id, const std::string& out) {
  pb::ExportSessionRequest req;
  req.set_session_id(id);
  auto ctx = calls.Context();
  std::unique_ptr<grpc::ClientReader<pb::SnapshotChunk>> reader =
      calls.chat().ExportSession(ctx.get(), req);
  // Written beside the target and renamed at the end: a failed export never leaves a
  // truncated snapshot under the requested name.
  const bool to_stdout = out == "-";
  const std::string tmp = to_stdout ? std::string() : out + ".partial";
  std::ofstream file;
  if (!to_stdout) {
    file.open(tmp, std::ios::binary | std::ios::trunc);
    if (!file) return absl::InvalidArgumentError(absl::StrCat("--out ", out, ": cannot write it"));
  }
  uint64_t bytes = 0;
  pb::SnapshotChunk chunk;
  while (reader->Read(&chunk)) {
    bytes += chunk.data().size();
    if (to_stdout) {
      std::fwrite(chunk.data().data(), 1, chunk.data().size(), stdout);
    } else {
      file.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    }
  }
  const absl::Status s = FromGrpc(reader->Finish());
  if (!to_stdout) {
    file.close();
    std::error_code ec;
    if (!s.ok() || !file) {
      std::filesystem::remove(tmp, ec);
      if (s.ok()) return absl::DataLossError(absl::StrCat("--out ", out, ": write failed"));
      return s;
    }
    std::filesystem::rename(tmp, out, ec);
    if (ec) {
      std::filesystem::remove(tmp, ec);
      return absl::InvalidArgumentError(absl::StrCat("--out ", out, ": cannot write it"));
    }
  }
  if (!s.ok()) return s;
  std::fprintf(stderr, "exported session %s: %llu bytes%s%s\n", id.c_str(),
               static_cast<unsigned long long>(bytes), to_stdout ? "" : " to ",
               to_stdout ? "" : out.c_str());
  return absl::OkStatus();
}

absl::StatusOr<pb::Session> Import(Calls& calls, const std::string& in) {
  std::ifstream file(in, std::ios::binary);
  if (!file) return absl::InvalidArgumentError(absl::StrCat("--in ", in, ": cannot read it"));
  std::error_code ec;
  const uint64_t total = std::filesystem::file_size(in, ec);
  auto ctx = calls.Context();
  pb::Session session;
  std::unique_ptr<grpc::ClientWriter<pb::SnapshotChunk>> writer =
      calls.chat().ImportSession(ctx.get(), &session);
  std::string buf(kImportChunkBytes, '\0');
  bool first = true;
  while (file) {
    file.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = file.gcount();
    if (n <= 0 && !first) break;
    pb::SnapshotChunk chunk;
    chunk.set_data(buf.data(), static_cast<size_t>(n));
    if (first && !ec) chunk.set_total_bytes(total);
    first = false;
    if (!writer->Write(chunk)) break;  // the server ended the call: Finish says why
  }
  writer->WritesDone();
  XLSTMD_RETURN_IF_ERROR(FromGrpc(writer->Finish()));
  return session;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(ClientArgs& a, const FlagSet& flags) {
  a.api_key = ResolveApiKey(flags.WasSet("api-key"), a.api_key);
  return ConnectChannel(a.server, a.connect_timeout, 0, a.tls);
}

int SessionsUsage() {
  std::fprintf(stderr,
               "usage: xlstm sessions <verb> [flags]   (verbs: %s; `xlstm sessions <verb> "
               "--help` for each)\n",
               kVerbs);
  return kExitUsage;
}

}  // namespace

int RunSessions(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    if (argc >= 2) {
      std::printf(
          "usage: xlstm sessions <verb> [flags]\n\n"
          "Manages the sessions of a running xlstmd:\n"
          "  list     every session (id, version, tokens, last update)\n"
          "  get      one session (--session ID)\n"
          "  delete   delete a session and its stored state (--session ID)\n"
          "  fork     copy a session, optionally at an earlier --version (--session ID)\n"
          "  rewind   move a session back to --version N (needs --keep-turn-checkpoints)\n"
          "  export   write a session's snapshot to --out FILE (- = stdout)\n"
          "  import   create a session from a snapshot file (--in FILE)\n\n"
          "Run `xlstm sessions <verb> --help` for its flags.\n");
      return kExitOk;
    }
    return SessionsUsage();
  }
  const std::string verb = argv[1];
  const std::string command = "sessions " + verb;
  ClientArgs a;
  std::string session, out, in;
  int64_t version = -1, page_size = 0;
  FlagSet flags(command, absl::StrCat("`xlstm sessions ", verb, "`: see `xlstm sessions --help`."));
  a.Declare(flags);
  const bool needs_session =
      verb == "get" || verb == "delete" || verb == "fork" || verb == "rewind" || verb == "export";
  if (verb == "list") {
    flags.Int("page-size", &page_size, 0, INT32_MAX,
              "sessions per ListSessions call (0 = the "
              "server's default)");
  } else if (needs_session) {
    flags.String("session", &session, "session id", true);
    if (verb == "fork" || verb == "rewind") {
      flags.Int("version", &version, 0, INT64_MAX,
                verb == "fork" ? "fork the session as it was at this version (default: current)"
                               : "the version to rewind to",
                verb == "rewind");
    }
    if (verb == "export") flags.String("out", &out, "snapshot file to write (- = stdout)", true);
  } else if (verb == "import") {
    flags.String("in", &in, "snapshot file written by `xlstm sessions export`", true);
  } else {
    std::fprintf(stderr, "xlstm sessions: error: unknown verb '%s' (verbs: %s)\n", verb.c_str(),
                 kVerbs);
    return kExitUsage;
  }
  if (const int stop = ParseOrExitCode(flags, argc - 1, argv + 1); stop >= 0) return stop;
  if (needs_session && session.empty()) {
    flags.PrintError("--session: empty session id");
    return kExitUsage;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect(a, flags);
  if (!channel.ok()) return ReportRuntimeError(command, channel.status());
  Calls calls(a, *channel);

  absl::Status status;
  if (verb == "list") {
    status = List(a, calls, page_size);
  } else if (verb == "export") {
    status = Export(calls, session, out);
  } else if (verb == "import") {
    absl::StatusOr<pb::Session> s = Import(calls, in);
    status = s.status();
    if (s.ok()) PrintSession(a, *s);
  } else if (verb == "delete") {
    pb::DeleteSessionRequest req;
    req.set_session_id(session);
    pb::DeleteSessionResponse resp;
    auto ctx = calls.Context();
    status = FromGrpc(calls.chat().DeleteSession(ctx.get(), req, &resp));
    if (status.ok()) {
      if (a.json) {
        std::printf("%s\n",
                    nlohmann::json({{"session_id", session}, {"deleted", true}}).dump().c_str());
      } else {
        std::printf("deleted %s\n", session.c_str());
      }
    }
  } else {
    pb::Session s;
    auto ctx = calls.Context();
    if (verb == "get") {
      pb::GetSessionRequest req;
      req.set_session_id(session);
      status = FromGrpc(calls.chat().GetSession(ctx.get(), req, &s));
    } else if (verb == "fork") {
      pb::ForkSessionRequest req;
      req.set_session_id(session);
      if (version >= 0) req.set_version(static_cast<uint64_t>(version));
      status = FromGrpc(calls.chat().ForkSession(ctx.get(), req, &s));
    } else {  // rewind
      pb::RewindSessionRequest req;
      req.set_session_id(session);
      req.set_version(static_cast<uint64_t>(version));
      status = FromGrpc(calls.chat().RewindSession(ctx.get(), req, &s));
    }
    if (status.ok()) PrintSession(a, s);
  }
  if (!status.ok()) return ReportRuntimeError(command, status);
  return kExitOk;
}

int RunInfo(int argc, char** argv) {
  ClientArgs a;
  FlagSet flags("info",
                "Prints the model a running xlstmd serves (GetModelInfo): family, dimensions,\n"
                "vocabulary, state bytes per session, backend and weight storage.");
  a.Declare(flags);
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect(a, flags);
  if (!channel.ok()) return ReportRuntimeError("info", channel.status());
  Calls calls(a, *channel);
  pb::ModelInfo m;
  auto ctx = calls.Context();
  const absl::Status s =
      FromGrpc(calls.model().GetModelInfo(ctx.get(), pb::GetModelInfoRequest(), &m));
  if (!s.ok()) return ReportRuntimeError("info", s);
  const nlohmann::ordered_json j = {{"model", m.model()},
                                    {"family", m.family()},
                                    {"vocab_size", m.vocab_size()},
                                    {"embedding_dim", m.embedding_dim()},
                                    {"num_blocks", m.num_blocks()},
                                    {"num_heads", m.num_heads()},
                                    {"qk_head_dim", m.qk_head_dim()},
                                    {"v_head_dim", m.v_head_dim()},
                                    {"state_bytes_per_session", m.state_bytes_per_session()},
                                    {"backend", m.backend()},
                                    {"isa", m.isa()},
                                    {"weight_dtype", m.weight_dtype()},
                                    {"weights_digest", m.weights_digest()},
                                    {"max_snapshot_bytes", m.max_snapshot_bytes()},
                                    {"random_weights", m.random_weights()},
                                    {"server_version", m.server_version()},
                                    {"server_commit", m.server_commit()},
                                    {"server_build_type", m.server_build_type()}};
  if (a.json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    for (const auto& [k, v] : j.items()) {
      std::printf("%-24s %s\n", k.c_str(),
                  v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
    }
  }
  return kExitOk;
}

}  // namespace xlstmd::tools
