#include "client/retry_schedule.h"

#include <algorithm>

#include "absl/time/clock.h"

namespace compress::client {

RetrySchedule::RetrySchedule(absl::Duration retry_for)
    : retry_for_(retry_for), give_up_(absl::Now() + retry_for) {}

void RetrySchedule::Progressed() {
  give_up_ = absl::Now() + retry_for_;
  backoff_ = kFirstBackoff;
}

bool RetrySchedule::WaitForNextTry() {
  const absl::Time now = absl::Now();
  if (now >= give_up_) return false;
  absl::SleepFor(std::min(backoff_, give_up_ - now));
  backoff_ = std::min(backoff_ * 2, kMaxBackoff);
  return true;
}

}  // namespace compress::client
