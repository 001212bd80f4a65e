// LocalWorkers: the compress-worker processes compressd starts itself (--local_workers=N), for
// the one-machine, one-command setup.
#ifndef COMPRESS_SERVER_CORE_LOCAL_WORKERS_H_
#define COMPRESS_SERVER_CORE_LOCAL_WORKERS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace compress::server {

// Starts `count` processes and restarts any that exits (after `restart_delay`) until Stop().
// Each runs in its own process group, with every signal unblocked, and receives SIGTERM if the
// thread that supervises it dies (PR_SET_PDEATHSIG), so that a compressd killed with SIGKILL
// leaves no agents behind. With `count` > 1, process I (restarts included) also gets
// --device_share=I/count, so that the agents, each on --devices=auto, offer disjoint sets of
// the machine's GPUs. Thread-safe.
class LocalWorkers {
 public:
  struct Options {
    // The compress-worker executable.
    std::string binary;
    // Its arguments (without argv[0]); the same for every process, but for --device_share.
    std::vector<std::string> args;
    // Number of processes.
    int count = 0;
    // Pause before restarting a process that exited.
    absl::Duration restart_delay = absl::Seconds(1);
    // How long Stop() waits after SIGTERM before SIGKILL. A compress-worker's own shutdown takes
    // up to its --kill_grace (30 s by default: SIGTERM to the executor, then SIGKILL) plus about
    // 20 s (the last events, then CompleteAttempt handing the attempt back, each given up after
    // 10 s); a worker killed before that leaves its job RUNNING and its executor, in a process
    // group of its own, running.
    absl::Duration stop_grace = absl::Seconds(60);
  };

  // NOT_FOUND when `binary` is not an executable file; INVALID_ARGUMENT as CheckArgs.
  static absl::StatusOr<std::unique_ptr<LocalWorkers>> Start(const Options& options);

  // INVALID_ARGUMENT, naming --local_workers and --local_worker_flags, when `count` > 1 and
  // `args` give a --devices naming a GPU (every process would offer it; only auto is shared out,
  // and cpu is every process's) or a --device_share of their own.
  static absl::Status CheckArgs(const std::vector<std::string>& args, int count);
  // Stops the processes (see Stop).
  ~LocalWorkers();

  LocalWorkers(const LocalWorkers&) = delete;
  LocalWorkers& operator=(const LocalWorkers&) = delete;

  // SIGTERM to every process, SIGKILL to those still running after stop_grace; waits for all.
  // Idempotent.
  void Stop();

  // Process ids of the running processes (0 for a slot waiting to restart).
  std::vector<pid_t> Pids();
  // Processes started so far, restarts included.
  int Starts();

 private:
  struct Slot {
    pid_t pid = 0;
    // On the monotonic clock (Clock::Real()->Elapsed()), so that a wall clock set back does not
    // hold up the restart.
    absl::Duration restart_at = -absl::InfiniteDuration();
  };

  explicit LocalWorkers(const Options& options) : options_(options), slots_(options.count) {}

  void Supervise();
  pid_t Spawn(int index);

  // Constant after construction.
  const Options options_;

  absl::Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  int starts_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_LOCAL_WORKERS_H_
