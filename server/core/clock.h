// Clock: the sources of time of the scheduler, replaceable in tests.
//
// Two clocks, kept apart by their types: Now() is wall time (absl::Time), for timestamps that are
// stored or shown (create_time, event times); Elapsed() is monotonic (absl::Duration since an
// origin of the clock's own), for durations and deadlines kept in memory (lease expiry, long-poll
// deadlines, how recently a worker was heard from). The wall clock may jump, forward or back (an
// NTP step, a VM resumed, an operator's `date`); a deadline on it would then pass early or late.
#ifndef COMPRESS_SERVER_CORE_CLOCK_H_
#define COMPRESS_SERVER_CORE_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace compress::server {

// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  // Wall time.
  virtual absl::Time Now() = 0;
  // Monotonic time: never goes back and ignores steps of the wall clock. Its origin is arbitrary
  // and differs between processes, so it is never stored.
  virtual absl::Duration Elapsed() = 0;

  // The system clock (wall) and the kernel's monotonic clock; never destroyed.
  static Clock* Real();
};

// A clock that moves only when told to. Thread-safe.
class ManualClock : public Clock {
 public:
  explicit ManualClock(absl::Time start = absl::FromUnixSeconds(1'700'000'000)) : now_(start) {}

  absl::Time Now() override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  absl::Duration Elapsed() override {
    absl::MutexLock lock(&mu_);
    return elapsed_;
  }
  // Time passes: both clocks move by `d`.
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
    elapsed_ += d;
  }
  // The wall clock is set (forward, or back when `d` is negative); the monotonic clock stays.
  void StepWallClock(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  // Not zero, as the kernel's monotonic clock is not at its origin either: a duration measured
  // from a forgotten (zero) start shows.
  absl::Duration elapsed_ ABSL_GUARDED_BY(mu_) = absl::Hours(1000);
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_CLOCK_H_
