// Client plumbing shared by the subcommands that talk to a running xlstmd over gRPC (`chat`,
// `loadgen`): connecting with a deadline, per-call metadata and deadlines, and the mapping of a
// gRPC status to absl::Status (the codes are numerically identical).
//
// gRPC headers are slow to compile: include this only from the client subcommands (cmd_chat.cc,
// cmd_loadgen.cc, cmd_sessions.cc).
#ifndef XLSTMD_TOOLS_GRPC_CLIENT_H_
#define XLSTMD_TOOLS_GRPC_CLIENT_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/status.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace xlstmd::tools {

// Where xlstmd listens by default (--listen 0.0.0.0:50051), as seen from the same machine.
inline constexpr const char* kDefaultServer = "127.0.0.1:50051";
inline constexpr const char* kServerHelp = "daemon address HOST:PORT (any gRPC target)";
inline constexpr const char* kApiKeyEnv = "XLSTMD_API_KEY";
inline constexpr const char* kApiKeyHelp =
    "API key, sent as `authorization: Bearer KEY` (default: $XLSTMD_API_KEY)";
inline constexpr const char* kConnectTimeoutHelp =
    "how long to wait for the connection before giving up";

inline absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// The flag value when given, else $XLSTMD_API_KEY, else "" (no authorization header).
inline std::string ResolveApiKey(bool flag_set, const std::string& flag_value) {
  if (flag_set) return flag_value;
  const char* env = std::getenv(kApiKeyEnv);
  return env == nullptr ? std::string() : std::string(env);
}

inline std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

// --tls-ca / --tls-cert / --tls-key: connect over TLS, trusting the CA bundle (and presenting
// a client certificate for a daemon that wants one). All empty: plaintext.
struct ClientTls {
  std::string ca, cert, key;  // PEM file paths
  bool enabled() const { return !ca.empty() || !cert.empty(); }

  template <typename Flags>
  void Declare(Flags& flags) {
    flags.String("tls-ca", &ca,
                 "connect over TLS, trusting this PEM CA bundle (the daemon's --tls-cert issuer)");
    flags.String("tls-cert", &cert, "PEM client certificate, for a daemon with --tls-client-ca");
    flags.String("tls-key", &key, "PEM private key of --tls-cert");
  }
};

inline absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path) {
  if (path.empty()) return std::string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": cannot read it"));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const ClientTls& tls) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  if (tls.cert.empty() != tls.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  grpc::SslCredentialsOptions o;
  absl::StatusOr<std::string> ca = ReadPem("--tls-ca", tls.ca);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<std::string> cert = ReadPem("--tls-cert", tls.cert);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("--tls-key", tls.key);
  if (!key.ok()) return key.status();
  o.pem_root_certs = *std::move(ca);  // empty: the system's roots
  o.pem_cert_chain = *std::move(cert);
  o.pem_private_key = *std::move(key);
  return grpc::SslCredentials(o);
}

// `--server` must name a port ("localhost" alone would only fail later as "connection
// failed"): HOST:PORT, [IPV6]:PORT, or a gRPC target with a scheme (unix:, dns:, ipv4:, ...).
inline absl::Status CheckServerTarget(const std::string& server) {
  for (const char* scheme : {"unix:", "unix-abstract:", "vsock:", "dns:", "ipv4:", "ipv6:"}) {
    if (server.rfind(scheme, 0) == 0) return absl::OkStatus();
  }
  const size_t colon = server.rfind(':');
  const bool bracketed = !server.empty() && server[0] == '[';
  const bool has_port =
      colon != std::string::npos && colon + 1 < server.size() &&
      server.find_first_not_of("0123456789", colon + 1) == std::string::npos &&
      (!bracketed || (colon > 0 && server[colon - 1] == ']')) &&
      (bracketed || server.find(':') == colon);
  if (has_port) return absl::OkStatus();
  const std::string host = bracketed ? "[::1]" : server.substr(0, server.find(':'));
  return absl::InvalidArgumentError(absl::StrCat("--server ", server,
                                                 ": no port; use HOST:PORT (e.g. ", host,
                                                 ":50051) or a gRPC target such as unix:/path"));
}

// Opens a channel to `server` (TLS when `tls` says so) and waits until it is READY. A refused
// or failed connection (a TLS handshake failure included) fails at once; a silent peer fails
// after `timeout_s`. Both are UNAVAILABLE. Distinct `channel_index` values get distinct TCP
// connections.
inline absl::StatusOr<std::shared_ptr<grpc::Channel>> ConnectChannel(const std::string& server,
                                                                     double timeout_s,
                                                                     int channel_index = 0,
                                                                     const ClientTls& tls = {}) {
  if (absl::Status s = CheckServerTarget(server); !s.ok()) return s;
  grpc::ChannelArguments args;
  // Channels with different arguments never share a subchannel (connection).
  args.SetInt("xlstm.channel_index", channel_index);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = ChannelCredentials(tls);
  if (!creds.ok()) return creds.status();
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(server, *creds, args);
  const auto deadline = DeadlineIn(timeout_s);
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) {
      return absl::UnavailableError(
          absl::StrCat("cannot connect to ", server, " (connection failed)"));
    }
    if (!channel->WaitForStateChange(state, deadline)) {
      return absl::UnavailableError(
          absl::StrFormat("cannot connect to %s (no connection within %g s)", server, timeout_s));
    }
    state = channel->GetState(/*try_to_connect=*/true);
  }
  return channel;
}

// Adds `authorization: Bearer <api_key>` when a key is set, a deadline when timeout_s > 0, and
// `x-session-id` when the call is about one session: a ring-hash proxy in front of several
// replicas routes on it, so a session's calls keep reaching the pod that holds its state
// (docs/deploy.md).
inline void PrepareContext(grpc::ClientContext* ctx, const std::string& api_key, double timeout_s,
                           const std::string& session_id = std::string()) {
  if (!api_key.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", api_key));
  if (timeout_s > 0) ctx->set_deadline(DeadlineIn(timeout_s));
  if (!session_id.empty()) ctx->AddMetadata("x-session-id", session_id);
}

}  // namespace xlstmd::tools

#endif  // XLSTMD_TOOLS_GRPC_CLIENT_H_
