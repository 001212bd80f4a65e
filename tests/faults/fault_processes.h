// Support for the fault tests: compressd and compress-worker as real processes (started with
// the agent's Subprocess, so each is its own process group), signals to them, a
// CompressionService client whose every call has a deadline, and the fake executor's log.
//
// Paths of the programs come from the build (see tests/faults/CMakeLists.txt).
#ifndef COMPRESS_TESTS_FAULTS_FAULT_PROCESSES_H_
#define COMPRESS_TESTS_FAULTS_FAULT_PROCESSES_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "worker/agent/subprocess.h"

namespace compress::faults {

// A temporary directory, removed unless the test failed (then kept for a post-mortem).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct ServerOptions {
  // The compressd to run; empty = the one built with the tests.
  std::string binary;
  std::string data_dir;
  // 0 = a port picked by the kernel.
  int port = 0;
  // Local workers run the fake executor on the CPU; `local_worker_flags` adds to theirs.
  int local_workers = 0;
  std::vector<std::string> local_worker_flags;
  // More compressd flags (e.g. --lease_seconds=2).
  std::vector<std::string> flags;
  // Runs compressd through fault_exec with these flags (e.g. --ignore_sigxfsz) when not empty.
  std::vector<std::string> fault_exec_flags;
};

// A running compressd. The destructor stops it with SIGTERM (SIGKILL 30 s later).
class ServerProcess {
 public:
  // Starts compressd and waits (at most 30 s) for its "listening" line. The error carries
  // compressd's stderr when it did not start.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const ServerOptions& options);
  ~ServerProcess();

  // SIGKILL, as a crash or an OOM kill would end it; returns once it is dead (its port free),
  // without waiting for its local workers, which outlive it a while (they inherited its
  // stderr). The destructor reaps it.
  void Kill();
  // Sends `sig` to compressd alone (not its process group).
  void Signal(int sig);
  // SIGTERM, then waits at most `timeout` (SIGKILL after it). Returns how it ended.
  worker::ExitInfo Terminate(absl::Duration timeout);

  const std::string& address() const { return address_; }
  int port() const { return port_; }
  pid_t pid() const { return process_->pid(); }
  std::string StderrTail() const { return process_->StderrTail(); }

 private:
  explicit ServerProcess(std::unique_ptr<worker::Subprocess> process);

  std::unique_ptr<worker::Subprocess> process_;
  std::string address_;
  int port_ = 0;
  std::thread drain_;
  bool waited_ = false;
  bool killed_ = false;
};

// Runs a program to its end (SIGKILL after `timeout`) and returns how it ended, with stdout in
// `out` and the tail of stderr in `err`.
struct CommandResult {
  worker::ExitInfo exit;
  std::string out;
  std::string err;
};
CommandResult RunCommand(const std::vector<std::string>& argv, absl::Duration timeout);

// A compress-worker dialing `server`, running the fake executor on one CPU device, with its own
// work root and worker id. The destructor kills it (SIGKILL) if it still runs.
class WorkerProcess {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Start(
      const std::string& server, const std::string& worker_id, const std::string& work_root,
      const std::vector<std::string>& flags = {});
  ~WorkerProcess();

  // Sends `sig` to the agent's process group: the agent alone (its executors have their own
  // groups).
  void Signal(int sig);
  void Kill();
  pid_t pid() const { return process_->pid(); }
  std::string StderrTail() const { return process_->StderrTail(); }

 private:
  explicit WorkerProcess(std::unique_ptr<worker::Subprocess> process);

  std::unique_ptr<worker::Subprocess> process_;
  std::thread drain_;
  bool waited_ = false;
};

// A CompressionService client on a connection of its own. Every call has a deadline; the
// channel reconnects within half a second of a restarted server coming back on the same
// address.
class Client {
 public:
  explicit Client(const std::string& address);

  v1::CompressionService::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }

  // A CreateJob request the server accepts: a synthetic data set and `steps` steps of the fake
  // executor.
  static v1::CreateJobRequest JobRequest(int steps, int max_attempts = 0,
                                         const std::string& request_id = "");

  grpc::Status CreateJob(const v1::CreateJobRequest& request, v1::Job* job,
                         absl::Duration timeout = absl::Seconds(10));
  grpc::Status GetJob(const std::string& name, v1::Job* job,
                      absl::Duration timeout = absl::Seconds(10));
  // Every job, following pages.
  grpc::Status ListAllJobs(std::vector<v1::Job>* jobs);
  // WatchJob from `after_sequence` until the stream ends (or `timeout`); returns its status.
  grpc::Status Watch(const std::string& name, int64_t after_sequence,
                     std::vector<v1::JobEvent>* events, absl::Duration timeout);
  // Polls GetJob until `done(job)` holds; false (with the last job seen) after `timeout`.
  bool WaitFor(const std::string& name, const std::function<bool(const v1::Job&)>& done,
               absl::Duration timeout, v1::Job* last = nullptr);
  // grpc.health.v1.Health/Check of the whole server: "SERVING", "NOT_SERVING", or the error.
  std::string Health(absl::Duration timeout = absl::Seconds(5));

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::CompressionService::Stub> stub_;
};

bool IsFinished(v1::JobState state);

// The fake executor's log (see fake_executor.cc): the lines of kind `kind` ("start",
// "complete", "overlap"), as their fields after the kind, grouped by job id.
std::map<std::string, std::vector<std::vector<std::string>>> ExecutorLog(const std::string& path,
                                                                         const std::string& kind);

// "jobs/ID" -> "ID".
std::string JobId(const std::string& name);

}  // namespace compress::faults

#endif  // COMPRESS_TESTS_FAULTS_FAULT_PROCESSES_H_
