// Agent: the worker agent's lease loops, one per device.
//
// Each loop long-polls WorkerService.LeaseJob for its device and runs the leased attempt with an
// AttemptRunner. When the server is away, the loops back off and keep trying (the channel
// reconnects on its own), never spinning.
#ifndef COMPRESS_WORKER_AGENT_AGENT_H_
#define COMPRESS_WORKER_AGENT_AGENT_H_

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/dial.h"
#include "compress/v1/worker_service.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "worker/agent/attempt_runner.h"

namespace compress::worker {

// Thread-safety: Run() is called once; Stop() may be called from any thread (a signal-waiting
// thread, typically), also before Run().
class Agent {
 public:
  struct Options {
    // Server address, "host:port".
    std::string server = "127.0.0.1:50051";
    // TLS and the bearer token (role worker) of the channel to the server.
    client::ChannelSecurity security;
    // Identifies this agent to the server; unique per agent.
    std::string worker_id;
    // Devices to offer; one lease loop each.
    std::vector<compress::v1::Device> devices;
    // LeaseJob's long-poll wait (at most 30).
    int lease_wait_seconds = 20;
    // Backoff between LeaseJob tries while the server is away.
    absl::Duration initial_backoff = absl::Milliseconds(500);
    absl::Duration max_backoff = absl::Seconds(10);
    // Running attempts.
    AttemptRunner::Options attempt;
    // An executor that cannot be started is this worker's fault, not the job's: its lease is
    // handed back (AttemptResult::executor_start_error) and no lease loop takes work for
    // executor_pause, doubled with each further failure up to executor_max_pause, and then only
    // once attempt.executor_path is an executable file again (CheckExecutable).
    absl::Duration executor_pause = absl::Seconds(10);
    absl::Duration executor_max_pause = absl::Minutes(5);
    // Job directories under attempt.work_root that no attempt or executor holds and that were
    // not modified for longer are removed (work_dir_sweeper.h): at start, then every
    // work_dir_sweep_interval (or every retention, when that is shorter, but at most once a
    // minute). Zero keeps them for ever.
    absl::Duration work_dir_retention = absl::Hours(72);
    absl::Duration work_dir_sweep_interval = absl::Hours(1);
  };

  // Creates the channel; INVALID_ARGUMENT when an option is unusable.
  static absl::StatusOr<std::unique_ptr<Agent>> Create(const Options& options);
  // For tests: an agent on a given stub (not owned; must outlive the agent).
  Agent(const Options& options, compress::v1::WorkerService::StubInterface* stub);

  // Runs the lease loops until Stop(); returns once every attempt in flight has ended (running
  // attempts are stopped and reported FAILED retryable, so that the jobs resume elsewhere).
  void Run();
  void Stop();

  // Attempts run to completion so far, for tests and logs.
  int attempts_run() const;

 private:
  Agent(const Options& options, std::shared_ptr<grpc::Channel> channel);
  void LeaseLoop(const compress::v1::Device& device);
  // Sweeps the work root now and then until Stop().
  void SweepLoop();
  bool Stopping() const;
  // Sleeps up to `delay`, less when Stop() is called.
  void SleepUnlessStopped(absl::Duration delay);
  // Returns once leasing may go on: at once, unless an executor could not be started; then once
  // the pause has passed and the executor is an executable file again. False after Stop().
  bool WaitForUsableExecutor();
  // Pauses leasing after the executor could not be started (`why`).
  void ExecutorFailed(const std::string& job, const absl::Status& why);
  // The executor started: the next failure pauses for executor_pause again.
  void ExecutorStarted();

  const Options options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<compress::v1::WorkerService::StubInterface> owned_stub_;
  compress::v1::WorkerService::StubInterface* const stub_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // LeaseJob calls in flight, cancelled by Stop().
  std::set<grpc::ClientContext*> lease_calls_ ABSL_GUARDED_BY(mu_);
  // Attempts in flight, shut down by Stop().
  std::set<AttemptRunner*> runners_ ABSL_GUARDED_BY(mu_);
  int attempts_run_ ABSL_GUARDED_BY(mu_) = 0;
  // Set when the executor could not be started, cleared once it is an executable file again.
  bool executor_broken_ ABSL_GUARDED_BY(mu_) = false;
  // No lease loop takes work before this time.
  absl::Time executor_paused_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // The latest pause; zero once the executor started again.
  absl::Duration executor_pause_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
};

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_AGENT_H_
