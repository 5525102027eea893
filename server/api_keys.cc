#include "server/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace xlstmd::server {
namespace {

constexpr size_t kMaxTenantBytes = 128;
constexpr size_t kMaxKeyBytes = 4096;
constexpr std::uintmax_t kMaxFileBytes = 1 << 20;

bool ValidTenant(absl::string_view t) {
  if (t.empty() || t.size() > kMaxTenantBytes) return false;
  for (const char c : t) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-' &&
        c != '@') {
      return false;
    }
  }
  return true;
}

bool ValidKey(absl::string_view k) {
  if (k.empty() || k.size() > kMaxKeyBytes) return false;
  for (const char c : k) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace

ApiKeys::Digest ApiKeys::Sha256(absl::string_view data) {
  Digest d{};
  unsigned int len = 0;
  // EVP_Digest cannot fail for SHA-256 on in-memory data short of memory exhaustion; a
  // zeroed digest then simply matches nothing that was loaded successfully.
  EVP_Digest(data.data(), data.size(), d.data(), &len, EVP_sha256(), nullptr);
  return d;
}

absl::StatusOr<ApiKeys> ApiKeys::Parse(absl::string_view text, absl::string_view source) {
  ApiKeys keys;
  absl::flat_hash_map<std::string, int> line_of_digest;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    absl::ConsumeSuffix(&line, "\r");
    const absl::string_view trimmed = absl::StripAsciiWhitespace(line);
    if (trimmed.empty() || trimmed.front() == '#') continue;
    const std::vector<absl::string_view> fields =
        absl::StrSplit(trimmed, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const std::string where = absl::StrCat(source, " line ", line_no, ": ");
    if (fields.size() < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "expected '<tenant> <key> [quota=N ...]', found ", fields.size(), " field"));
    }
    if (!ValidTenant(fields[0])) {
      return absl::InvalidArgumentError(absl::StrCat(where, "tenant must be 1-", kMaxTenantBytes,
                                                     " characters of [A-Za-z0-9._@-]"));
    }
    if (!ValidKey(fields[1])) {
      return absl::InvalidArgumentError(absl::StrCat(where, "key must be 1-", kMaxKeyBytes,
                                                     " printable ASCII characters without spaces"));
    }
    Entry e{Sha256(fields[1]), std::string(fields[0])};
    const std::string digest_key(reinterpret_cast<const char*>(e.digest.data()), e.digest.size());
    const auto [it, inserted] = line_of_digest.emplace(digest_key, line_no);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "the same key is already listed on line ", it->second,
                       " (a key must identify exactly one tenant)"));
    }
    // Optional per-tenant quotas after the key: max_running=N max_queued=N max_sessions=N
    // max_snapshot_bytes=N.
    core::TenantQuota q;
    for (size_t f = 2; f < fields.size(); ++f) {
      const std::vector<absl::string_view> kv = absl::StrSplit(fields[f], absl::MaxSplits('=', 1));
      int32_t* dst = nullptr;
      if (kv[0] == "max_running") dst = &q.max_running;
      if (kv[0] == "max_queued") dst = &q.max_queued;
      if (kv[0] == "max_sessions") dst = &q.max_sessions;
      int64_t v = -1;
      const bool bytes = kv[0] == "max_snapshot_bytes";
      if ((dst == nullptr && !bytes) || kv.size() != 2 || !absl::SimpleAtoi(kv[1], &v) || v < 0 ||
          (!bytes && v > INT32_MAX)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "field ", f + 1,
            " must be max_running=N, max_queued=N, max_sessions=N or max_snapshot_bytes=N "
            "(N >= 0; 0 = no quota)"));
      }
      if (bytes) {
        q.max_snapshot_bytes = v;
      } else {
        *dst = static_cast<int32_t>(v);
      }
    }
    if (fields.size() > 2) {
      const auto [qit, fresh] = keys.quotas_.emplace(e.tenant, q);
      if (!fresh && !(qit->second == q)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "tenant ", e.tenant,
                         " has other quotas on an earlier line (give them once, or the same)"));
      }
    }
    keys.entries_.push_back(std::move(e));
  }
  if (keys.entries_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": no keys (expected lines '<tenant> <key>'; to run without authentication, "
                     "omit --api-keys-file)"));
  }
  return keys;
}

absl::StatusOr<ApiKeys> ApiKeys::LoadFile(const std::filesystem::path& path,
                                          std::vector<std::string>* warnings) {
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("API keys file ", path.string(), ": cannot read: ", ec.message()));
  }
  if (size > kMaxFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat("API keys file ", path.string(), " is ", size,
                                                   " bytes; the limit is ", kMaxFileBytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("API keys file ", path.string(), ": cannot open"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<ApiKeys> keys = Parse(ss.str(), path.string());
  if (!keys.ok()) return keys.status();

  // Group read is allowed: a Kubernetes Secret mounted with defaultMode 0440 and the pod's
  // fsGroup reaches a non-root daemon only through the group (docs/deploy.md). Anything others
  // may read, or the group may write, is a leak or a tampering path.
  struct stat st {};
  if (warnings != nullptr && ::stat(path.c_str(), &st) == 0 && (st.st_mode & 027) != 0) {
    warnings->push_back(absl::StrCat(
        "API keys file ", path.string(), " is ",
        (st.st_mode & 007) != 0 ? "accessible by others" : "writable by its group", " (mode ",
        absl::StrFormat("%04o", st.st_mode & 0777), "); chmod 600 (or 640) it"));
  }
  return keys;
}

std::optional<std::string> ApiKeys::TenantForKey(absl::string_view key) const {
  const Digest presented = Sha256(key);
  const Entry* match = nullptr;
  // Every entry is compared, without an early exit, so the time does not tell which one
  // matched or how close a guess came.
  for (const Entry& e : entries_) {
    const bool equal = CRYPTO_memcmp(presented.data(), e.digest.data(), presented.size()) == 0;
    match = equal ? &e : match;
  }
  if (match == nullptr) return std::nullopt;
  return match->tenant;
}

absl::StatusOr<std::string> Authenticator::Authenticate(
    absl::Span<const absl::string_view> authorization) const {
  if (!keys_.has_value()) return std::string();
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "missing API key: this server requires one (xlstm tools: --api-key KEY or "
        "$XLSTMD_API_KEY; other clients: metadata or header 'authorization: Bearer <key>')");
  }
  if (authorization.size() > 1) {
    return absl::UnauthenticatedError("more than one 'authorization' metadata entry");
  }
  absl::string_view value = absl::StripAsciiWhitespace(authorization[0]);
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError(
        "malformed 'authorization' metadata: expected 'Bearer <key>'");
  }
  const absl::string_view key = absl::StripLeadingAsciiWhitespace(value.substr(kScheme.size()));
  std::optional<std::string> tenant = keys_->TenantForKey(key);
  if (!tenant.has_value()) return absl::UnauthenticatedError("invalid API key");
  return *std::move(tenant);
}

}  // namespace xlstmd::server
