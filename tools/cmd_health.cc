// `xlstm health`: one grpc.health.v1 Check against a running xlstmd, for container
// HEALTHCHECKs, `helm test` and scripts. Exit status is the whole answer:
//   0  the service is SERVING
//   1  anything else: NOT_SERVING (loading, draining), an unknown service name, no connection,
//      no answer within --timeout
//   2  bad usage (a flag error)
// One line on stdout says which (`SERVING`, `NOT_SERVING`, ...); on 1 the reason goes to stderr.
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/base/flags.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tools/commands.h"
#include "tools/grpc_client.h"

namespace xlstmd::tools {

int RunHealth(int argc, char** argv) {
  std::string server = kDefaultServer;
  std::string service;
  std::string api_key;
  double timeout = 5;
  ClientTls tls;
  FlagSet flags("health",
                "Asks a running xlstmd whether it serves (grpc.health.v1 Check). Exit 0: SERVING;\n"
                "1: not serving (model loading, draining), unknown service, or no answer within\n"
                "--timeout; 2: bad usage. For container HEALTHCHECKs and `helm test`.");
  flags.String("server", &server, kServerHelp);
  flags.String("service", &service,
               "service name to check: empty = the whole server, or xlstmd.v1.ChatService");
  flags.String("api-key", &api_key, kApiKeyHelp);
  flags.DurationSeconds("timeout", &timeout, 0.001, 3600,
                        "connecting and answering together must take less than this");
  tls.Declare(flags);
  if (const int stop = ParseOrExitCode(flags, argc, argv); stop >= 0) return stop;
  if (const absl::Status s = CheckServerTarget(server); !s.ok()) {
    std::fprintf(stderr, "xlstm health: error: %s\n", std::string(s.message()).c_str());
    return kExitUsage;
  }
  api_key = ResolveApiKey(flags.WasSet("api-key"), api_key);

  const auto fail = [](const absl::Status& s) {
    std::printf("UNAVAILABLE\n");
    std::fprintf(stderr, "xlstm health: %s: %s\n", absl::StatusCodeToString(s.code()).c_str(),
                 std::string(s.message()).c_str());
    return kExitRuntime;
  };
  // One deadline for the connection and the call: a HEALTHCHECK must not outlive its period.
  const auto deadline = DeadlineIn(timeout);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = ConnectChannel(server, timeout, 0, tls);
  if (!channel.ok()) return fail(channel.status());
  grpc::ClientContext ctx;
  PrepareContext(&ctx, api_key, 0);
  ctx.set_deadline(deadline);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status st =
      grpc::health::v1::Health::NewStub(*channel)->Check(&ctx, req, &resp);
  if (!st.ok()) return fail(FromGrpc(st));
  const std::string name =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
  std::printf("%s\n", name.c_str());
  if (resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) return kExitOk;
  std::fprintf(stderr, "xlstm health: %s is %s\n",
               service.empty() ? "the server" : service.c_str(), name.c_str());
  return kExitRuntime;
}

}  // namespace xlstmd::tools
