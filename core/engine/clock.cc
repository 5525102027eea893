#include "core/engine/clock.h"

namespace xlstmd::core {
namespace {

class SystemClock final : public Clock {
 public:
  SteadyClock::time_point Now() const override { return SteadyClock::now(); }
  int64_t UnixMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace

Clock& RealClock() {
  static SystemClock clock;
  return clock;
}

}  // namespace xlstmd::core
