// compress-run: the executor of one compression job (docs/executor-contract.md).
//
//   compress-run --spec SPEC.json --workdir DIR [--device cpu|cuda:N] [--threads N]
//
// stdout carries JSON-lines events only; stderr is for people.
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "worker/events/event.h"
#include "worker/events/program_usage.h"
#include "worker/run/job_runner.h"
#include "worker/run/work_dir.h"
#include "worker/spec/job_spec.h"

ABSL_FLAG(std::string, spec, "", "Job spec JSON file (compress.v1.JobSpec, proto field names).");
ABSL_FLAG(std::string, workdir, "", "Work directory; re-running on it resumes the job.");
ABSL_FLAG(absl::Duration, workdir_lock_wait, absl::Seconds(60),
          "How long to wait for another executor that holds the work dir to stop");
ABSL_FLAG(std::string, device, "auto", "auto, cpu, cuda or cuda:N; overrides resources.device.");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads; overrides resources.threads (0 = spec).");
ABSL_FLAG(std::string, cache_dir, "", "Decoded data set cache; empty = WORKDIR/cache.");

namespace {

// Set by SIGTERM/SIGINT (an atomic store is async-signal-safe) and by the time limit.
std::atomic<bool> g_cancel{false};
std::atomic<bool> g_deadline{false};

void OnSignal(int) { g_cancel.store(true); }

// When stdout is a pipe or socket (the agent reads it), a thread waits for its reader to go away:
// an agent that crashed or was killed cannot stop its executor, which would otherwise keep its
// device and the work dir's lock until its next event line (SIGPIPE, no checkpoint saved). The run
// is then cancelled as by SIGTERM: the step in progress ends, the checkpoint is written, and the
// next attempt resumes there. SIGPIPE is ignored so that the lines written meanwhile fail quietly.
void CancelWhenStdoutReaderLeaves() {
  std::signal(SIGPIPE, SIG_IGN);
  struct stat info = {};
  if (::fstat(STDOUT_FILENO, &info) != 0 || !(S_ISFIFO(info.st_mode) || S_ISSOCK(info.st_mode))) {
    return;
  }
  std::thread([] {
    // No events asked for: poll reports only POLLERR (a pipe's last reader closed it) and POLLHUP.
    pollfd out = {STDOUT_FILENO, 0, 0};
    while (::poll(&out, 1, -1) < 0 && errno == EINTR) {
    }
    if ((out.revents & (POLLERR | POLLHUP)) == 0) return;
    std::fprintf(stderr,
                 "compress-run: nothing reads stdout any more (the agent is gone); "
                 "cancelling\n");
    g_cancel.store(true);
  }).detach();
}

int Fail(compress::events::EventWriter& events, const absl::Status& status, int exit_code) {
  std::fprintf(stderr, "compress-run: %s\n", status.ToString().c_str());
  events.Write(compress::events::Error(status));
  return exit_code;
}

// A spec is a few KiB; a file past this is not one (and a device such as /dev/zero never ends).
constexpr int64_t kMaxSpecBytes = 16 << 20;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  struct stat info = {};
  if (::stat(path.c_str(), &info) != 0) {
    const int error = errno;
    return absl::Status(error == ENOENT || error == ENOTDIR ? absl::StatusCode::kNotFound
                                                            : absl::StatusCode::kFailedPrecondition,
                        absl::StrCat("--spec ", path, ": cannot open: ", std::strerror(error)));
  }
  if (S_ISDIR(info.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("--spec ", path, ": is a directory"));
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--spec ", path, ": not a regular file (a spec is a JSON file)"));
  }
  if (info.st_size > kMaxSpecBytes) {
    return absl::InvalidArgumentError(absl::StrCat("--spec ", path, ": ", info.st_size,
                                                   " bytes; a spec has at most ", kMaxSpecBytes));
  }
  std::ifstream in(path);
  if (!in) {
    return absl::FailedPreconditionError(
        absl::StrCat("--spec ", path, ": cannot open: ", std::strerror(errno)));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("--spec ", path, ": read failed"));
  return buffer.str();
}

// The flags' own checks (Abseil parses only their types); a usage error, exit 2.
absl::Status CheckFlags(const std::vector<char*>& positional) {
  if (absl::Status arguments = compress::CheckNoArguments(positional); !arguments.ok()) {
    return arguments;
  }
  const int threads = absl::GetFlag(FLAGS_threads);
  if (threads < 0 || threads > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads: must be in [0, 1024] (0 = the spec's), got ", threads));
  }
  const absl::Duration lock_wait = absl::GetFlag(FLAGS_workdir_lock_wait);
  if (lock_wait < absl::ZeroDuration() || lock_wait == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--workdir_lock_wait: must be a finite duration >= 0, got ",
                     absl::FormatDuration(lock_wait)));
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  compress::SetProgramUsage(
      "compress-run", "Runs one compression job: compress-run --spec SPEC.json --workdir DIR");
  // A write past a file size limit fails with EFBIG, reported RESOURCE_EXHAUSTED as a full disk
  // is, instead of killing the run without an error line.
  std::signal(SIGXFSZ, SIG_IGN);
  compress::events::EventWriter events(stdout);
  // Flags Abseil cannot parse would end the program with its message only; the contract asks for
  // an error line.
  if (absl::Status syntax = compress::CheckCommandLineFlags(argc, argv); !syntax.ok()) {
    return Fail(events, syntax, 2);
  }
  const std::vector<char*> positional = compress::ParseProgramFlags(argc, argv);
  if (absl::Status flags = CheckFlags(positional); !flags.ok()) return Fail(events, flags, 2);

  const std::string spec_path = absl::GetFlag(FLAGS_spec);
  const std::string workdir = absl::GetFlag(FLAGS_workdir);
  if (spec_path.empty() || workdir.empty()) {
    return Fail(events,
                absl::InvalidArgumentError(spec_path.empty()
                                               ? "--spec is required: the job spec JSON file"
                                               : "--workdir is required: the job's work directory"),
                2);
  }
  absl::StatusOr<std::string> text = ReadFile(spec_path);
  if (!text.ok()) return Fail(events, text.status(), 1);
  absl::StatusOr<compress::spec::JobSpec> spec = compress::spec::ParseJobSpec(*text);
  if (!spec.ok()) return Fail(events, spec.status(), 1);

  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  CancelWhenStdoutReaderLeaves();

  absl::Notification done;
  std::thread watchdog;
  if (spec->resources.time_limit_seconds > 0) {
    const absl::Duration limit = absl::Seconds(spec->resources.time_limit_seconds);
    watchdog = std::thread([&done, limit] {
      if (!done.WaitForNotificationWithTimeout(limit)) {
        g_deadline.store(true);
        g_cancel.store(true);
      }
    });
  }

  // One executor per work dir: an executor of an earlier attempt may still be stopping.
  absl::StatusOr<compress::run::WorkDirLock> lock =
      compress::run::WorkDirLock::Acquire(workdir, absl::GetFlag(FLAGS_workdir_lock_wait),
                                          &g_cancel, [&events](const std::string& message) {
                                            events.Write(compress::events::Log("warning", message));
                                          });
  // The time limit cancels the run, waiting for the lock included: it ends DEADLINE_EXCEEDED
  // (retryable by the contract), not CANCELLED (final).
  auto limited = [&spec](absl::Status status) {
    if (!absl::IsCancelled(status) || !g_deadline.load()) return status;
    return absl::DeadlineExceededError(absl::StrCat("resources.time_limit_seconds (",
                                                    spec->resources.time_limit_seconds,
                                                    " s) reached: ", status.message()));
  };
  if (!lock.ok()) {
    done.Notify();
    if (watchdog.joinable()) watchdog.join();
    return Fail(events, limited(lock.status()), 1);
  }

  compress::run::RunnerOptions options;
  options.spec = *spec;
  options.workdir = workdir;
  options.device = absl::GetFlag(FLAGS_device);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.cache_dir = absl::GetFlag(FLAGS_cache_dir);
  options.cancel = &g_cancel;
  options.events = &events;

  absl::StatusOr<nlohmann::json> report = [&]() -> absl::StatusOr<nlohmann::json> {
    auto runner = compress::run::JobRunner::Create(std::move(options));
    if (!runner.ok()) return runner.status();
    return (*runner)->Run();
  }();
  done.Notify();
  if (watchdog.joinable()) watchdog.join();

  if (!report.ok()) return Fail(events, limited(report.status()), 1);
  events.Write(compress::events::Report(*report));
  return 0;
}
