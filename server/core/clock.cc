#include "server/core/clock.h"

#include <chrono>

namespace compress::server {
namespace {

class RealClock : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
  // CLOCK_MONOTONIC on Linux: it does not count time the machine was suspended, and is not
  // stepped by settimeofday or NTP.
  absl::Duration Elapsed() override {
    return absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
  }
};

}  // namespace

Clock* Clock::Real() {
  static Clock* const clock = new RealClock();
  return clock;
}

}  // namespace compress::server
