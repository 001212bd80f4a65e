// Subprocess: a child process in its own process group, with stdout piped for line reading and
// the tail of stderr kept in memory.
//
// The agent runs each executor through this class; the end-to-end tests start compressd with it.
#ifndef COMPRESS_WORKER_AGENT_SUBPROCESS_H_
#define COMPRESS_WORKER_AGENT_SUBPROCESS_H_

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace compress::worker {

// How a child ended.
struct ExitInfo {
  // Exit code when the child exited; -1 when a signal killed it.
  int exit_code = -1;
  // The signal that killed the child; 0 when it exited.
  int signal = 0;

  bool Succeeded() const { return signal == 0 && exit_code == 0; }
  // The shell's convention: the exit code, or 128 + signal.
  int ShellStatus() const { return signal != 0 ? 128 + signal : exit_code; }
  // "exit status 3" or "killed by signal 9".
  std::string ToString() const;
};

// Whether `path` names a program this process can start: a regular file (symlinks followed) that
// this user may execute. Otherwise "cannot run PATH: REASON" with NOT_FOUND (no such file),
// PERMISSION_DENIED (not executable, or a directory on the way not searchable) or
// FAILED_PRECONDITION (a directory or another file that is not a regular one). A file that passes
// may still fail to start (not a program the kernel can load): Subprocess::Start says so then.
absl::Status CheckExecutable(const std::string& path);

// Thread-safety: ReadLine() and Wait() are called from one thread (the owner); Signal(),
// StderrTail() and pid() may be called from any thread, also while another thread is blocked in
// ReadLine() or Wait(). The destructor kills the process group with SIGKILL if the child has not
// been waited for, then reaps it.
class Subprocess {
 public:
  struct Options {
    // argv[0] is the program's path (no PATH search).
    std::vector<std::string> argv;
    // Working directory of the child; empty = the parent's.
    std::string working_dir;
    // Bytes of stderr kept for StderrTail().
    size_t stderr_tail_bytes = 4096;
    // When not empty, every stderr line of the child is also written to this process's stderr
    // (or to stderr_echo_file), prefixed with this string. A line longer than
    // stderr_echo_line_bytes is written in pieces of that size, as it arrives, so that a child
    // writing without newlines (progress bars redrawn with '\r', binary output) cannot grow this
    // process's memory.
    std::string stderr_echo_prefix;
    size_t stderr_echo_line_bytes = 64 * 1024;
    // Where the echo goes; null = this process's stderr.
    std::FILE* stderr_echo_file = nullptr;
    // Variables set in the child's environment, replacing those of this process with the same
    // name; the rest of this process's environment is inherited.
    std::vector<std::pair<std::string, std::string>> environment;
  };

  // Starts the child in a new process group whose id is its pid, stdin from /dev/null, stdout
  // and stderr piped. Signals blocked in the caller are unblocked in the child and ignored
  // signals get their default action back. NOT_FOUND / PERMISSION_DENIED / INTERNAL naming the
  // program when it cannot be started.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const Options& options);

  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // The most bytes ReadLine() keeps of one line: a longer one comes back in pieces of this
  // size, so that a child writing without newlines cannot exhaust the reader's memory.
  static constexpr size_t kMaxLineBytes = size_t{64} << 20;

  // After the child has exited, how long its pipes are still read when something else holds
  // them open (a process the child started in a session of its own; those left in its process
  // group are killed at its exit).
  static constexpr absl::Duration kDrainGrace = absl::Seconds(2);

  // The next stdout line without its '\n' (a last line without '\n' is returned too), or the
  // next kMaxLineBytes of a longer one; nullopt at end of file, or kDrainGrace after the child's
  // exit when its stdout is still open then. Blocks.
  std::optional<std::string> ReadLine();

  // Sends `sig` to the child's process group. No effect once the child was waited for.
  void Signal(int sig);

  // Waits for the child to end, kills what is left of its process group, waits for its stderr
  // to close (kDrainGrace at most) and returns how it ended. Call once.
  ExitInfo Wait();

  // The last Options::stderr_tail_bytes bytes the child wrote to stderr.
  std::string StderrTail() const;

  pid_t pid() const { return pid_; }

 private:
  Subprocess(const Options& options, pid_t pid, int stdout_fd, int stderr_fd);
  void DrainStderr(int fd);
  static int64_t SteadyNanos();
  enum class Readiness {
    kReadable,    // bytes or the end of the pipe, before the drain grace ended
    kLate,        // bytes or the end, after it: they count toward kLateReadLimit
    kNothingYet,  // the wait ended (kExitPoll, or the grace's end) without either
    kDrained,     // after the grace, nothing waiting, or kLateReadLimit bytes read since
  };
  // Waits for `fd` (a pipe of the child) to be readable, kExitPoll at most; `late_bytes`: bytes
  // read from it after the drain grace.
  Readiness AwaitReadable(int fd, size_t late_bytes) const;
  // Whether the child has exited (it is not reaped).
  bool LeaderExited() const;
  // Kills what is left of the exited child's group and starts the pipes' kDrainGrace.
  void OnLeaderExit();

  // The most stdout bytes read after kDrainGrace: a pipe holds 1 MiB at most by default
  // (/proc/sys/fs/pipe-max-size), so all the child wrote is read.
  static constexpr size_t kLateReadLimit = size_t{1} << 20;
  // How often a blocked reader looks whether the child has exited.
  static constexpr absl::Duration kExitPoll = absl::Milliseconds(200);

  const Options options_;
  const pid_t pid_;
  int stdout_fd_;  // owned by the ReadLine() thread
  std::string stdout_buffer_;
  size_t stdout_scanned_ = 0;  // bytes of stdout_buffer_ known to hold no '\n'
  bool stdout_eof_ = false;
  // SteadyNanos() after which the pipes are no longer read; 0 while the child runs.
  std::atomic<int64_t> drain_deadline_ns_{0};
  int64_t next_exit_check_ns_ = 0;  // owned by the ReadLine() thread
  size_t late_bytes_ = 0;           // read after kDrainGrace; owned by the ReadLine() thread
  std::thread stderr_thread_;

  mutable absl::Mutex mu_;
  bool waited_ ABSL_GUARDED_BY(mu_) = false;
  std::string stderr_tail_ ABSL_GUARDED_BY(mu_);
};

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_SUBPROCESS_H_
