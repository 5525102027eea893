// Per-tenant quotas: the --tenant-max-* defaults and, per tenant, overrides from the API-key
// file (server/api_keys.h), looked up by the scheduler (running, queued turns) and the session
// index (sessions).
#ifndef XLSTMD_CORE_ENGINE_TENANT_QUOTA_H_
#define XLSTMD_CORE_ENGINE_TENANT_QUOTA_H_

#include <cstdint>
#include <map>
#include <string>

namespace xlstmd::core {

struct TenantQuota {
  // -1 = the default (the --tenant-max-* option); 0 = no quota.
  int32_t max_running = -1;
  int32_t max_queued = -1;
  int32_t max_sessions = -1;
  // Snapshot bytes its ImportSession / ExportSession calls may hold at once (the server's
  // budget; the engine does not read it). -1 = the default, 0 = no quota.
  int64_t max_snapshot_bytes = -1;
  bool operator==(const TenantQuota&) const = default;
};

using TenantQuotas = std::map<std::string, TenantQuota>;  // by tenant (owner)

// The quota `field` of `owner`: its override when set, else `fallback`. 0 = no quota.
inline int32_t QuotaFor(const TenantQuotas& quotas, const std::string& owner,
                        int32_t TenantQuota::*field, int32_t fallback) {
  auto it = quotas.find(owner);
  if (it == quotas.end() || it->second.*field < 0) return fallback;
  return it->second.*field;
}

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_TENANT_QUOTA_H_
