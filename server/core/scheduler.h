// Scheduler: the job queue, worker leases, retries and cancellation.
//
// Every change of a job's state goes through here, is written to the JobStore (with its events)
// before the call returns, and is announced through the JobNotifier. The queue runs by priority
// (higher first), then in order of creation. A worker leases one job per device, and only a job
// that device may run (see DeviceNeed): the queue is kept as one ordered set per DeviceNeed, and
// a worker device takes the best head among the sets it may take. The lease names an attempt
// number and a lease id, which every later call of the worker must carry with its worker id (a
// LeaseHolder): a call of a lease that is no longer current is ABORTED (fencing), so a worker
// that lost its lease cannot touch the attempt that replaced it. The attempt number alone does
// not tell leases apart: a lease handed back (ReturnLease, CompleteAttempt with `stopping`)
// requeues the job without counting the attempt, and the next lease carries the same number,
// perhaps to the same worker id; its lease id is new.
//
// Leases are renewed by heartbeats and kept in memory only: when the server restarts, jobs that
// were RUNNING go back to the queue (their attempt count kept) and CANCELLING ones become
// CANCELLED, so that every job resumes or ends. Each job's last completion is stored with the job
// (JobStore's CompletionRecord), so that a worker's repeat of it is recognised after a restart too.
//
// Time: stored and shown timestamps (create_time, queue_time, event times) are wall time,
// Clock::Now(); every duration and deadline kept in memory (lease expiry, long-poll and CreateJob
// deadlines, the workers gauge's window, the queue-wait metric) runs on the monotonic
// Clock::Elapsed(), so that a step of the wall clock neither expires every lease at once nor keeps
// the leases of dead workers. None of them is stored, so a restart starts them afresh; the one
// duration that outlives a restart, the age of a stored completion (kCompletionMemory), is taken
// from its stored wall time when the scheduler starts, and runs on the monotonic clock from there.
#ifndef COMPRESS_SERVER_CORE_SCHEDULER_H_
#define COMPRESS_SERVER_CORE_SCHEDULER_H_

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/clock.h"
#include "server/core/job.h"
#include "server/core/job_notifier.h"
#include "server/core/job_store.h"
#include "server/core/scheduler_observer.h"

namespace compress::server {

// The kind of worker device a job may run on, from its spec's `resources.device`.
enum class DeviceNeed {
  kCpu = 0,   // "cpu": only a worker device "cpu".
  kCuda = 1,  // "cuda" or "cuda:N": only a worker device "cuda" or "cuda:N" (any index).
  kAuto = 2,  // "auto", missing or empty: any worker device.
};
inline constexpr int kDeviceNeedCount = 3;

// The DeviceNeed of a job spec (JSON, as in Job::spec_json). A spec that cannot be read, or whose
// resources.device is not a string, needs kAuto.
DeviceNeed DeviceNeedOfSpec(const std::string& spec_json);
// "cpu", "cuda" or "auto".
const char* DeviceNeedName(DeviceNeed need);
// Whether a worker device named `device` ("cpu", "cuda:N", ...) may lease a job needing `need`.
// A device that is neither "cpu" nor "cuda"/"cuda:N" takes kAuto jobs only.
bool DeviceMayRun(absl::string_view device, DeviceNeed need);

// What a client asks for in CreateJob (validated by the caller).
struct JobRequest {
  // The caller's tenant; empty when the server runs without authentication.
  std::string tenant;
  std::string spec_json;
  std::map<std::string, std::string> labels;
  int priority = 0;
  std::string request_id;
  // 0 = Options::default_max_attempts; at most Scheduler::kMaxAttemptsLimit.
  int max_attempts = 0;
};

// A job handed to a worker.
struct Lease {
  std::string job_id;
  int attempt = 0;
  std::string spec_json;
  absl::Duration lease_duration;
  int64_t last_event_sequence = 0;
  // New with every lease (NewLeaseId), also when a lease handed back is given again with the same
  // attempt number.
  std::string lease_id;
};

// Who makes a call about an attempt: the worker and the lease it holds, as every call of the
// attempt names them.
struct LeaseHolder {
  std::string worker_id;
  // The Lease's lease_id. Empty (agents older than lease ids): the call is fenced by attempt
  // number and worker_id alone. Defaulted, so that `{worker_id}` names such a holder.
  std::string lease_id = {};
};

// How a worker ended an attempt.
struct AttemptResult {
  enum class Outcome { kSucceeded, kFailed, kCancelled };
  Outcome outcome = Outcome::kFailed;
  // For failures: canonical code name and message, exit status, tail of stderr, and whether
  // another attempt may succeed.
  std::string error_code;
  std::string error_message;
  int exit_status = 0;
  std::string stderr_tail;
  bool retryable = false;
  // For failures: the worker stopped the attempt because it or compressd is shutting down (the
  // executor did not fail); the job is requeued without counting the attempt.
  bool stopping = false;
  // The executor's report (JSON), on success; empty keeps the one its events carried.
  std::string report_json;
};

// Thread-safe. Callbacks (lease waiters, notifier subscribers) never run with the scheduler's
// mutex held.
class Scheduler {
 public:
  struct Options {
    // How long a lease lasts without a heartbeat (compressd's --lease_seconds). Positive.
    absl::Duration lease_duration = absl::Seconds(30);
    // Attempts of a job whose request gives none (compressd's --max_attempts). In
    // [1, kMaxAttemptsLimit].
    int default_max_attempts = 3;
    // CreateJob is RESOURCE_EXHAUSTED while the request's tenant has this many QUEUED jobs;
    // 0 = no limit.
    int64_t max_queued_jobs_per_tenant = 0;
    // CreateJob calls waiting to be written at most; one more is UNAVAILABLE at once (the store
    // is not keeping up).
    int max_pending_creates = 4096;
    // Source of time; nullptr = the system clock. Not owned; must outlive the scheduler.
    Clock* clock = nullptr;
    // Told about jobs and workers (metrics); may be nullptr. Not owned; must outlive the
    // scheduler.
    SchedulerObserver* observer = nullptr;
  };

  // The most attempts a job may have: the bound of Options::default_max_attempts and of a
  // request's max_attempts.
  static constexpr int kMaxAttemptsLimit = 100;

  using LeaseCallback = std::function<void(absl::StatusOr<std::optional<Lease>>)>;

  // Loads the queue from `store` (not owned; must outlive the scheduler), requeueing jobs that
  // were RUNNING and cancelling those that were CANCELLING, and the completions recorded within
  // kCompletionMemory (by wall time; one stored in the future counts as recorded now). A requeue
  // or cancellation that cannot be written (a full disk) does not fail it: the job is held as
  // an expired lease and written again every kExpiryRetryDelay until the store takes it.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(JobStore* store, const Options& options);
  // Stops the background thread and answers every waiter with no lease.
  ~Scheduler();

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Starts a thread that expires leases and times out waiters as the clock passes their
  // deadlines. Without it, ProcessTimeouts() must be called (as tests do with a ManualClock).
  void StartBackgroundThread();
  // Answers every lease waiter with no lease and refuses new waits, leases and jobs
  // (UNAVAILABLE); tells every notifier subscriber, so that open watches can end; stops the
  // background thread. Workers may still report on and complete the attempts they hold.
  // Idempotent.
  void Shutdown();
  // Whether Shutdown() was called.
  bool ShuttingDown();

  JobNotifier& notifier() { return notifier_; }
  JobStore& store() { return *store_; }

  // Creates a QUEUED job, or returns the earlier job of the tenant with the same request_id.
  // RESOURCE_EXHAUSTED when the tenant is at Options::max_queued_jobs_per_tenant; UNAVAILABLE
  // after Shutdown().
  absl::StatusOr<CreatedJob> CreateJob(const JobRequest& request);
  using CreateDone = std::function<void(absl::StatusOr<CreatedJob>)>;
  // CreateJob, answering through `done` once the job is committed (on this thread or another).
  // Calls share transactions (group commit): a call made while none is writing writes its job
  // at once; calls arriving meanwhile queue up, and the writing thread then writes all of them
  // (up to kMaxCreateBatch at a time) in one transaction, one sync to disk, in arrival order,
  // until none is left: under a steady stream of calls, one caller's thread keeps writing (and a
  // synchronous CreateJob that became the writer returns only then). `done` runs with no lock
  // held and must not call CreateJob itself. UNAVAILABLE at once when
  // Options::max_pending_creates calls are already waiting. A call still waiting when
  // `deadline` has passed is answered DEADLINE_EXCEEDED and its job is not written (its caller
  // has given up on it). `deadline` is read against the system's wall clock (absl::Now(), not
  // Options::clock) on entry, and the time it leaves is then measured on the monotonic clock.
  // The scheduler must outlive every call.
  void CreateJobAsync(JobRequest request, CreateDone done,
                      absl::Time deadline = absl::InfiniteFuture());
  static constexpr int kMaxCreateBatch = 64;
  // How soon ProcessTimeouts writes an expired lease's job again when the write failed (a full or
  // failing disk).
  static constexpr absl::Duration kExpiryRetryDelay = absl::Seconds(1);
  // QUEUED -> CANCELLED; RUNNING -> CANCELLING (the worker learns it on its next heartbeat);
  // CANCELLING stays; a RUNNING or CANCELLING job that no worker holds -> CANCELLED. A finished
  // job is FAILED_PRECONDITION.
  absl::StatusOr<Job> CancelJob(const std::string& job_id);
  // Deletes a finished job (FAILED_PRECONDITION otherwise) from the store. Returns it as it was.
  absl::StatusOr<Job> DeleteJob(const std::string& job_id);

  // Leases to `worker_id` for `device` the next queued job that device may run (DeviceMayRun), or
  // nullopt when none is queued.
  absl::StatusOr<std::optional<Lease>> LeaseNext(const std::string& worker_id,
                                                 const std::string& device);
  // Like LeaseNext, but when no job for `device` is queued waits until one arrives or `deadline`
  // passes, then calls `done` (with nullopt on timeout). `done` may run before this returns.
  // `deadline` is wall time, read against the clock's Now() on entry; the time it leaves is then
  // measured on the monotonic clock. Returns a waiter id for CancelWait.
  int64_t WaitForLease(const std::string& worker_id, const std::string& device, absl::Time deadline,
                       LeaseCallback done);
  // Withdraws a waiter. True when it was still waiting: its callback will then never run.
  bool CancelWait(int64_t waiter_id);
  // Takes back a lease that never reached its worker (the LeaseJob call ended before the answer
  // could be sent): the job returns to the queue and the attempt is not counted, so its number
  // is given again (with a new lease id). Does nothing unless the attempt is current and held by
  // `holder`.
  absl::Status ReturnLease(const std::string& job_id, int attempt, const LeaseHolder& holder);

  // The calls of a running attempt below are ABORTED unless the attempt is the job's current one,
  // held by `holder` (its worker_id and, when not empty, its lease_id); NOT_FOUND for an unknown
  // job.

  // Renews the lease of the attempt. Returns whether cancellation was requested.
  absl::StatusOr<bool> Heartbeat(const std::string& job_id, int attempt, const LeaseHolder& holder);
  // Records executor event lines of the attempt (see executor_events.h) and renews its lease.
  // Returns whether cancellation was requested. `first_line` > 0 numbers the lines within the
  // attempt (lines[0] is line first_line, and so on): lines the store already holds for the
  // attempt (Job::attempt_lines, a retry whose answer was lost) are skipped, and a request that
  // starts past them (a gap) is stored as it is. 0: not numbered, every line is stored.
  absl::StatusOr<bool> ReportEvents(const std::string& job_id, int attempt,
                                    const LeaseHolder& holder,
                                    const std::vector<std::string>& lines, int64_t first_line = 0);
  // OK when the attempt is current and held by `holder`; ABORTED or NOT_FOUND otherwise.
  absl::Status CheckAttempt(const std::string& job_id, int attempt, const LeaseHolder& holder);
  // Records an uploaded artifact of the attempt, with its event. `place`, when given, puts the
  // file in place (replacing the one of the same name); it runs only once the attempt is known
  // to be current, under the lock that also orders it with InspectJob, so that an attempt that
  // was fenced off cannot replace the current attempt's file, and a reader never pairs one
  // version's record with another's file. Its error is returned and nothing is recorded. When
  // the record cannot be written after `place` succeeded, `unplace` (when given) undoes it, so
  // that the file on disk stays the one the record describes. The artifact this lease last
  // recorded under the same name, with the same size and sha256 (an upload retried after its
  // answer was lost), is placed again (the same bytes) but not recorded again: no second event.
  // Another content under that name replaces the record, with an event of its own.
  absl::Status RecordArtifact(const std::string& job_id, int attempt, const LeaseHolder& holder,
                              const Artifact& artifact,
                              const std::function<absl::Status()>& place = nullptr,
                              const std::function<absl::Status()>& unplace = nullptr);
  // Calls `inspect` with the job as stored, under the scheduler's lock: no change of the job
  // (and no artifact placed by RecordArtifact) happens while it runs, so a file it opens matches
  // the job's artifact records. Returns what `inspect` returns; NOT_FOUND for an unknown job.
  // `inspect` must be quick: every scheduler call waits for it.
  absl::Status InspectJob(const std::string& job_id,
                          const std::function<absl::Status(const Job&)>& inspect);
  // Ends the attempt: SUCCEEDED; FAILED and retryable -> QUEUED again while attempts remain;
  // otherwise FAILED; FAILED with `stopping` -> QUEUED again and the attempt is not counted (as
  // ReturnLease), even on the last attempt; a job being cancelled (or an attempt reporting
  // CANCELLED) -> CANCELLED. A repeat of the job's last recorded completion (the same attempt,
  // worker, lease id and result, within kCompletionMemory: a worker's retry whose first answer
  // was lost) is OK, as the first was, and changes nothing, also after a restart (the completion
  // is stored with the job's new state, in one transaction); a lease id left empty is matched by
  // attempt and worker alone. Any other completion of a lease that is no longer current is
  // ABORTED.
  absl::Status CompleteAttempt(const std::string& job_id, int attempt, const LeaseHolder& holder,
                               const AttemptResult& result);
  // How long the last completion of each job is remembered for CompleteAttempt's repeats.
  // compress-worker retries CompleteAttempt for 5 minutes, so three times that: the memory holds
  // the jobs finished in that window only. A restart keeps them: the scheduler loads those
  // stored within the window (by their wall time) and forgets older ones.
  static constexpr absl::Duration kCompletionMemory = absl::Minutes(15);

  // Expires leases past their deadline (requeue or fail) and answers waiters whose deadline
  // passed. Called by the background thread, or by tests.
  void ProcessTimeouts();

  // Workers that leased, waited or heartbeat within the last lease window, or are waiting now.
  int WorkersConnected();

  // How many QUEUED jobs needing `need` the queue holds.
  int64_t QueuedJobs(DeviceNeed need);

 private:
  struct ActiveLease {
    std::string worker_id;
    std::string device;
    int attempt = 0;
    // Lease::lease_id.
    std::string lease_id;
    // On the monotonic clock (Clock::Elapsed()).
    absl::Duration expiry;
    bool cancel_requested = false;
    // The lease expired but writing the job's requeue (or failure) failed: the worker's calls are
    // refused as for a lease that is gone, and the write is tried again at `expiry`.
    bool expired = false;
    // With `expired`: the job was RUNNING or CANCELLING when compressd started and its requeue
    // (or cancellation) could not be written then; no worker of this process held it.
    bool recovered = false;
    // The artifacts RecordArtifact recorded for this lease, by name: the same one recorded again
    // (an upload retried after its answer was lost) makes no second event.
    std::map<std::string, Artifact> artifacts = {};
  };
  // A completion that CompleteAttempt recorded: which lease ended, and how.
  struct Completion {
    int attempt = 0;
    std::string worker_id;
    // The lease's id (ActiveLease::lease_id), also when the call named none.
    std::string lease_id;
    // CompletionDigest of the AttemptResult: a repeat must carry the same result.
    std::string result_digest;
    // When it was recorded, on the monotonic clock (Clock::Elapsed()).
    absl::Duration at;
  };
  struct Waiter {
    int64_t id = 0;
    std::string worker_id;
    std::string device;
    // On the monotonic clock (Clock::Elapsed()).
    absl::Duration deadline;
    LeaseCallback done;
  };
  // Higher priority first (hence the negation), then older first, then in creation order (jobs
  // written in one transaction share their creation time), then the id.
  using QueueKey = std::tuple<int64_t, int64_t, int64_t, std::string>;
  // Where a QUEUED job sits: its key in queues_[need].
  struct QueuedJob {
    QueueKey key;
    DeviceNeed need = DeviceNeed::kAuto;
    // When it entered the queue, on the monotonic clock (Clock::Elapsed()); for the queue-wait
    // metric.
    absl::Duration since;
  };
  // A CreateJob call waiting for its transaction.
  struct PendingCreate {
    JobRequest request;
    CreateDone done;
    // On the system's monotonic clock (Clock::Real()->Elapsed()).
    absl::Duration deadline = absl::InfiniteDuration();
    absl::StatusOr<CreatedJob> result = absl::UnknownError("not written");
  };
  // Work to do once the mutex is released.
  using Deferred = std::vector<std::function<void()>>;

  Scheduler(JobStore* store, const Options& options);

  // Shutdown(), telling notifier subscribers when `notify_watchers` (and this is the first call).
  void Stop(bool notify_watchers);
  absl::Status RecoverLocked(Deferred& deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes what a restart makes of `job`, which was RUNNING or CANCELLING when compressd started:
  // requeued (or FAILED) and CANCELLED respectively. The error of the store when that failed.
  absl::Status RecoverLeasedJobLocked(Job& job, Deferred& deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts `job` in the queue of its DeviceNeed (read from its spec). Its time in the queue counts
  // from its queue_time, taken to be no later than now (a job requeued in an earlier process, or
  // a wall clock set back).
  void EnqueueLocked(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InsertQueuedLocked(const std::string& id, const QueuedJob& queued)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The queue (by its DeviceNeed) whose head is the best job `device` may run; nullopt when no
  // such job is queued.
  std::optional<DeviceNeed> BestQueueLocked(absl::string_view device)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool QueueEmptyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells the observer the length of the queue of `need`.
  void QueueChangedLocked(DeviceNeed need) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<Lease>> LeaseNextLocked(const std::string& worker_id,
                                                       const std::string& device,
                                                       Deferred& deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands queued jobs to waiting workers, oldest waiter first; a waiter whose device may run none
  // of the queued jobs keeps waiting without holding up younger ones.
  void DispatchLocked(Deferred& deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The current lease of the attempt, when `holder` holds it; ABORTED / NOT_FOUND otherwise.
  absl::StatusOr<ActiveLease*> CurrentLeaseLocked(const std::string& job_id, int attempt,
                                                  const LeaseHolder& holder)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `holder`'s completion of `attempt` of the job with `result_digest` repeats the job's
  // last recorded completion, remembered for kCompletionMemory.
  bool RepeatsCompletionLocked(const std::string& job_id, int attempt, const LeaseHolder& holder,
                               const std::string& result_digest) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the completions recorded more than kCompletionMemory ago.
  void ForgetOldCompletionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Loads the completions the store recorded within kCompletionMemory (before a restart), and
  // removes older ones from it.
  absl::Status LoadCompletionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes `job` (moved from `from`) with `events` to the store, tells the observer, and
  // schedules the notification. Requeues, finishes or drops leases as the new state requires.
  // `artifact` and `completion`, when given, are written in the same transaction.
  absl::Status CommitLocked(Job& job, JobState from, std::vector<JobEvent> events,
                            Deferred& deferred, const Artifact* artifact = nullptr,
                            const CompletionRecord* completion = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves `job` to the final `state` with the error `code` and `message` (empty on success) and
  // a state_change event giving `reason`. The three below store `completion` with the job when
  // given (CompleteAttempt's).
  absl::Status FinishLocked(Job& job, JobState state, const std::string& code,
                            const std::string& message, const std::string& reason,
                            Deferred& deferred, const CompletionRecord* completion = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves a RUNNING job back to the queue without counting its current attempt (its number is
  // given again), with a state_change event giving `reason` after `events`.
  absl::Status RequeueUncountedLocked(Job& job, const std::string& reason,
                                      std::vector<JobEvent> events, Deferred& deferred,
                                      const CompletionRecord* completion = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves a job whose attempt ended without success: back to the queue while attempts remain
  // and `retryable`, else to FAILED with `code` and `message`.
  absl::Status RetryOrFailLocked(Job& job, bool retryable, const std::string& code,
                                 const std::string& message, std::vector<JobEvent> events,
                                 Deferred& deferred, const CompletionRecord* completion = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes what the expiry of `lease` makes of its job: requeued or FAILED when RUNNING,
  // CANCELLED when CANCELLING (as RecoverLeasedJobLocked does for a `recovered` lease). The
  // error of the store when that write failed (NOT_FOUND for a job that is gone).
  absl::Status ExpireLeaseLocked(const std::string& job_id, const ActiveLease& lease,
                                 Deferred& deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Creates the jobs of `batch` in one store transaction and sets their results.
  void CreateBatch(std::vector<PendingCreate>& batch) ABSL_LOCKS_EXCLUDED(mu_);
  void SeenLocked(const std::string& worker_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int WorkersConnectedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void BackgroundLoop();
  static void RunDeferred(Deferred& deferred);

  // Constant after construction.
  JobStore* const store_;
  const Options options_;
  Clock* const clock_;
  JobNotifier notifier_;

  absl::Mutex mu_;
  // The QUEUED jobs, one ordered set per DeviceNeed (indexed by its value).
  std::array<std::set<QueueKey>, kDeviceNeedCount> queues_ ABSL_GUARDED_BY(mu_);
  // Where each QUEUED job sits in queues_.
  std::map<std::string, QueuedJob> queued_ ABSL_GUARDED_BY(mu_);
  // Lease of each RUNNING or CANCELLING job.
  std::map<std::string, ActiveLease> leases_ ABSL_GUARDED_BY(mu_);
  // The last completion of each job, recorded within kCompletionMemory (see CompleteAttempt).
  std::map<std::string, Completion> completions_ ABSL_GUARDED_BY(mu_);
  // (Completion::at, job id) of every completion recorded, oldest first, for forgetting them; an
  // entry whose job's completion was replaced since is skipped.
  std::deque<std::pair<absl::Duration, std::string>> completion_times_ ABSL_GUARDED_BY(mu_);
  // Waiting workers, oldest first.
  std::list<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  int64_t next_waiter_id_ ABSL_GUARDED_BY(mu_) = 1;
  // When each worker was last heard from, on the monotonic clock (Clock::Elapsed()).
  std::map<std::string, absl::Duration> last_seen_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Set to wake the background thread (a new deadline, or shutdown).
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  std::thread background_;

  // CreateJob calls not yet written, in arrival order, and whether a thread is writing them.
  absl::Mutex create_mu_;  // never held while taking mu_
  std::deque<PendingCreate> pending_creates_ ABSL_GUARDED_BY(create_mu_);
  bool create_writer_ ABSL_GUARDED_BY(create_mu_) = false;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_SCHEDULER_H_
