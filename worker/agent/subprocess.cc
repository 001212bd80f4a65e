#include "worker/agent/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace compress::worker {
namespace {

void CloseFd(int& fd) {
  if (fd >= 0) {
    close(fd);
    fd = -1;
  }
}

absl::Status SpawnError(int err, const std::string& program) {
  std::string message = absl::StrCat("cannot start ", program, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

}  // namespace

absl::Status CheckExecutable(const std::string& path) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0) {
    const int err = errno;
    std::string message = absl::StrCat("cannot run ", path, ": ", std::strerror(err));
    if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(message);
    if (err == EACCES) return absl::PermissionDeniedError(message);
    return absl::FailedPreconditionError(message);
  }
  if (S_ISDIR(info.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot run ", path, ": a directory, not an executable file"));
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("cannot run ", path, ": not a regular file"));
  }
  if (access(path.c_str(), X_OK) != 0) {
    char mode[16];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(info.st_mode & 07777));
    return absl::PermissionDeniedError(
        absl::StrCat("cannot run ", path, ": not executable by this user (mode ", mode, ")"));
  }
  return absl::OkStatus();
}

std::string ExitInfo::ToString() const {
  if (signal != 0) return absl::StrCat("killed by signal ", signal);
  return absl::StrCat("exit status ", exit_code);
}

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(const Options& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("Subprocess: empty argv");
  const std::string& program = options.argv[0];
  // posix_spawn reports a missing program only as an exit status 127 on some C libraries; check
  // first so that the error names the program.
  if (access(program.c_str(), X_OK) != 0) return SpawnError(errno, program);

  int out_pipe[2];
  int err_pipe[2];
  // O_CLOEXEC: children spawned concurrently by other threads must not inherit these ends.
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return SpawnError(errno, program);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    int e = errno;
    close(out_pipe[0]);
    close(out_pipe[1]);
    return SpawnError(e, program);
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
  // No other descriptor of this process reaches the child, whether or not whoever opened it
  // asked for O_CLOEXEC: other threads keep files open (a blob being downloaded, an artifact
  // being hashed) while an executor starts, and an executor holding one would keep a deleted
  // file's space until it ends.
  posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
  if (!options.working_dir.empty()) {
    posix_spawn_file_actions_addchdir_np(&actions, options.working_dir.c_str());
  }

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty_mask;
  sigemptyset(&empty_mask);
  sigset_t default_signals;
  sigemptyset(&default_signals);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD}) {
    sigaddset(&default_signals, sig);
  }
  posix_spawnattr_setsigmask(&attr, &empty_mask);
  posix_spawnattr_setsigdefault(&attr, &default_signals);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> argv;
  argv.reserve(options.argv.size() + 1);
  for (const std::string& arg : options.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  // This process's environment without the variables Options::environment sets, then those.
  std::vector<std::string> set_variables;
  for (const auto& [name, value] : options.environment) {
    set_variables.push_back(name + "=" + value);
  }
  std::vector<char*> envp;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const char* equals = std::strchr(*entry, '=');
    const size_t name_length = equals == nullptr ? std::strlen(*entry) : equals - *entry;
    const bool replaced = std::any_of(
        options.environment.begin(), options.environment.end(), [&](const auto& variable) {
          return variable.first.size() == name_length &&
                 std::strncmp(variable.first.c_str(), *entry, name_length) == 0;
        });
    if (!replaced) envp.push_back(*entry);
  }
  for (std::string& variable : set_variables) envp.push_back(variable.data());
  envp.push_back(nullptr);

  pid_t pid = -1;
  int err = posix_spawn(&pid, program.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (err != 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    return SpawnError(err, program);
  }
  return std::unique_ptr<Subprocess>(new Subprocess(options, pid, out_pipe[0], err_pipe[0]));
}

Subprocess::Subprocess(const Options& options, pid_t pid, int stdout_fd, int stderr_fd)
    : options_(options), pid_(pid), stdout_fd_(stdout_fd) {
  stderr_thread_ = std::thread([this, stderr_fd] { DrainStderr(stderr_fd); });
}

Subprocess::~Subprocess() {
  bool waited;
  {
    absl::MutexLock lock(&mu_);
    waited = waited_;
  }
  if (!waited) {
    Signal(SIGKILL);
    Wait();
  }
  CloseFd(stdout_fd_);
}

std::optional<std::string> Subprocess::ReadLine() {
  while (true) {
    // Only the bytes read since the last search are searched: a long line costs linear time.
    const size_t newline = stdout_buffer_.find('\n', stdout_scanned_);
    if (newline != std::string::npos && newline <= kMaxLineBytes) {
      std::string line = stdout_buffer_.substr(0, newline);
      stdout_buffer_.erase(0, newline + 1);
      stdout_scanned_ = 0;
      return line;
    }
    // A read appends up to a chunk past the limit, so the buffer may hold more than the limit
    // of a line whose newline (if any) lies beyond it: hand out exactly the limit and keep the
    // rest, whose bytes before the newline (or all of them) are known to hold no '\n'. A line of
    // exactly the limit is not cut: one more byte is read to see whether its newline follows.
    if (newline != std::string::npos || stdout_buffer_.size() > kMaxLineBytes) {
      std::string piece = stdout_buffer_.substr(0, kMaxLineBytes);
      stdout_buffer_.erase(0, kMaxLineBytes);
      stdout_scanned_ =
          newline != std::string::npos ? newline - kMaxLineBytes : stdout_buffer_.size();
      return piece;
    }
    stdout_scanned_ = stdout_buffer_.size();
    if (stdout_eof_ || stdout_fd_ < 0) {
      if (stdout_buffer_.empty()) return std::nullopt;
      std::string line = std::move(stdout_buffer_);
      stdout_buffer_.clear();
      stdout_scanned_ = 0;
      return line;
    }
    // A process the child left behind can hold the pipe open after the child has exited: the
    // end of the child is watched for too, and then the pipe is read to its end or, after
    // kDrainGrace, for as long as it has bytes waiting (what the child wrote before it exited,
    // also when the caller was slow to ask for it), kLateReadLimit at most.
    const int64_t now = SteadyNanos();
    if (drain_deadline_ns_.load() == 0 && now >= next_exit_check_ns_) {
      next_exit_check_ns_ = now + absl::ToInt64Nanoseconds(kExitPoll);
      if (LeaderExited()) OnLeaderExit();
    }
    const Readiness ready = AwaitReadable(stdout_fd_, late_bytes_);
    if (ready == Readiness::kNothingYet) continue;
    if (ready == Readiness::kDrained) {
      stdout_eof_ = true;  // what a process outside the group writes later is not the child's
      CloseFd(stdout_fd_);
      continue;
    }
    char chunk[8192];
    ssize_t n = read(stdout_fd_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      stdout_eof_ = true;
      CloseFd(stdout_fd_);
      continue;
    }
    if (ready == Readiness::kLate) late_bytes_ += static_cast<size_t>(n);
    stdout_buffer_.append(chunk, static_cast<size_t>(n));
  }
}

Subprocess::Readiness Subprocess::AwaitReadable(int fd, size_t late_bytes) const {
  const int64_t now = SteadyNanos();
  const int64_t deadline = drain_deadline_ns_.load();
  const bool late = deadline != 0 && now >= deadline;
  if (late && late_bytes >= kLateReadLimit) return Readiness::kDrained;
  int timeout_ms = 0;  // after the grace, only bytes already waiting
  if (!late) {
    int64_t timeout_ns = absl::ToInt64Nanoseconds(kExitPoll);
    if (deadline != 0) timeout_ns = std::min(timeout_ns, deadline - now);
    timeout_ms = static_cast<int>(std::max<int64_t>(1, (timeout_ns + 999999) / 1000000));
  }
  pollfd readable = {fd, POLLIN, 0};
  const int ready = poll(&readable, 1, timeout_ms);
  if (ready == 0 && late) return Readiness::kDrained;
  if (ready <= 0) return Readiness::kNothingYet;  // the wait ended, or EINTR
  return late ? Readiness::kLate : Readiness::kReadable;
}

int64_t Subprocess::SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool Subprocess::LeaderExited() const {
  siginfo_t info;
  std::memset(&info, 0, sizeof(info));
  int result;
  while ((result = waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT)) !=
             0 &&
         errno == EINTR) {
  }
  return result == 0 && info.si_pid == pid_;
}

void Subprocess::OnLeaderExit() {
  absl::MutexLock lock(&mu_);
  // The leader is a zombie until Wait() reaps it, so the group id is still ours: end whatever
  // the child left behind in its group, which also closes the pipes they hold.
  if (!waited_) kill(-pid_, SIGKILL);
  int64_t unset = 0;
  drain_deadline_ns_.compare_exchange_strong(unset,
                                             SteadyNanos() + absl::ToInt64Nanoseconds(kDrainGrace));
}

void Subprocess::Signal(int sig) {
  absl::MutexLock lock(&mu_);
  // Until the child is reaped its pid cannot be reused, so the group id is still ours.
  if (!waited_) kill(-pid_, sig);
}

ExitInfo Subprocess::Wait() {
  // Wait for the end without reaping, so that Signal() never hits a recycled process group.
  siginfo_t info;
  std::memset(&info, 0, sizeof(info));
  while (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
  OnLeaderExit();
  {
    absl::MutexLock lock(&mu_);
    waited_ = true;
  }
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  if (stderr_thread_.joinable()) stderr_thread_.join();
  ExitInfo exit_info;
  if (WIFSIGNALED(status)) {
    exit_info.signal = WTERMSIG(status);
  } else if (WIFEXITED(status)) {
    exit_info.exit_code = WEXITSTATUS(status);
  }
  return exit_info;
}

std::string Subprocess::StderrTail() const {
  absl::MutexLock lock(&mu_);
  return stderr_tail_;
}

void Subprocess::DrainStderr(int fd) {
  std::FILE* echo = options_.stderr_echo_file != nullptr ? options_.stderr_echo_file : stderr;
  const size_t piece = std::max<size_t>(1, options_.stderr_echo_line_bytes);
  std::string pending_echo;
  char chunk[4096];
  size_t late_bytes = 0;
  while (true) {
    // As stdout: read to the end, or for kDrainGrace after the child's end when a process that
    // left its group still holds the pipe, then what is waiting in it (kLateReadLimit at most).
    const Readiness ready = AwaitReadable(fd, late_bytes);
    if (ready == Readiness::kNothingYet) continue;
    if (ready == Readiness::kDrained) break;
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (ready == Readiness::kLate) late_bytes += static_cast<size_t>(n);
    absl::string_view data(chunk, static_cast<size_t>(n));
    {
      absl::MutexLock lock(&mu_);
      stderr_tail_.append(data.data(), data.size());
      if (stderr_tail_.size() > options_.stderr_tail_bytes) {
        stderr_tail_.erase(0, stderr_tail_.size() - options_.stderr_tail_bytes);
      }
    }
    if (!options_.stderr_echo_prefix.empty()) {
      pending_echo.append(data.data(), data.size());
      size_t start = 0;
      while (true) {
        const size_t newline = pending_echo.find('\n', start);
        size_t length;
        size_t skip;
        if (newline != std::string::npos && newline - start <= piece) {
          length = newline - start;
          skip = 1;
        } else if (pending_echo.size() - start >= piece) {
          length = piece;
          skip = 0;
        } else {
          break;
        }
        std::fprintf(echo, "%s%.*s\n", options_.stderr_echo_prefix.c_str(),
                     static_cast<int>(length), pending_echo.data() + start);
        start += length + skip;
      }
      pending_echo.erase(0, start);
    }
  }
  if (!options_.stderr_echo_prefix.empty() && !pending_echo.empty()) {
    std::fprintf(echo, "%s%.*s\n", options_.stderr_echo_prefix.c_str(),
                 static_cast<int>(pending_echo.size()), pending_echo.data());
  }
  std::fflush(echo);
  close(fd);
}

}  // namespace compress::worker
