// EngineObserver: what the engine reports about its own work, for metrics. The engine calls
// it at a handful of points (docs/observability.md lists the metrics they feed); the daemon
// implements it with its metrics registry (server/metrics.cc), tests with plain counters.
//
// Contract: every method is called on the engine thread (a disk restore's duration is the
// read and decode time measured on the I/O thread that did it). Methods must be quick (a few
// atomic updates), never block and never call back into the engine. The observer must
// outlive the engine. Durations are in seconds.
#ifndef XLSTMD_CORE_ENGINE_ENGINE_OBSERVER_H_
#define XLSTMD_CORE_ENGINE_ENGINE_OBSERVER_H_

#include <cstdint>

namespace xlstmd::core {

// Where a session's committed state is held, fastest first (docs/state-tiers.md).
enum class StateTier { kResident, kHost, kDisk, kRedis };

// Why a committed state left a faster tier.
enum class EvictionReason {
  kSlotPressure,  // its slot was taken for a turn that needed one
  kHostBudget,    // host RAM over --host-state-bytes
  kIdleTtl,       // the session was idle past --idle-ttl and was deleted
};

const char* StateTierName(StateTier tier);              // "resident", "host", "disk", "redis"
const char* EvictionReasonName(EvictionReason reason);  // "slot_pressure", ...

class EngineObserver {
 public:
  virtual ~EngineObserver() = default;

  // One batched decode step over `batch_size` turns took `seconds` (the model's Step only).
  virtual void OnDecodeStep(int32_t batch_size, double seconds) {}
  // A turn's starting state was loaded into its slot from `from` (kResident: a slot copy).
  virtual void OnRestore(StateTier from, double seconds) {}
  // A committed state left a faster tier and is now held by `to` at the slowest.
  virtual void OnSpill(StateTier to) {}
  virtual void OnEviction(EvictionReason reason) {}
  // A turn's logits held a NaN, so it was rolled back with INTERNAL.
  virtual void OnNaNLogits() {}
};

inline const char* StateTierName(StateTier tier) {
  switch (tier) {
    case StateTier::kResident:
      return "resident";
    case StateTier::kHost:
      return "host";
    case StateTier::kDisk:
      return "disk";
    case StateTier::kRedis:
      return "redis";
  }
  return "unknown";
}

inline const char* EvictionReasonName(EvictionReason reason) {
  switch (reason) {
    case EvictionReason::kSlotPressure:
      return "slot_pressure";
    case EvictionReason::kHostBudget:
      return "host_budget";
    case EvictionReason::kIdleTtl:
      return "idle_ttl";
  }
  return "unknown";
}

}  // namespace xlstmd::core

#endif  // XLSTMD_CORE_ENGINE_ENGINE_OBSERVER_H_
