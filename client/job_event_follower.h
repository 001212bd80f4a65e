// JobEventFollower: follows a job's events with WatchJob, reopening the stream where it stopped
// after a dropped connection or a passed deadline, until the job has finished and every event
// was delivered.
#ifndef COMPRESS_CLIENT_JOB_EVENT_FOLLOWER_H_
#define COMPRESS_CLIENT_JOB_EVENT_FOLLOWER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "client/command_env.h"
#include "compress/v1/compression_service.pb.h"

namespace compress::client {

// Thread-compatible.
class JobEventFollower {
 public:
  // Called once per event, in sequence order with no duplicates; returns false to stop.
  using Handler = std::function<bool(const compress::v1::JobEvent&)>;

  // `env` must outlive the follower.
  JobEventFollower(const CommandEnv& env, std::string job_name);

  // Delivers the events after `after_sequence`. Returns the finished job once it has finished
  // and all its events were delivered; nullopt when the handler stopped early; an error when
  // the job cannot be watched (NOT_FOUND, ...) or the server stayed unreachable for
  // env.retry_for after its last answer (an event, a stream that ended, a GetJob).
  absl::StatusOr<std::optional<compress::v1::Job>> Follow(int64_t after_sequence,
                                                          const Handler& handler);

  // The sequence number of the last event delivered.
  int64_t last_sequence() const { return last_sequence_; }
  // Streams reopened after they broke off.
  int reopened() const { return reopened_; }

 private:
  const CommandEnv& env_;
  const std::string job_name_;
  int64_t last_sequence_ = 0;
  int reopened_ = 0;
};

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_JOB_EVENT_FOLLOWER_H_
