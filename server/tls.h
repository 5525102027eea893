// TLS for the daemon's listeners: the PEM files of --tls-cert / --tls-key / --tls-client-ca,
// read and checked once at start-up (a bad file is a startup error naming it), then turned
// into gRPC server credentials; the HTTP listener reads the same files (http_server.h).
#ifndef XLSTMD_SERVER_TLS_H_
#define XLSTMD_SERVER_TLS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"
#include "server/options.h"

namespace xlstmd::server {

struct TlsFiles {
  std::string cert_path, key_path, client_ca_path;  // as given ("" = unset)
  std::string cert_pem, key_pem, client_ca_pem;
  std::vector<std::string> warnings;  // e.g. a key file others may read; logged at start
  bool enabled() const { return !cert_path.empty(); }
  bool mutual() const { return !client_ca_path.empty(); }
};

// Empty TlsFiles when --tls-cert is unset. INVALID_ARGUMENT naming the file when one cannot
// be read, holds no certificate / key, or the key does not belong to the certificate.
absl::StatusOr<TlsFiles> LoadTlsFiles(const ServerOptions& options);

// Insecure credentials when !tls.enabled().
std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const TlsFiles& tls);

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_TLS_H_
