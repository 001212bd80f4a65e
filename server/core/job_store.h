// JobStore: the durable record of jobs, their events and artifacts, on SQLite.
//
// The database runs in WAL mode with synchronous=FULL: a call that returned OK has reached the
// disk, so every accepted job and every event survives a crash of the process or the machine
// (NORMAL would only protect against a process crash; a job is worth one fsync). The schema
// carries a version (table schema_version); an older database is migrated when it is opened,
// and opening one of a newer version is FAILED_PRECONDITION.
#ifndef COMPRESS_SERVER_CORE_JOB_STORE_H_
#define COMPRESS_SERVER_CORE_JOB_STORE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/core/job.h"
#include "server/core/job_filter.h"
#include "server/core/sqlite_statement.h"
#include "server/core/wal_checkpointer.h"

struct sqlite3;

namespace compress::server {

// A page of ListJobs.
struct JobPage {
  std::vector<Job> jobs;
  // Pass as `after_cursor` for the next page; 0 when this page is the last.
  int64_t next_cursor = 0;
};

// The outcome of CreateJob.
struct CreatedJob {
  Job job;
  // False when a job with the same request_id existed: `job` is that earlier job.
  bool created = false;
};

// The last completion of a job's attempt, as Scheduler::CompleteAttempt recorded it: kept with
// the job, so that the same completion sent again after a restart of compressd (a worker's retry
// whose first answer was lost) is still recognised.
struct CompletionRecord {
  std::string job_id;
  int attempt = 0;
  std::string worker_id;
  // The lease's id (also when the worker's call named none).
  std::string lease_id;
  // A digest of the result the worker reported.
  std::string result_digest;
  // When it was recorded: wall time, the only clock that means the same after a restart.
  absl::Time time = absl::UnixEpoch();
};

// A job for CreateJobs, with the events it starts with.
struct NewJob {
  Job job;
  std::vector<JobEvent> events;
};

// Thread-safe: one connection for reads and writes, serialised by a mutex; every write is one
// transaction (CreateJobs: one for the batch). A WalCheckpointer with a second connection of its
// own keeps the WAL short.
class JobStore {
 public:
  struct Options {
    // The database file; created with its schema when missing.
    std::string path;
    // synchronous=FULL (true) or NORMAL (false, faster, durable across process crashes only).
    bool synchronous_full = true;
  };

  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const Options& options);
  ~JobStore();

  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // Inserts `job` (whose id must be new) and appends `events` to it. When job.request_id is
  // non-empty and already used in job.tenant, nothing is written and the earlier job is
  // returned. When `max_queued_in_tenant` > 0 and job.tenant already has that many QUEUED jobs,
  // nothing is written and the result is RESOURCE_EXHAUSTED (a repeated request_id still returns
  // its job).
  absl::StatusOr<CreatedJob> CreateJob(const Job& job, std::vector<JobEvent> events,
                                       int64_t max_queued_in_tenant = 0);
  // CreateJob for each of `jobs`, in order, in one transaction (one sync to disk): each job in a
  // savepoint of its own, so that one refused (a quota, a constraint) leaves the others. A job
  // sees those before it in the batch (a repeated request_id returns the earlier one; they count
  // towards the quota). When the transaction cannot commit, every result is that error and
  // nothing is written.
  std::vector<absl::StatusOr<CreatedJob>> CreateJobs(std::vector<NewJob> jobs,
                                                     int64_t max_queued_in_tenant = 0);

  // NOT_FOUND when no job has this id. Artifacts are filled in.
  absl::StatusOr<Job> GetJob(const std::string& id);

  // Up to `page_size` (at least 1) jobs matching `filter` in creation order, starting after
  // `after_cursor` (0 = from the first). With `max_bytes` > 0 the page also ends after the job that
  // brings the text of its jobs (spec, report, error, labels and the other strings) to `max_bytes`
  // or more, so that a page of large jobs is not read whole into memory; it always holds a job when
  // one matches. INVALID_ARGUMENT for a filter of more than kMaxLabels labels.
  absl::StatusOr<JobPage> ListJobs(const JobFilter& filter, int page_size, int64_t after_cursor,
                                   int64_t max_bytes = 0);

  // Every job in one of `states`, in creation order, without artifacts.
  absl::StatusOr<std::vector<Job>> JobsInStates(const std::vector<JobState>& states);

  // In one transaction: writes the mutable fields of `job` when non-null (state, times, attempt
  // count, phase, error, report, lease owner, attempt lines), records `artifact` when non-null
  // (replacing one of the same name), records `completion` when non-null (replacing the job's
  // earlier one; its job_id must be `job_id`), and appends `events` with the next sequence
  // numbers. Returns the events as stored. NOT_FOUND when the job does not exist.
  absl::StatusOr<std::vector<JobEvent>> Write(const std::string& job_id, const Job* job,
                                              std::vector<JobEvent> events,
                                              const Artifact* artifact = nullptr,
                                              const CompletionRecord* completion = nullptr);

  // The completions recorded (by Write) at or after `since`, oldest first.
  absl::StatusOr<std::vector<CompletionRecord>> CompletionsSince(absl::Time since);
  // Removes the completions recorded before `before`.
  absl::Status ForgetCompletionsBefore(absl::Time before);

  // Up to `limit` events of the job with sequence > after_sequence, in order. An unknown job has
  // no events.
  absl::StatusOr<std::vector<JobEvent>> ListEvents(const std::string& job_id,
                                                   int64_t after_sequence, int limit);

  // Removes the job with its labels, events, artifact records and completion. NOT_FOUND when
  // absent.
  absl::Status DeleteJob(const std::string& id);

  // Records that `tenant` uploaded the blob `sha256` (blobs are stored once per content; each
  // tenant that uploaded it may name it in a job spec). Recording it again changes nothing.
  absl::Status AddBlobOwner(const std::string& tenant, const std::string& sha256);
  // Whether `tenant` uploaded the blob.
  absl::StatusOr<bool> IsBlobOwner(const std::string& tenant, const std::string& sha256);

  // Number of jobs in each state (states without jobs are absent).
  absl::StatusOr<std::map<JobState, int64_t>> CountByState();

  // Checkpoints of the WAL so far: by the checkpointer's thread, and by commits that found it
  // fallen behind.
  struct WalCheckpoints {
    int64_t background = 0;
    int64_t in_commits = 0;
  };
  WalCheckpoints wal_checkpoints();

  // How many prepared statements the store keeps for reuse (a fixed set, whatever the calls).
  size_t CachedStatements();

 private:
  explicit JobStore(sqlite3* db) : db_(db) {}

  absl::Status Init(const Options& options) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Job> GetJobLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadArtifactsLocked(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<JobEvent>> AppendEventsLocked(const std::string& job_id,
                                                           std::vector<JobEvent> events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status InsertJobLocked(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CreateJob's checks and writes, inside the caller's transaction.
  absl::StatusOr<CreatedJob> CreateJobLocked(const Job& job, std::vector<JobEvent> events,
                                             int64_t max_queued_in_tenant)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `body` inside BEGIN IMMEDIATE ... COMMIT, rolling back when it fails.
  template <typename Body>
  auto InTransactionLocked(Body body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> decltype(body());

  absl::Mutex mu_;
  sqlite3* const db_;                              // owned; closed by the destructor
  std::unique_ptr<WalCheckpointer> checkpointer_;  // set by Open
  // Prepared statements, keyed by their SQL text, prepared on first use and reused.
  std::map<std::string, Statement> statements_ ABSL_GUARDED_BY(mu_);
  // The prepared statement for `sql`, reset and with no bindings.
  absl::StatusOr<Statement*> StatementLocked(const std::string& sql)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_JOB_STORE_H_
