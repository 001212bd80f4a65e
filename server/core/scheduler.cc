#include "server/core/scheduler.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

namespace compress::server {
namespace {

// Every DeviceNeed, each the index of its queue in Scheduler::queues_.
constexpr DeviceNeed kAllDeviceNeeds[] = {DeviceNeed::kCpu, DeviceNeed::kCuda, DeviceNeed::kAuto};

bool IsCudaDevice(absl::string_view device) {
  return device == "cuda" || absl::StartsWith(device, "cuda:");
}

}  // namespace

DeviceNeed DeviceNeedOfSpec(const std::string& spec_json) {
  nlohmann::json spec = nlohmann::json::parse(spec_json, nullptr, /*allow_exceptions=*/false);
  if (!spec.is_object()) return DeviceNeed::kAuto;
  auto resources = spec.find("resources");
  if (resources == spec.end() || !resources->is_object()) return DeviceNeed::kAuto;
  auto device = resources->find("device");
  if (device == resources->end() || !device->is_string()) return DeviceNeed::kAuto;
  const std::string& name = device->get_ref<const std::string&>();
  if (name == "cpu") return DeviceNeed::kCpu;
  if (IsCudaDevice(name)) return DeviceNeed::kCuda;
  return DeviceNeed::kAuto;
}

const char* DeviceNeedName(DeviceNeed need) {
  switch (need) {
    case DeviceNeed::kCpu:
      return "cpu";
    case DeviceNeed::kCuda:
      return "cuda";
    case DeviceNeed::kAuto:
      return "auto";
  }
  return "auto";
}

bool DeviceMayRun(absl::string_view device, DeviceNeed need) {
  switch (need) {
    case DeviceNeed::kCpu:
      return device == "cpu";
    case DeviceNeed::kCuda:
      return IsCudaDevice(device);
    case DeviceNeed::kAuto:
      return true;
  }
  return false;
}

Scheduler::Scheduler(JobStore* store, const Options& options)
    : store_(store),
      options_(options),
      clock_(options.clock != nullptr ? options.clock : Clock::Real()) {}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(JobStore* store,
                                                             const Options& options) {
  // compressd fills these options from its flags, so the messages name the flags.
  if (options.lease_duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--lease_seconds: must be positive, got ",
                                                   absl::ToDoubleSeconds(options.lease_duration)));
  }
  if (options.default_max_attempts < 1 || options.default_max_attempts > kMaxAttemptsLimit) {
    return absl::InvalidArgumentError(absl::StrCat("--max_attempts: must be in [1, ",
                                                   kMaxAttemptsLimit, "], got ",
                                                   options.default_max_attempts));
  }
  std::unique_ptr<Scheduler> scheduler(new Scheduler(store, options));
  Deferred deferred;
  {
    absl::MutexLock lock(&scheduler->mu_);
    if (absl::Status s = scheduler->RecoverLocked(deferred); !s.ok()) return s;
  }
  RunDeferred(deferred);
  return scheduler;
}

// Watches cannot outlive the server whose scheduler this is, so there is nobody to notify.
Scheduler::~Scheduler() { Stop(/*notify_watchers=*/false); }

absl::Status Scheduler::RecoverLocked(Deferred& deferred) {
  absl::StatusOr<std::vector<Job>> jobs =
      store_->JobsInStates({JobState::kQueued, JobState::kRunning, JobState::kCancelling});
  if (!jobs.ok()) return jobs.status();
  for (Job& job : *jobs) {
    switch (job.state) {
      case JobState::kQueued:
        EnqueueLocked(job);
        break;
      case JobState::kRunning:
      case JobState::kCancelling: {
        // As read: the write below changes `job` before it fails.
        const JobState state = job.state;
        const std::string owner = job.lease_owner;
        const int attempt = job.attempt_count;
        absl::Status written = RecoverLeasedJobLocked(job, deferred);
        if (written.ok()) break;
        // Not fatal: a full disk must not keep compressd from starting, and reads still work.
        // The job is held as an expired lease, so that ProcessTimeouts writes it once the store
        // takes writes again and its old worker's calls are refused meanwhile.
        ActiveLease lease{owner, "", attempt, "", clock_->Elapsed() + kExpiryRetryDelay};
        lease.expired = true;
        lease.recovered = true;
        leases_[job.id] = lease;
        deferred.push_back([id = job.id, state, written] {
          std::fprintf(stderr,
                       "compressd: job %s: %s at the restart but its %s could not be written (%s); "
                       "retrying every %s\n",
                       id.c_str(), JobStateName(state),
                       state == JobState::kRunning ? "requeue" : "cancellation",
                       written.ToString().c_str(), absl::FormatDuration(kExpiryRetryDelay).c_str());
        });
        break;
      }
      default:
        break;
    }
  }
  if (absl::Status s = LoadCompletionsLocked(); !s.ok()) return s;
  if (options_.observer != nullptr) {
    absl::StatusOr<std::map<JobState, int64_t>> counts = store_->CountByState();
    if (!counts.ok()) return counts.status();
    options_.observer->JobCounts(*counts);
  }
  return absl::OkStatus();
}

absl::Status Scheduler::RecoverLeasedJobLocked(Job& job, Deferred& deferred) {
  if (job.state == JobState::kCancelling) {
    const std::string message = "cancelled (compressd restarted while the job was being cancelled)";
    return FinishLocked(job, JobState::kCancelled, "CANCELLED", message, message, deferred);
  }
  std::string message = absl::StrCat("compressd restarted during attempt ", job.attempt_count,
                                     " of ", job.max_attempts, " (worker ", job.lease_owner, ")");
  return RetryOrFailLocked(job, /*retryable=*/true, "UNAVAILABLE", message, {}, deferred);
}

void Scheduler::StartBackgroundThread() {
  absl::MutexLock lock(&mu_);
  if (background_.joinable() || shut_down_) return;
  background_ = std::thread([this] { BackgroundLoop(); });
}

void Scheduler::Shutdown() { Stop(/*notify_watchers=*/true); }

void Scheduler::Stop(bool notify_watchers) {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) notify_watchers = false;
    shut_down_ = true;
    wake_ = true;
    for (Waiter& waiter : waiters_) {
      deferred.push_back([done = std::move(waiter.done)] { done(std::nullopt); });
    }
    waiters_.clear();
  }
  RunDeferred(deferred);
  if (notify_watchers) notifier_.NotifyAll();
  if (background_.joinable() && background_.get_id() != std::this_thread::get_id()) {
    background_.join();
  }
}

bool Scheduler::ShuttingDown() {
  absl::MutexLock lock(&mu_);
  return shut_down_;
}

void Scheduler::RunDeferred(Deferred& deferred) {
  for (auto& work : deferred) work();
  deferred.clear();
}

void Scheduler::EnqueueLocked(const Job& job) {
  const absl::Duration queued_for = std::max(absl::ZeroDuration(), clock_->Now() - job.queue_time);
  QueuedJob queued{QueueKey{-static_cast<int64_t>(job.priority),
                            absl::ToUnixMicros(job.create_time), job.creation_order, job.id},
                   DeviceNeedOfSpec(job.spec_json), clock_->Elapsed() - queued_for};
  InsertQueuedLocked(job.id, queued);
}

void Scheduler::InsertQueuedLocked(const std::string& id, const QueuedJob& queued) {
  queues_[static_cast<int>(queued.need)].insert(queued.key);
  queued_[id] = queued;
  QueueChangedLocked(queued.need);
}

void Scheduler::QueueChangedLocked(DeviceNeed need) {
  if (options_.observer == nullptr) return;
  options_.observer->QueuedForDevice(DeviceNeedName(need),
                                     static_cast<int64_t>(queues_[static_cast<int>(need)].size()));
}

std::optional<DeviceNeed> Scheduler::BestQueueLocked(absl::string_view device) {
  std::optional<DeviceNeed> best;
  for (DeviceNeed need : kAllDeviceNeeds) {
    const std::set<QueueKey>& queue = queues_[static_cast<int>(need)];
    if (queue.empty() || !DeviceMayRun(device, need)) continue;
    if (!best.has_value() || *queue.begin() < *queues_[static_cast<int>(*best)].begin()) {
      best = need;
    }
  }
  return best;
}

int64_t Scheduler::QueuedJobs(DeviceNeed need) {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(queues_[static_cast<int>(need)].size());
}

bool Scheduler::QueueEmptyLocked() {
  return std::all_of(queues_.begin(), queues_.end(),
                     [](const std::set<QueueKey>& queue) { return queue.empty(); });
}

absl::Status Scheduler::CommitLocked(Job& job, JobState from, std::vector<JobEvent> events,
                                     Deferred& deferred, const Artifact* artifact,
                                     const CompletionRecord* completion) {
  absl::StatusOr<std::vector<JobEvent>> stored =
      store_->Write(job.id, &job, std::move(events), artifact, completion);
  if (!stored.ok()) return stored.status();
  if (!stored->empty()) job.last_event_sequence = stored->back().sequence;
  auto update = std::make_shared<JobUpdate>(JobUpdate{*std::move(stored), job.state});
  if (from != job.state) {
    if (options_.observer != nullptr) {
      options_.observer->JobStateChanged(from, job.state);
      if (IsFinished(job.state)) {
        std::optional<absl::Duration> duration;
        // From the stored timestamps (the job may have started before a restart), hence wall
        // time; never negative, should the wall clock have been set back meanwhile.
        if (job.start_time.has_value() && job.end_time.has_value()) {
          duration = std::max(absl::ZeroDuration(), *job.end_time - *job.start_time);
        }
        options_.observer->JobFinished(job.state, duration);
      }
    }
    if (from == JobState::kQueued) {
      if (auto it = queued_.find(job.id); it != queued_.end()) {
        const DeviceNeed need = it->second.need;
        queues_[static_cast<int>(need)].erase(it->second.key);
        queued_.erase(it);
        QueueChangedLocked(need);
      }
    }
    if (!IsLeased(job.state)) {
      if (auto it = leases_.find(job.id); it != leases_.end()) {
        if (options_.observer != nullptr) {
          options_.observer->LeaseEnded(it->second.worker_id, it->second.device, false);
        }
        leases_.erase(it);
      }
    }
  }
  deferred.push_back(
      [this, id = job.id, update = std::move(update)] { notifier_.Notify(id, std::move(update)); });
  if (job.state == JobState::kQueued && from != JobState::kQueued) {
    EnqueueLocked(job);
    DispatchLocked(deferred);
  }
  return absl::OkStatus();
}

absl::Status Scheduler::RetryOrFailLocked(Job& job, bool retryable, const std::string& code,
                                          const std::string& message, std::vector<JobEvent> events,
                                          Deferred& deferred, const CompletionRecord* completion) {
  JobState from = job.state;
  absl::Time now = clock_->Now();
  job.lease_owner.clear();
  job.error_code = code.empty() ? "UNKNOWN" : code;
  job.error_message = message;
  if (retryable && job.attempt_count < job.max_attempts) {
    job.state = JobState::kQueued;
    job.queue_time = now;
    events.push_back(StateChangeEvent(job.state, absl::StrCat(message, "; requeued"), now));
  } else {
    job.state = JobState::kFailed;
    job.end_time = now;
    events.push_back(StateChangeEvent(job.state, message, now));
  }
  return CommitLocked(job, from, std::move(events), deferred, nullptr, completion);
}

absl::Status Scheduler::RequeueUncountedLocked(Job& job, const std::string& reason,
                                               std::vector<JobEvent> events, Deferred& deferred,
                                               const CompletionRecord* completion) {
  JobState from = job.state;
  absl::Time now = clock_->Now();
  job.attempt_count--;
  job.lease_owner.clear();
  job.state = JobState::kQueued;
  job.queue_time = now;
  events.push_back(StateChangeEvent(JobState::kQueued, reason, now));
  return CommitLocked(job, from, std::move(events), deferred, nullptr, completion);
}

absl::Status Scheduler::FinishLocked(Job& job, JobState state, const std::string& code,
                                     const std::string& message, const std::string& reason,
                                     Deferred& deferred, const CompletionRecord* completion) {
  JobState from = job.state;
  absl::Time now = clock_->Now();
  job.state = state;
  job.end_time = now;
  job.lease_owner.clear();
  job.error_code = code;
  job.error_message = message;
  return CommitLocked(job, from, {StateChangeEvent(state, reason, now)}, deferred, nullptr,
                      completion);
}

absl::StatusOr<CreatedJob> Scheduler::CreateJob(const JobRequest& request) {
  absl::Notification committed;
  absl::StatusOr<CreatedJob> result;
  CreateJobAsync(request, [&](absl::StatusOr<CreatedJob> created) {
    result = std::move(created);
    committed.Notify();
  });
  committed.WaitForNotification();
  return result;
}

void Scheduler::CreateJobAsync(JobRequest request, CreateDone done, absl::Time deadline) {
  std::optional<size_t> refused;  // the number of calls waiting, when this one is refused
  {
    absl::MutexLock lock(&create_mu_);
    if (static_cast<int64_t>(pending_creates_.size()) >= options_.max_pending_creates) {
      refused = pending_creates_.size();
    } else {
      // The time left, measured from here on the monotonic clock.
      pending_creates_.push_back({std::move(request), std::move(done),
                                  Clock::Real()->Elapsed() + (deadline - absl::Now())});
      if (create_writer_) return;  // the writing thread takes it with its next batch
      create_writer_ = true;
    }
  }
  if (refused.has_value()) {
    done(absl::UnavailableError(absl::StrCat("compressd has ", *refused,
                                             " CreateJob calls waiting for the job store; retry "
                                             "(with the same request_id) shortly")));
    return;
  }
  for (;;) {
    std::vector<PendingCreate> batch;
    {
      absl::MutexLock lock(&create_mu_);
      if (pending_creates_.empty()) {
        create_writer_ = false;
        return;
      }
      while (!pending_creates_.empty() && static_cast<int>(batch.size()) < kMaxCreateBatch) {
        batch.push_back(std::move(pending_creates_.front()));
        pending_creates_.pop_front();
      }
    }
    CreateBatch(batch);
    for (PendingCreate& pending : batch) pending.done(std::move(pending.result));
  }
}

void Scheduler::CreateBatch(std::vector<PendingCreate>& batch) {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) {
      for (PendingCreate& pending : batch) {
        pending.result = absl::UnavailableError(
            "compressd is shutting down and accepts no new job; retry (with the same request_id) "
            "once it is back");
      }
      return;
    }
    absl::Time now = clock_->Now();
    const absl::Duration real_elapsed = Clock::Real()->Elapsed();
    std::vector<NewJob> jobs;
    std::vector<PendingCreate*> writing;  // the calls of `jobs`, in the same order
    jobs.reserve(batch.size());
    for (PendingCreate& pending : batch) {
      if (pending.deadline < real_elapsed) {
        pending.result = absl::DeadlineExceededError(
            "the deadline passed while the call waited for the job store; no job was created");
        continue;
      }
      writing.push_back(&pending);
      const JobRequest& request = pending.request;
      Job job;
      job.id = NewJobId(now);
      job.tenant = request.tenant;
      job.spec_json = request.spec_json;
      job.state = JobState::kQueued;
      job.labels = request.labels;
      job.priority = request.priority;
      job.request_id = request.request_id;
      job.create_time = now;
      job.queue_time = now;
      job.max_attempts =
          request.max_attempts > 0 ? request.max_attempts : options_.default_max_attempts;
      jobs.push_back({std::move(job), {StateChangeEvent(JobState::kQueued, "created", now)}});
    }
    if (jobs.empty()) return;
    std::vector<absl::StatusOr<CreatedJob>> results =
        store_->CreateJobs(std::move(jobs), options_.max_queued_jobs_per_tenant);
    for (size_t i = 0; i < writing.size(); ++i) {
      absl::StatusOr<CreatedJob>& result = results[i];
      if (result.ok() && result->created) {
        if (options_.observer != nullptr) {
          options_.observer->JobStateChanged(std::nullopt, JobState::kQueued);
        }
        EnqueueLocked(result->job);
        deferred.push_back([this, id = result->job.id] { notifier_.Notify(id); });
      }
      writing[i]->result = std::move(result);
    }
    DispatchLocked(deferred);
  }
  RunDeferred(deferred);
}

absl::StatusOr<Job> Scheduler::CancelJob(const std::string& job_id) {
  Deferred deferred;
  absl::StatusOr<Job> result;
  {
    absl::MutexLock lock(&mu_);
    result = store_->GetJob(job_id);
    if (!result.ok()) return result.status();
    Job& job = *result;
    JobState from = job.state;
    absl::Time now = clock_->Now();
    absl::Status status;
    switch (job.state) {
      case JobState::kQueued:
        status = FinishLocked(job, JobState::kCancelled, "CANCELLED", "cancelled before it ran",
                              "cancelled before it ran", deferred);
        break;
      case JobState::kRunning:
      case JobState::kCancelling: {
        auto lease = leases_.find(job_id);
        if (lease == leases_.end()) {
          // No worker holds it (its lease ended but the job's new state was never written):
          // there is nobody to wait for.
          status = FinishLocked(job, JobState::kCancelled, "CANCELLED",
                                "cancelled (no worker held the job)",
                                "cancelled by request; no worker held the job", deferred);
          break;
        }
        if (job.state == JobState::kCancelling) break;
        job.state = JobState::kCancelling;
        status = CommitLocked(
            job, from,
            {StateChangeEvent(job.state, "cancellation requested; waiting for the worker", now)},
            deferred);
        // Only once CANCELLING is stored: when the write fails the caller hears an error and the
        // job stays RUNNING, so its worker must not be told to stop it.
        if (status.ok()) lease->second.cancel_requested = true;
        break;
      }
      default:
        return absl::FailedPreconditionError(
            absl::StrCat("job ", job_id, " has already finished (", JobStateName(job.state), ")"));
    }
    if (!status.ok()) return status;
  }
  RunDeferred(deferred);
  return result;
}

absl::StatusOr<Job> Scheduler::DeleteJob(const std::string& job_id) {
  Deferred deferred;
  absl::StatusOr<Job> job;
  {
    absl::MutexLock lock(&mu_);
    job = store_->GetJob(job_id);
    if (!job.ok()) return job.status();
    if (!IsFinished(job->state)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job_id, " is ", JobStateName(job->state), "; cancel it before deleting it"));
    }
    if (absl::Status s = store_->DeleteJob(job_id); !s.ok()) return s;
    if (options_.observer != nullptr) {
      options_.observer->JobStateChanged(job->state, std::nullopt);
    }
    deferred.push_back([this, job_id] { notifier_.Notify(job_id); });
  }
  RunDeferred(deferred);
  return job;
}

absl::StatusOr<std::optional<Lease>> Scheduler::LeaseNextLocked(const std::string& worker_id,
                                                                const std::string& device,
                                                                Deferred& deferred) {
  while (std::optional<DeviceNeed> need = BestQueueLocked(device)) {
    std::set<QueueKey>& queue = queues_[static_cast<int>(*need)];
    const std::string id = std::get<3>(*queue.begin());
    auto entry = queued_.find(id);  // always there: queued_ and queues_ hold the same jobs
    const QueuedJob queued = entry != queued_.end()
                                 ? entry->second
                                 : QueuedJob{*queue.begin(), *need, clock_->Elapsed()};
    queue.erase(queue.begin());
    QueueChangedLocked(*need);
    if (entry != queued_.end()) queued_.erase(entry);
    absl::StatusOr<Job> job = store_->GetJob(id);
    if (absl::IsNotFound(job.status())) continue;
    if (!job.ok()) {
      InsertQueuedLocked(id, queued);
      return job.status();
    }
    if (job->state != JobState::kQueued) continue;
    absl::Time now = clock_->Now();
    Job& j = *job;
    j.attempt_count++;
    j.attempt_lines = 0;
    j.state = JobState::kRunning;
    if (!j.start_time.has_value()) j.start_time = now;
    j.lease_owner = worker_id;
    const absl::Duration queue_wait = clock_->Elapsed() - queued.since;
    if (absl::Status s = CommitLocked(
            j, JobState::kQueued,
            {StateChangeEvent(j.state,
                              absl::StrCat("attempt ", j.attempt_count, " of ", j.max_attempts,
                                           " leased to worker ", worker_id, " (", device, ")"),
                              now)},
            deferred);
        !s.ok()) {
      InsertQueuedLocked(id, queued);
      return s;
    }
    const std::string lease_id = NewLeaseId();
    leases_[id] = ActiveLease{worker_id, device, j.attempt_count, lease_id,
                              clock_->Elapsed() + options_.lease_duration};
    wake_ = true;
    if (options_.observer != nullptr) options_.observer->JobLeased(queue_wait);
    return Lease{
        id, j.attempt_count, j.spec_json, options_.lease_duration, j.last_event_sequence, lease_id};
  }
  return std::nullopt;
}

void Scheduler::DispatchLocked(Deferred& deferred) {
  for (auto it = waiters_.begin(); it != waiters_.end() && !QueueEmptyLocked();) {
    if (!BestQueueLocked(it->device).has_value()) {
      ++it;
      continue;
    }
    absl::StatusOr<std::optional<Lease>> lease =
        LeaseNextLocked(it->worker_id, it->device, deferred);
    // Only stale entries (jobs deleted or no longer QUEUED) were found: keep waiting.
    if (lease.ok() && !lease->has_value()) {
      ++it;
      continue;
    }
    deferred.push_back(
        [done = std::move(it->done), lease = std::move(lease)] { done(std::move(lease)); });
    it = waiters_.erase(it);
  }
}

absl::StatusOr<std::optional<Lease>> Scheduler::LeaseNext(const std::string& worker_id,
                                                          const std::string& device) {
  Deferred deferred;
  absl::StatusOr<std::optional<Lease>> lease;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return absl::UnavailableError("compressd is shutting down");
    SeenLocked(worker_id);
    lease = LeaseNextLocked(worker_id, device, deferred);
  }
  RunDeferred(deferred);
  return lease;
}

int64_t Scheduler::WaitForLease(const std::string& worker_id, const std::string& device,
                                absl::Time deadline, LeaseCallback done) {
  Deferred deferred;
  int64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    id = next_waiter_id_++;
    if (shut_down_) {
      deferred.push_back(
          [done = std::move(done)] { done(absl::UnavailableError("compressd is shutting down")); });
    } else {
      SeenLocked(worker_id);
      absl::StatusOr<std::optional<Lease>> lease = LeaseNextLocked(worker_id, device, deferred);
      const absl::Duration left = deadline - clock_->Now();
      if (!lease.ok() || lease->has_value() || left <= absl::ZeroDuration()) {
        deferred.push_back(
            [done = std::move(done), lease = std::move(lease)] { done(std::move(lease)); });
      } else {
        waiters_.push_back(
            Waiter{id, worker_id, device, clock_->Elapsed() + left, std::move(done)});
        wake_ = true;
      }
    }
  }
  RunDeferred(deferred);
  return id;
}

bool Scheduler::CancelWait(int64_t waiter_id) {
  absl::MutexLock lock(&mu_);
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    if (it->id == waiter_id) {
      waiters_.erase(it);
      return true;
    }
  }
  return false;
}

absl::Status Scheduler::ReturnLease(const std::string& job_id, int attempt,
                                    const LeaseHolder& holder) {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<ActiveLease*> lease = CurrentLeaseLocked(job_id, attempt, holder);
    if (!lease.ok()) return lease.status();
    absl::StatusOr<Job> job = store_->GetJob(job_id);
    if (!job.ok()) return job.status();
    absl::Status status;
    if (job->state == JobState::kCancelling) {
      job->attempt_count--;
      if (job->attempt_count == 0) job->start_time.reset();
      status = FinishLocked(*job, JobState::kCancelled, "CANCELLED", "cancelled by request",
                            "cancelled by request", deferred);
    } else {
      // The attempt never ran: the job has not started.
      if (job->attempt_count == 1) job->start_time.reset();
      status = RequeueUncountedLocked(
          *job,
          absl::StrCat("attempt ", attempt, " never reached worker ", holder.worker_id,
                       " (its LeaseJob call ended); requeued"),
          {}, deferred);
    }
    if (!status.ok()) return status;
  }
  RunDeferred(deferred);
  return absl::OkStatus();
}

}  // namespace compress::server
