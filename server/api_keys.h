// API keys: who may call the daemon, and as which tenant.
//
// File format (docs/server.md): one `<tenant> <key>` pair per line, separated by spaces or
// tabs, optionally followed by the tenant's quotas (`max_running=N max_queued=N
// max_sessions=N`, overriding the --tenant-max-* options; a tenant's lines must agree); blank lines and lines whose first non-blank character is '#' are ignored. A tenant
// is 1-128 characters of [A-Za-z0-9._@-]; a key is 1-4096 printable ASCII characters
// without spaces. A tenant may have several keys (rotation); a key belongs to one tenant.
// A file that is malformed or holds no key is rejected as a whole.
//
// Keys are kept only as SHA-256 digests, and a presented key is compared against every
// digest in constant time, so neither a key's content nor which entry matched leaks
// through timing. Keys never appear in error messages or logs.
//
// Immutable after Load/Parse; any thread. No gRPC here: the transport hands over the raw
// `authorization` metadata values.
#ifndef XLSTMD_SERVER_API_KEYS_H_
#define XLSTMD_SERVER_API_KEYS_H_

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/engine/tenant_quota.h"

namespace xlstmd::server {

class ApiKeys {
 public:
  // `source` names the text in error messages (the file path).
  static absl::StatusOr<ApiKeys> Parse(absl::string_view text, absl::string_view source);
  // Reads and parses `path`. `warnings` (may be null) receives advice that does not stop
  // the start, e.g. a file readable by other users.
  static absl::StatusOr<ApiKeys> LoadFile(const std::filesystem::path& path,
                                          std::vector<std::string>* warnings);

  // The tenant of `key`, or nullopt. Time depends only on the number of keys and the length
  // of `key`.
  std::optional<std::string> TenantForKey(absl::string_view key) const;
  size_t size() const { return entries_.size(); }
  // Quotas given after keys (`alice KEY max_running=2`), by tenant.
  const core::TenantQuotas& quotas() const { return quotas_; }

 private:
  using Digest = std::array<uint8_t, 32>;
  struct Entry {
    Digest digest;
    std::string tenant;
  };
  static Digest Sha256(absl::string_view data);

  std::vector<Entry> entries_;
  core::TenantQuotas quotas_;
};

// Turns a call's `authorization` metadata into a tenant. Without keys everyone is the
// anonymous tenant "" and the metadata is ignored. With keys the call needs exactly one
// `authorization: Bearer <key>` value naming a known key; anything else is UNAUTHENTICATED
// with a message that says what was wrong (never echoing the key).
class Authenticator {
 public:
  Authenticator() = default;  // no authentication
  explicit Authenticator(ApiKeys keys) : keys_(std::move(keys)) {}

  bool enabled() const { return keys_.has_value(); }
  absl::StatusOr<std::string> Authenticate(absl::Span<const absl::string_view> authorization) const;

 private:
  std::optional<ApiKeys> keys_;
};

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_API_KEYS_H_
