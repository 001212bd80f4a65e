// SchedulerObserver: what the scheduler reports about jobs and workers (implemented by Metrics).
#ifndef COMPRESS_SERVER_CORE_SCHEDULER_OBSERVER_H_
#define COMPRESS_SERVER_CORE_SCHEDULER_OBSERVER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "server/core/executor_events.h"
#include "server/core/job.h"

namespace compress::server {

// Called with the scheduler's mutex held: implementations must be quick and must not call the
// scheduler. Thread-safe implementations required.
class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;

  // The number of jobs in each state when the scheduler starts (after recovery).
  virtual void JobCounts(const std::map<JobState, int64_t>& counts) {}
  // A job was created (from = nullopt), moved between states, or deleted (to = nullopt).
  virtual void JobStateChanged(std::optional<JobState> from, std::optional<JobState> to) {}
  // The number of QUEUED jobs whose spec needs `device` ("cpu", "cuda" or "auto"; see
  // DeviceNeed) is now `count`.
  virtual void QueuedForDevice(const std::string& device, int64_t count) {}
  // A job left the queue for a worker after waiting `queue_wait`.
  virtual void JobLeased(absl::Duration queue_wait) {}
  // A job finished; `duration` runs from its first lease to now (nullopt if it never ran).
  virtual void JobFinished(JobState state, std::optional<absl::Duration> duration) {}
  // Workers seen in the last lease window.
  virtual void WorkersConnected(int count) {}
  // An executor phase of a current attempt finished after `wall_seconds` (phase_finished).
  virtual void PhaseFinished(const std::string& phase, double wall_seconds) {}
  // The executor of the current attempt on `worker_id`'s `device` reported device readings.
  virtual void DeviceReadings(const std::string& worker_id, const std::string& device,
                              const DeviceReport& report) {}
  // The lease of `worker_id` on `device` ended: the job finished or went back to the queue;
  // `expired` when it ended because its worker stopped renewing it (lost, or stalled).
  virtual void LeaseEnded(const std::string& worker_id, const std::string& device, bool expired) {}
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_SCHEDULER_OBSERVER_H_
