// Scheduler, continued: what happens as time passes (lease expiry, waiter deadlines, the
// workers gauge) and the thread that drives it.
#include <algorithm>
#include <cstdio>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/core/scheduler.h"  // the class implemented here

namespace compress::server {

void Scheduler::ProcessTimeouts() {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    const absl::Duration now = clock_->Elapsed();
    std::vector<std::pair<std::string, ActiveLease>> expired;
    for (const auto& [id, lease] : leases_) {
      if (lease.expiry <= now) expired.emplace_back(id, lease);
    }
    for (auto& [id, lease] : expired) {
      // Out of leases_ while the job is written, so that CommitLocked does not count it as a
      // lease that ended normally.
      leases_.erase(id);
      absl::Status written = ExpireLeaseLocked(id, lease, deferred);
      if (written.ok() || absl::IsNotFound(written)) {
        // A recovered lease was no lease of this process: none ended.
        if (options_.observer != nullptr && !lease.recovered) {
          options_.observer->LeaseEnded(lease.worker_id, lease.device, true);
        }
        continue;
      }
      // The job is still RUNNING (or CANCELLING) in the store: keep the lease, refusing its
      // worker, and write again shortly, so that the job does not stay RUNNING with nobody to
      // requeue it until the next restart.
      lease.expired = true;
      lease.expiry = now + kExpiryRetryDelay;
      leases_[id] = lease;
      // A recovered lease's failure was logged at the restart; each retry would only repeat it.
      if (lease.recovered) continue;
      deferred.push_back([id, written] {
        std::fprintf(stderr,
                     "compressd: job %s: lease expired but the job could not be written (%s); "
                     "retrying in %s\n",
                     id.c_str(), written.ToString().c_str(),
                     absl::FormatDuration(kExpiryRetryDelay).c_str());
      });
    }
    ForgetOldCompletionsLocked();
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->deadline <= now) {
        deferred.push_back([done = std::move(it->done)] { done(std::nullopt); });
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
    if (options_.observer != nullptr) {
      options_.observer->WorkersConnected(WorkersConnectedLocked());
    }
  }
  RunDeferred(deferred);
}

absl::Status Scheduler::ExpireLeaseLocked(const std::string& job_id, const ActiveLease& lease,
                                          Deferred& deferred) {
  absl::StatusOr<Job> job = store_->GetJob(job_id);
  if (!job.ok()) return job.status();
  if (lease.recovered) {
    if (job->state != JobState::kRunning && job->state != JobState::kCancelling) {
      return absl::OkStatus();
    }
    return RecoverLeasedJobLocked(*job, deferred);
  }
  if (job->state == JobState::kCancelling) {
    std::string message =
        absl::StrCat("cancelled (worker ", lease.worker_id, " lost: lease expired)");
    return FinishLocked(*job, JobState::kCancelled, "CANCELLED", message, message, deferred);
  }
  if (job->state != JobState::kRunning) return absl::OkStatus();
  std::string message =
      job->attempt_count < job->max_attempts
          ? absl::StrCat("worker ", lease.worker_id, " lost: lease expired during attempt ",
                         job->attempt_count, " of ", job->max_attempts)
          : absl::StrCat("worker ", lease.worker_id, " lost: lease expired after ",
                         job->attempt_count, " attempts");
  return RetryOrFailLocked(*job, /*retryable=*/true, "UNAVAILABLE", message, {}, deferred);
}

void Scheduler::SeenLocked(const std::string& worker_id) {
  last_seen_[worker_id] = clock_->Elapsed();
  if (options_.observer != nullptr) {
    options_.observer->WorkersConnected(WorkersConnectedLocked());
  }
}

int Scheduler::WorkersConnectedLocked() {
  const absl::Duration now = clock_->Elapsed();
  std::set<std::string> workers;
  for (auto it = last_seen_.begin(); it != last_seen_.end();) {
    absl::Duration age = now - it->second;
    if (age <= options_.lease_duration) workers.insert(it->first);
    // Forget workers long gone, so the map stays small.
    it = age > 10 * options_.lease_duration ? last_seen_.erase(it) : std::next(it);
  }
  for (const Waiter& waiter : waiters_) workers.insert(waiter.worker_id);
  return static_cast<int>(workers.size());
}

int Scheduler::WorkersConnected() {
  absl::MutexLock lock(&mu_);
  return WorkersConnectedLocked();
}

void Scheduler::BackgroundLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (shut_down_) return;
      const absl::Duration now = clock_->Elapsed();
      // Wake at least once a second, so the workers gauge follows workers that went quiet.
      absl::Duration next = now + absl::Seconds(1);
      for (const auto& [id, lease] : leases_) next = std::min(next, lease.expiry);
      for (const Waiter& waiter : waiters_) next = std::min(next, waiter.deadline);
      wake_ = false;
      if (next > now) mu_.AwaitWithTimeout(absl::Condition(&wake_), next - now);
      if (shut_down_) return;
    }
    ProcessTimeouts();
  }
}

}  // namespace compress::server
