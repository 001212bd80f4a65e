// Scheduler, continued: the calls of a running attempt's worker (heartbeats, events, artifacts,
// completion) and the fencing that checks each against the current lease.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/core/executor_events.h"
#include "server/core/scheduler.h"  // the class implemented here
#include "worker/events/sha256.h"

namespace compress::server {
namespace {

absl::Status NotCurrent(const std::string& job_id, int attempt, absl::string_view why) {
  return absl::AbortedError(
      absl::StrCat("job ", job_id, " attempt ", attempt, " is no longer current: ", why));
}

// A digest of everything `result` says, so that a repeated completion can be told from another
// without keeping its report and messages. Each field is length-prefixed, so that no two results
// hash the same text.
std::string CompletionDigest(const AttemptResult& result) {
  Sha256 hasher;
  auto add = [&hasher](absl::string_view field) {
    hasher.Update(absl::StrCat(field.size(), ":"));
    hasher.Update(field);
  };
  add(absl::StrCat(static_cast<int>(result.outcome), ",", result.exit_status, ",",
                   result.retryable ? 1 : 0, ",", result.stopping ? 1 : 0));
  add(result.error_code);
  add(result.error_message);
  add(result.stderr_tail);
  add(result.report_json);
  return hasher.HexDigest();
}

}  // namespace

absl::StatusOr<Scheduler::ActiveLease*> Scheduler::CurrentLeaseLocked(const std::string& job_id,
                                                                      int attempt,
                                                                      const LeaseHolder& holder) {
  auto it = leases_.find(job_id);
  if (it == leases_.end()) {
    absl::StatusOr<Job> job = store_->GetJob(job_id);
    if (!job.ok()) return job.status();
    return NotCurrent(job_id, attempt,
                      absl::StrCat("the job is ", JobStateName(job->state), " after ",
                                   job->attempt_count, " attempt(s)"));
  }
  if (it->second.attempt != attempt) {
    return NotCurrent(job_id, attempt,
                      absl::StrCat("attempt ", it->second.attempt, " replaced it"));
  }
  if (it->second.recovered) return NotCurrent(job_id, attempt, "compressd restarted");
  if (it->second.expired) return NotCurrent(job_id, attempt, "its lease expired");
  if (it->second.worker_id != holder.worker_id) {
    return NotCurrent(
        job_id, attempt,
        absl::StrCat("it is leased to worker ", it->second.worker_id, ", not ", holder.worker_id));
  }
  // The same attempt number and worker, but another lease: the call's lease was handed back
  // (ReturnLease, or a completion with `stopping`) and the attempt given again. An empty
  // lease_id (an agent older than lease ids) is fenced by attempt and worker alone.
  if (!holder.lease_id.empty() && holder.lease_id != it->second.lease_id) {
    return NotCurrent(job_id, attempt,
                      absl::StrCat("its lease ", holder.lease_id,
                                   " was handed back and the attempt given again"));
  }
  return &it->second;
}

absl::StatusOr<bool> Scheduler::Heartbeat(const std::string& job_id, int attempt,
                                          const LeaseHolder& holder) {
  absl::MutexLock lock(&mu_);
  SeenLocked(holder.worker_id);
  absl::StatusOr<ActiveLease*> lease = CurrentLeaseLocked(job_id, attempt, holder);
  if (!lease.ok()) return lease.status();
  (*lease)->expiry = clock_->Elapsed() + options_.lease_duration;
  return (*lease)->cancel_requested;
}

absl::StatusOr<bool> Scheduler::ReportEvents(const std::string& job_id, int attempt,
                                             const LeaseHolder& holder,
                                             const std::vector<std::string>& lines,
                                             int64_t first_line) {
  // An attempt's lines are numbered from 1; far fewer than 2^53 fit in any store.
  constexpr int64_t kMaxFirstLine = int64_t{1} << 53;
  if (first_line < 0 || first_line > kMaxFirstLine) {
    return absl::InvalidArgumentError(
        absl::StrCat("first_line: must be in [0, 2^53], got ", first_line));
  }
  Deferred deferred;
  bool cancel_requested = false;
  {
    absl::MutexLock lock(&mu_);
    SeenLocked(holder.worker_id);
    absl::StatusOr<ActiveLease*> lease = CurrentLeaseLocked(job_id, attempt, holder);
    if (!lease.ok()) return lease.status();
    const absl::Time now = clock_->Now();  // the events' time
    (*lease)->expiry = clock_->Elapsed() + options_.lease_duration;
    cancel_requested = (*lease)->cancel_requested;
    const std::string device = (*lease)->device;
    // A numbered request is written with the job (its attempt_lines), in one transaction with
    // its events, so that the count survives a restart exactly when the lines do.
    std::optional<Job> job;
    auto fresh = lines.begin();
    if (first_line > 0) {
      absl::StatusOr<Job> stored = store_->GetJob(job_id);
      if (!stored.ok()) return stored.status();
      job = *std::move(stored);
      const int64_t have = job->attempt_lines;
      const int64_t count = static_cast<int64_t>(lines.size());
      if (first_line - 1 > have && count > 0) {
        deferred.push_back([job_id, attempt, have, first_line] {
          std::fprintf(stderr,
                       "compressd: job %s attempt %d: event lines %lld to %lld never arrived; "
                       "storing from line %lld\n",
                       job_id.c_str(), attempt, static_cast<long long>(have + 1),
                       static_cast<long long>(first_line - 1), static_cast<long long>(first_line));
        });
      }
      fresh += std::clamp<int64_t>(have - (first_line - 1), 0, count);
      if (fresh == lines.end()) return cancel_requested;  // a retry of lines already stored
      job->attempt_lines = std::max(have, first_line - 1 + count);
    }
    ExecutorUpdate update =
        fresh == lines.begin()
            ? TranslateExecutorLines(lines, attempt, now)
            : TranslateExecutorLines(std::vector<std::string>(fresh, lines.end()), attempt, now);
    auto phases_finished = std::move(update.phases_finished);
    const DeviceReport device_report = update.device;
    if (job.has_value() || update.current_phase.has_value() || update.report_json.has_value()) {
      if (!job.has_value()) {
        absl::StatusOr<Job> stored = store_->GetJob(job_id);
        if (!stored.ok()) return stored.status();
        job = *std::move(stored);
      }
      if (update.current_phase.has_value()) job->current_phase = *update.current_phase;
      if (update.report_json.has_value()) job->report_json = *update.report_json;
      if (absl::Status s = CommitLocked(*job, job->state, std::move(update.events), deferred);
          !s.ok()) {
        return s;
      }
    } else if (!update.events.empty()) {
      absl::StatusOr<std::vector<JobEvent>> stored =
          store_->Write(job_id, nullptr, std::move(update.events));
      if (!stored.ok()) return stored.status();
      auto job_update = std::make_shared<JobUpdate>(JobUpdate{*std::move(stored), std::nullopt});
      deferred.push_back([this, job_id, job_update = std::move(job_update)] {
        notifier_.Notify(job_id, std::move(job_update));
      });
    }
    if (options_.observer != nullptr) {
      for (const auto& [phase, seconds] : phases_finished) {
        options_.observer->PhaseFinished(phase, seconds);
      }
      options_.observer->DeviceReadings(holder.worker_id, device, device_report);
    }
  }
  RunDeferred(deferred);
  return cancel_requested;
}

absl::Status Scheduler::CheckAttempt(const std::string& job_id, int attempt,
                                     const LeaseHolder& holder) {
  absl::MutexLock lock(&mu_);
  return CurrentLeaseLocked(job_id, attempt, holder).status();
}

absl::Status Scheduler::InspectJob(const std::string& job_id,
                                   const std::function<absl::Status(const Job&)>& inspect) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job> job = store_->GetJob(job_id);
  if (!job.ok()) return job.status();
  return inspect(*job);
}

absl::Status Scheduler::RecordArtifact(const std::string& job_id, int attempt,
                                       const LeaseHolder& holder, const Artifact& artifact,
                                       const std::function<absl::Status()>& place,
                                       const std::function<absl::Status()>& unplace) {
  std::shared_ptr<const JobUpdate> update;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<ActiveLease*> lease = CurrentLeaseLocked(job_id, attempt, holder);
    if (!lease.ok()) return lease.status();
    // Placed again, although it is the same content: placing syncs the directory, which the first
    // upload may have failed to do.
    if (place != nullptr) {
      if (absl::Status s = place(); !s.ok()) return s;
    }
    auto recorded = (*lease)->artifacts.find(artifact.name);
    if (recorded != (*lease)->artifacts.end() && recorded->second.sha256 == artifact.sha256 &&
        recorded->second.size_bytes == artifact.size_bytes) {
      return absl::OkStatus();  // already recorded, with its event
    }
    absl::StatusOr<std::vector<JobEvent>> stored = store_->Write(
        job_id, nullptr, {ArtifactEvent(attempt, artifact, clock_->Now())}, &artifact);
    if (!stored.ok()) {
      if (place != nullptr && unplace != nullptr) {
        if (absl::Status undone = unplace(); !undone.ok()) {
          return absl::Status(stored.status().code(),
                              absl::StrCat(stored.status().message(),
                                           "; and undoing the file: ", undone.message()));
        }
      }
      return stored.status();
    }
    (*lease)->artifacts[artifact.name] = artifact;
    update = std::make_shared<JobUpdate>(JobUpdate{*std::move(stored), std::nullopt});
  }
  notifier_.Notify(job_id, std::move(update));
  return absl::OkStatus();
}

bool Scheduler::RepeatsCompletionLocked(const std::string& job_id, int attempt,
                                        const LeaseHolder& holder,
                                        const std::string& result_digest) {
  auto it = completions_.find(job_id);
  if (it == completions_.end()) return false;
  const Completion& done = it->second;
  if (clock_->Elapsed() - done.at >= kCompletionMemory) return false;
  return done.attempt == attempt && done.worker_id == holder.worker_id &&
         (holder.lease_id.empty() || holder.lease_id == done.lease_id) &&
         done.result_digest == result_digest;
}

void Scheduler::ForgetOldCompletionsLocked() {
  const absl::Duration now = clock_->Elapsed();
  while (!completion_times_.empty() && now - completion_times_.front().first >= kCompletionMemory) {
    const auto& [at, job_id] = completion_times_.front();
    // Unless the job completed again since (a later attempt): that completion has an entry of its
    // own further on.
    if (auto it = completions_.find(job_id); it != completions_.end() && it->second.at == at) {
      completions_.erase(it);
    }
    completion_times_.pop_front();
  }
}

absl::Status Scheduler::LoadCompletionsLocked() {
  const absl::Time now = clock_->Now();
  const absl::Duration elapsed = clock_->Elapsed();
  const absl::Time oldest = now - kCompletionMemory;
  absl::StatusOr<std::vector<CompletionRecord>> stored = store_->CompletionsSince(oldest);
  if (!stored.ok()) return stored.status();
  // Oldest first, so completion_times_ stays in order.
  for (CompletionRecord& record : *stored) {
    // Its age by wall time: the monotonic clock's origin is this process's. One from the future
    // (the wall clock was set back since) counts as recorded now.
    const absl::Duration age = std::max(absl::ZeroDuration(), now - record.time);
    if (age >= kCompletionMemory) continue;
    Completion completion{record.attempt, std::move(record.worker_id), std::move(record.lease_id),
                          std::move(record.result_digest), elapsed - age};
    completion_times_.emplace_back(completion.at, record.job_id);
    completions_[record.job_id] = std::move(completion);
  }
  // Older ones are of no more use; removing them keeps the table to the recent ones. Not fatal:
  // a full disk must not keep compressd from starting, and they are skipped when read.
  if (absl::Status forgot = store_->ForgetCompletionsBefore(oldest); !forgot.ok()) {
    std::fprintf(stderr, "compressd: cannot remove old completions from the job store: %s\n",
                 std::string(forgot.message()).c_str());
  }
  return absl::OkStatus();
}

absl::Status Scheduler::CompleteAttempt(const std::string& job_id, int attempt,
                                        const LeaseHolder& holder, const AttemptResult& result) {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    SeenLocked(holder.worker_id);
    const std::string digest = CompletionDigest(result);
    absl::StatusOr<ActiveLease*> lease = CurrentLeaseLocked(job_id, attempt, holder);
    if (!lease.ok()) {
      // The lease ended: by this very completion when it repeats the one recorded (the worker
      // retried because the first answer was lost), which is answered as the first was.
      if (RepeatsCompletionLocked(job_id, attempt, holder, digest)) return absl::OkStatus();
      return lease.status();
    }
    // Copied now: writing the job's new state drops the lease.
    Completion completion{attempt, holder.worker_id, (*lease)->lease_id, digest, clock_->Elapsed()};
    absl::StatusOr<Job> job = store_->GetJob(job_id);
    if (!job.ok()) return job.status();
    JobState from = job->state;
    absl::Time now = clock_->Now();
    // Stored with the job's new state, in the same transaction, so that a repeat is recognised
    // after a restart exactly when the completion was recorded.
    const CompletionRecord record{job_id, attempt, holder.worker_id, completion.lease_id,
                                  digest, now};
    absl::Status status;
    if (from == JobState::kCancelling || result.outcome == AttemptResult::Outcome::kCancelled) {
      std::string message =
          from == JobState::kCancelling
              ? "cancelled by request"
              : absl::StrCat("worker ", holder.worker_id, " cancelled attempt ", attempt);
      status = FinishLocked(*job, JobState::kCancelled, "CANCELLED", message, message, deferred,
                            &record);
    } else if (result.outcome == AttemptResult::Outcome::kSucceeded) {
      if (!result.report_json.empty()) job->report_json = result.report_json;
      status = FinishLocked(*job, JobState::kSucceeded, "", "",
                            absl::StrCat("attempt ", attempt, " succeeded"), deferred, &record);
    } else {
      std::vector<JobEvent> events;
      if (!result.stderr_tail.empty()) {
        events.push_back(LogEvent(
            attempt, "error", absl::StrCat("executor stderr (tail):\n", result.stderr_tail), now));
      }
      if (result.stopping) {
        // The executor was stopped, not failing: like a lease that never reached its worker,
        // this attempt does not use up one of the job's attempts, so that a job on its last
        // attempt resumes after a restart of compressd or of its worker.
        std::string message =
            absl::StrCat("attempt ", attempt, " of ", job->max_attempts, " handed back by worker ",
                         holder.worker_id, ": ",
                         result.error_message.empty() ? "stopping" : result.error_message);
        job->error_code = result.error_code.empty() ? "UNAVAILABLE" : result.error_code;
        job->error_message = message;
        status = RequeueUncountedLocked(
            *job, absl::StrCat(message, "; requeued (the attempt is not counted)"),
            std::move(events), deferred, &record);
      } else {
        std::string message = absl::StrCat(
            "attempt ", attempt, " of ", job->max_attempts, " failed",
            result.exit_status != 0 ? absl::StrCat(" (exit status ", result.exit_status, ")") : "",
            ": ", result.error_message.empty() ? "no reason given" : result.error_message);
        status = RetryOrFailLocked(*job, result.retryable, result.error_code, message,
                                   std::move(events), deferred, &record);
      }
    }
    if (!status.ok()) return status;
    completion_times_.emplace_back(completion.at, job_id);
    completions_[job_id] = std::move(completion);
  }
  RunDeferred(deferred);
  return absl::OkStatus();
}

}  // namespace compress::server
