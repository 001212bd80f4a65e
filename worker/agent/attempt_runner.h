// AttemptRunner: runs one leased attempt of a job on one device, from the spec to
// CompleteAttempt.
//
// It heartbeats on a thread of its own from the start (fetching a teacher blob may outlast the
// lease), writes the spec into the job's work dir (kept across attempts on this node, so that the
// executor resumes from its last completed phase), fetches the teacher blob the spec names,
// starts the executor in its own process group, relays its stdout lines in order (EventRelay),
// stops the executor on cancellation, on a lost lease, on the spec's time limit or when the agent
// shuts down (SIGTERM to the group, SIGKILL after a grace period), uploads the announced
// artifacts after a successful exit, and reports the outcome.
#ifndef COMPRESS_WORKER_AGENT_ATTEMPT_RUNNER_H_
#define COMPRESS_WORKER_AGENT_ATTEMPT_RUNNER_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "compress/v1/worker_service.grpc.pb.h"
#include "worker/agent/artifact_uploader.h"
#include "worker/agent/event_relay.h"
#include "worker/agent/job_dir_lock.h"
#include "worker/agent/rpc_retry.h"
#include "worker/agent/subprocess.h"

namespace compress::worker {

// How an attempt ended, as far as this worker is concerned.
struct AttemptResult {
  // The outcome reported with CompleteAttempt; ATTEMPT_OUTCOME_UNSPECIFIED when the attempt was
  // dropped (the lease was lost) or the outcome could not be delivered.
  compress::v1::AttemptOutcome outcome = compress::v1::ATTEMPT_OUTCOME_UNSPECIFIED;
  // Failure details as reported (empty on success).
  std::string error_code;
  std::string error_message;
  bool retryable = false;
  // Whether CompleteAttempt was acknowledged.
  bool completed = false;
  // Whether the executor was started.
  bool executor_started = false;
  // Why the executor could not be started (OK when it was, or when the attempt ended before it
  // was tried). A fault of this worker, not of the job: the lease was handed back (FAILED,
  // UNAVAILABLE, retryable, `stopping`), so that the attempt is not counted.
  absl::Status executor_start_error;
};

// Thread-safety: Run() is called once, from one thread; Shutdown() may be called from any
// thread at any time.
class AttemptRunner {
 public:
  struct Options {
    // The executor binary (compress-run).
    std::string executor_path;
    // Work dirs live under this directory, one per job: <work_root>/<job_id>.
    std::string work_root;
    // Passed to the executor as --threads when positive.
    int executor_threads = 0;
    // Time between SIGTERM and SIGKILL when the executor is stopped.
    absl::Duration kill_grace = absl::Seconds(30);
    // Heartbeats go every lease_seconds / 3, but at least this often: a cancellation is
    // noticed within this time even when the executor is silent.
    absl::Duration max_heartbeat_interval = absl::Seconds(5);
    // Deadline of unary calls (Heartbeat, CompleteAttempt).
    absl::Duration rpc_timeout = absl::Seconds(10);
    // Completion is retried this long while the server is away.
    absl::Duration complete_retry_for = absl::Minutes(5);
    // CompleteAttempt's error_message is cut to this many bytes, well below compressd's message
    // limit (--max_message_bytes, 4 MiB by default).
    size_t max_error_message_bytes = 64 << 10;
    // A report.json larger than this (compressd keeps at most 1 MiB in a job's record) is sent
    // as a short note naming its size; the whole file is the job's artifact report.json.
    size_t max_report_bytes = 1 << 20;
    // After Shutdown(), calls to the server are given up after this long.
    absl::Duration shutdown_retry_for = absl::Seconds(10);
    // Remove the job's work dir once the job is over (success, cancellation, final failure).
    bool remove_finished_work_dirs = true;
    // How long to wait for the job's directory while a retention sweep is moving it away
    // (moments, normally); the attempt then fails retryably.
    absl::Duration job_dir_lock_wait = absl::Seconds(30);
    // Echo the executor's stderr lines to this process's stderr, prefixed with the job name.
    bool echo_executor_stderr = true;
    EventRelay::Options relay;
    ArtifactUploader::Options upload;
  };

  // `stub` is not owned and must outlive the runner.
  AttemptRunner(compress::v1::WorkerService::StubInterface* stub, std::string worker_id,
                compress::v1::Device device, compress::v1::Lease lease, const Options& options);
  ~AttemptRunner();

  AttemptResult Run();

  // Stops the executor and reports the attempt FAILED (retryable, UNAVAILABLE) so that the job
  // resumes elsewhere.
  void Shutdown();

 private:
  enum class StopReason { kNone, kCancelled, kLeaseLost, kTimeLimit, kShutdown, kRelayFailed };

  // Sends SIGTERM to the executor's group, and SIGKILL after the grace period; records why.
  void RequestStop(StopReason reason, const absl::Status& why) ABSL_LOCKS_EXCLUDED(mu_);
  void StartKillLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Heartbeats every lease_seconds / 3 (at most max_heartbeat_interval) until Run() is done; stops
  // the executor at `time_limit_` once that is set.
  void HeartbeatLoop();
  void HandleLine(std::string line);
  AttemptResult Finish(const ExitInfo& exit_info, const std::string& stderr_tail);
  AttemptResult Complete(compress::v1::CompleteAttemptRequest request);
  // Reports an attempt stopped for `reason` (`why` says how), on top of `request`'s exit status
  // and stderr tail: CANCELLED, handed back (`stopping`) on shutdown, nothing when the lease was
  // lost, FAILED retryable otherwise.
  AttemptResult CompleteStopped(StopReason reason, const absl::Status& why,
                                compress::v1::CompleteAttemptRequest request);
  absl::Status PrepareWorkDir();
  std::string ReadReportJson() const;
  // Removes the job's directory once the job is over; otherwise marks it used now (its mtime),
  // for the retention sweep. Lets go of job_dir_lock_.
  void RemoveOrKeepWorkDir(const AttemptResult& result);
  bool ShuttingDown() const ABSL_LOCKS_EXCLUDED(mu_);
  bool StopRequested() const ABSL_LOCKS_EXCLUDED(mu_);
  // Why the attempt was stopped (kNone: it was not); `*why` gets the stop's status.
  StopReason CurrentStop(absl::Status* why) const ABSL_LOCKS_EXCLUDED(mu_);

  compress::v1::WorkerService::StubInterface* const stub_;
  const compress::v1::Device device_;
  const compress::v1::Lease lease_;
  const Options options_;
  const AttemptKey key_;
  std::string job_dir_;   // <work_root>/<job_id>
  std::string work_dir_;  // <job_dir>/work, the executor's --workdir
  std::string spec_path_;
  // A shared flock on job_dir_ from PrepareWorkDir() until the attempt has ended.
  JobDirLock job_dir_lock_;

  // Owned by the Run() thread.
  std::map<std::string, ArtifactUploader::Announced> artifacts_;
  std::optional<std::string> report_json_;
  // The code and message of the executor's last stdout line so far when that line is an
  // `error` line; only that line decides a failed run (docs/executor-contract.md).
  std::optional<std::string> last_error_code_;
  std::string last_error_message_;
  // "CODE: message" of the latest error line that other lines followed, for the failure message.
  std::optional<std::string> earlier_error_;
  int64_t time_limit_seconds_ = 0;
  // Set once by Run() before relay_ready_ is notified, then constant until destruction. The
  // relay's callbacks use mu_ and the fields it guards: the destructor destroys the relay (and
  // joins its thread) before any other member, and the callbacks never touch relay_ itself.
  std::unique_ptr<EventRelay> relay_;
  absl::Notification relay_ready_;

  absl::Notification executor_exited_;
  absl::Notification finished_;  // Run() is done: heartbeats stop

  mutable absl::Mutex mu_;
  std::unique_ptr<Subprocess> executor_ ABSL_GUARDED_BY(mu_);
  // Sends SIGKILL when the executor outlives the grace period after SIGTERM.
  std::thread killer_ ABSL_GUARDED_BY(mu_);
  StopReason stop_reason_ ABSL_GUARDED_BY(mu_) = StopReason::kNone;
  absl::Status stop_status_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  // When the executor, once started, has outlived the spec's time limit (the backstop).
  std::optional<absl::Time> time_limit_ ABSL_GUARDED_BY(mu_);
};

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_ATTEMPT_RUNNER_H_
