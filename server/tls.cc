#include "server/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace xlstmd::server {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": cannot read it"));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

std::unique_ptr<BIO, BioDeleter> Bio(const std::string& pem) {
  return std::unique_ptr<BIO, BioDeleter>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of a PEM bundle, or null.
std::unique_ptr<X509, X509Deleter> FirstCert(const std::string& pem) {
  auto bio = Bio(pem);
  return std::unique_ptr<X509, X509Deleter>(
      bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
}

}  // namespace

absl::StatusOr<TlsFiles> LoadTlsFiles(const ServerOptions& o) {
  TlsFiles t;
  if (o.tls_cert.empty()) return t;
  t.cert_path = o.tls_cert;
  t.key_path = o.tls_key;
  t.client_ca_path = o.tls_client_ca;
  absl::StatusOr<std::string> cert = ReadFile("--tls-cert", o.tls_cert);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile("--tls-key", o.tls_key);
  if (!key.ok()) return key.status();
  t.cert_pem = *std::move(cert);
  t.key_pem = *std::move(key);
  // As for the API keys file: group read is how a mounted Secret reaches a non-root daemon;
  // others reading, or the group writing, the private key is a leak or a tampering path.
  struct stat st {};
  if (::stat(o.tls_key.c_str(), &st) == 0 && (st.st_mode & 027) != 0) {
    t.warnings.push_back(absl::StrCat(
        "--tls-key ", o.tls_key, " is ",
        (st.st_mode & 007) != 0 ? "accessible by others" : "writable by its group", " (mode ",
        absl::StrFormat("%04o", st.st_mode & 0777), "); chmod 600 (or 640) it"));
  }
  std::unique_ptr<X509, X509Deleter> x509 = FirstCert(t.cert_pem);
  if (x509 == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert ", o.tls_cert, ": no PEM certificate in it"));
  }
  auto kbio = Bio(t.key_pem);
  std::unique_ptr<EVP_PKEY, KeyDeleter> pkey(
      kbio ? PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (pkey == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-key ", o.tls_key, ": no PEM private key in it (or it is encrypted)"));
  }
  if (X509_check_private_key(x509.get(), pkey.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("--tls-key ", o.tls_key,
                                                   " does not belong to the certificate in ",
                                                   o.tls_cert));
  }
  if (!o.tls_client_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadFile("--tls-client-ca", o.tls_client_ca);
    if (!ca.ok()) return ca.status();
    t.client_ca_pem = *std::move(ca);
    if (FirstCert(t.client_ca_pem) == nullptr) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-client-ca ", o.tls_client_ca, ": no PEM certificate in it"));
    }
  }
  return t;
}

std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(
      tls.mutual() ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                   : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl.pem_root_certs = tls.client_ca_pem;
  ssl.pem_key_cert_pairs.push_back({tls.key_pem, tls.cert_pem});
  return grpc::SslServerCredentials(ssl);
}

}  // namespace xlstmd::server
