// RetrySchedule: when a command tries a call again while the server is unreachable (a restart, a
// dropped connection), and when it gives up: --retry_for after the last try that made progress
// or that the server answered, so that the time counts from the start of an outage.
#ifndef COMPRESS_CLIENT_RETRY_SCHEDULE_H_
#define COMPRESS_CLIENT_RETRY_SCHEDULE_H_

#include "absl/time/time.h"

namespace compress::client {

// Backoff from 200 ms, doubling up to 5 s. The wait before the last try is cut short at the
// deadline, so that the last try is made then: a server back just before the deadline is
// still found. Thread-compatible.
class RetrySchedule {
 public:
  // Gives up `retry_for` from now.
  explicit RetrySchedule(absl::Duration retry_for);

  // A try made progress, or the server answered: the deadline moves to `retry_for` from now,
  // the backoff starts over.
  void Progressed();

  // After a failed try: sleeps until the next try and returns true, or returns false at once
  // when the deadline has passed.
  bool WaitForNextTry();

 private:
  static constexpr absl::Duration kFirstBackoff = absl::Milliseconds(200);
  static constexpr absl::Duration kMaxBackoff = absl::Seconds(5);

  const absl::Duration retry_for_;
  absl::Time give_up_;
  absl::Duration backoff_ = kFirstBackoff;
};

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_RETRY_SCHEDULE_H_
