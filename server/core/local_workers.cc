#include "server/core/local_workers.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/core/clock.h"

namespace compress::server {
namespace {

// How often the supervisor looks for exited processes.
constexpr absl::Duration kPollInterval = absl::Milliseconds(200);

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("signal ", WTERMSIG(status));
  return "unknown status";
}

// The name and value of a flag argument: "--name=value" or "-name=value"; a value-less
// "--name" takes the next argument, as absl does for non-boolean flags.
struct FlagArg {
  absl::string_view name;
  absl::string_view value;
};

std::optional<FlagArg> FlagAt(const std::vector<std::string>& args, size_t i) {
  absl::string_view arg = args[i];
  if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) return std::nullopt;
  FlagArg flag;
  if (size_t equals = arg.find('='); equals != absl::string_view::npos) {
    flag.name = arg.substr(0, equals);
    flag.value = arg.substr(equals + 1);
  } else {
    flag.name = arg;
    if (i + 1 < args.size()) flag.value = args[i + 1];
  }
  return flag;
}

}  // namespace

absl::Status LocalWorkers::CheckArgs(const std::vector<std::string>& args, int count) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::optional<FlagArg> flag = FlagAt(args, i);
    if (!flag.has_value()) continue;
    const absl::string_view value = absl::StripAsciiWhitespace(flag->value);
    // compress-worker refuses it at start: compressd would restart it for ever.
    if (flag->name == "devices" && value.empty()) {
      return absl::InvalidArgumentError(
          "--local_worker_flags: --devices is empty; leave it out (auto), or give auto, cpu or "
          "a comma-separated list of cpu and cuda:N");
    }
    if (count <= 1) continue;
    if (flag->name == "devices" && value != "auto" && value != "cpu") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--local_worker_flags: --devices=", value, " would have all ", count,
          " --local_workers offer the same GPUs; leave --devices out (or give --devices=auto) "
          "for each to offer its own share of the GPUs, give --devices=cpu, or run "
          "--local_workers=1"));
    }
    if (flag->name == "device_share") {
      return absl::InvalidArgumentError(
          absl::StrCat("--local_worker_flags: --device_share is given to each of the ", count,
                       " --local_workers by compressd; leave it out"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LocalWorkers>> LocalWorkers::Start(const Options& options) {
  if (absl::Status args = CheckArgs(options.args, options.count); !args.ok()) return args;
  if (::access(options.binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(
        absl::StrCat("worker binary '", options.binary,
                     "' is not an executable file (build compress-worker or pass "
                     "--worker_binary)"));
  }
  std::unique_ptr<LocalWorkers> workers(new LocalWorkers(options));
  workers->thread_ = std::thread([w = workers.get()] { w->Supervise(); });
  return workers;
}

LocalWorkers::~LocalWorkers() { Stop(); }

pid_t LocalWorkers::Spawn(int index) {
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<std::string> args;
  args.push_back(options_.binary);
  args.insert(args.end(), options_.args.begin(), options_.args.end());
  if (options_.count > 1) {
    args.push_back(absl::StrCat("--device_share=", index, "/", options_.count));
  }
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);  // the parent died before prctl took effect
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  if (pid < 0) {
    std::fprintf(stderr, "compressd: cannot start local worker %d: fork failed\n", index);
    return 0;
  }
  std::fprintf(stderr, "compressd: started local worker %d (pid %d)\n", index,
               static_cast<int>(pid));
  return pid;
}

void LocalWorkers::Supervise() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const absl::Duration now = Clock::Real()->Elapsed();
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& slot = slots_[i];
      if (slot.pid > 0) {
        int status = 0;
        pid_t done = ::waitpid(slot.pid, &status, WNOHANG);
        if (done == slot.pid) {
          std::fprintf(stderr, "compressd: local worker %zu (pid %d) ended with %s; restarting\n",
                       i, static_cast<int>(slot.pid), DescribeExit(status).c_str());
          slot.pid = 0;
          slot.restart_at = now + options_.restart_delay;
        }
      }
      if (slot.pid == 0 && now >= slot.restart_at) {
        slot.pid = Spawn(static_cast<int>(i));
        if (slot.pid > 0) {
          ++starts_;
        } else {
          slot.restart_at = now + options_.restart_delay;
        }
      }
    }
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), kPollInterval);
  }
}

void LocalWorkers::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  for (Slot& slot : slots_) {
    if (slot.pid > 0) ::kill(slot.pid, SIGTERM);
  }
  // Monotonic, so that a wall clock set forward does not cut the grace short.
  const absl::Duration deadline = Clock::Real()->Elapsed() + options_.stop_grace;
  for (Slot& slot : slots_) {
    while (slot.pid > 0) {
      int status = 0;
      pid_t done = ::waitpid(slot.pid, &status, WNOHANG);
      if (done == slot.pid || (done < 0 && errno != EINTR)) {
        slot.pid = 0;
      } else if (Clock::Real()->Elapsed() >= deadline) {
        ::kill(slot.pid, SIGKILL);
        ::waitpid(slot.pid, &status, 0);
        slot.pid = 0;
      } else {
        absl::SleepFor(absl::Milliseconds(20));
      }
    }
  }
}

std::vector<pid_t> LocalWorkers::Pids() {
  absl::MutexLock lock(&mu_);
  std::vector<pid_t> pids;
  for (const Slot& slot : slots_) pids.push_back(slot.pid);
  return pids;
}

int LocalWorkers::Starts() {
  absl::MutexLock lock(&mu_);
  return starts_;
}

}  // namespace compress::server
