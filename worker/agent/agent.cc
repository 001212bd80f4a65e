#include "worker/agent/agent.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "worker/agent/log.h"
#include "worker/agent/rpc_retry.h"
#include "worker/agent/subprocess.h"
#include "worker/agent/work_dir_sweeper.h"
#include "worker/events/grpc_address.h"

namespace compress::worker {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxWorkerIdLength = 128;
constexpr int kMaxExecutorThreads = 1024;  // compress-run's limit of --threads
constexpr absl::Duration kMaxKillGrace = absl::Hours(1);

// A worker id travels in every request and shows in logs and metrics: printable ASCII without
// spaces, at most kMaxWorkerIdLength characters.
absl::Status CheckWorkerId(absl::string_view id) {
  if (id.empty()) return absl::InvalidArgumentError("--worker_id: empty");
  if (id.size() > kMaxWorkerIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("--worker_id: at most ", kMaxWorkerIdLength, " characters, got ", id.size()));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(id[i]);
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat("--worker_id: byte 0x", absl::Hex(c, absl::kZeroPad2), " at offset ", i,
                       " is not printable ASCII without spaces (0x21-0x7e)"));
    }
  }
  return absl::OkStatus();
}

// Creates the work root when absent; it must then be a directory this user may write in.
absl::Status PrepareWorkRoot(const std::string& work_root) {
  if (work_root.empty()) return absl::InvalidArgumentError("--work_root: empty path");
  std::error_code ec;
  if (fs::exists(work_root, ec) && !fs::is_directory(work_root, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--work_root: ", work_root, " is not a directory"));
  }
  fs::create_directories(work_root, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--work_root: cannot create ", work_root, ": ", ec.message()));
  }
  if (access(work_root.c_str(), W_OK | X_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--work_root: cannot write in ", work_root, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(const Options& options) {
  if (absl::Status server =
          CheckGrpcAddress("--server", options.server, /*allow_unix_socket=*/true);
      !server.ok()) {
    return server;
  }
  if (options.devices.empty()) return absl::InvalidArgumentError("--devices: no device");
  if (absl::Status id = CheckWorkerId(options.worker_id); !id.ok()) return id;
  if (options.attempt.executor_path.empty()) {
    return absl::InvalidArgumentError("--executor: empty path");
  }
  if (options.lease_wait_seconds < 0 || options.lease_wait_seconds > 30) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lease_wait_seconds: must be in [0, 30], got ", options.lease_wait_seconds));
  }
  if (options.attempt.executor_threads < 0 ||
      options.attempt.executor_threads > kMaxExecutorThreads) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads: must be in [0, ", kMaxExecutorThreads,
                     "] (0 = the executor's default), got ", options.attempt.executor_threads));
  }
  if (options.attempt.kill_grace < absl::ZeroDuration() ||
      options.attempt.kill_grace > kMaxKillGrace) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kill_grace: must be in [0s, ", absl::FormatDuration(kMaxKillGrace),
                     "], got ", absl::FormatDuration(options.attempt.kill_grace)));
  }
  if (options.work_dir_retention < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--work_dir_retention: must not be negative, got ",
                     absl::FormatDuration(options.work_dir_retention)));
  }
  if (options.work_dir_sweep_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("work dir sweep interval: must be positive");
  }
  // The executor runs in its job's directory: relative paths (a relative --work_root, such as
  // compressd's default ./compressd-data/work, or --executor) would resolve against it there.
  Options absolute = options;
  std::error_code ec;
  for (std::string* path : {&absolute.attempt.work_root, &absolute.attempt.executor_path}) {
    if (path->empty()) continue;
    fs::path made = fs::absolute(*path, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot make ", *path, " an absolute path: ", ec.message()));
    }
    *path = made.lexically_normal().string();
  }
  if (absl::Status root = PrepareWorkRoot(absolute.attempt.work_root); !root.ok()) return root;
  // An executor that cannot be started would make every lease a hand-back.
  if (absl::Status usable = CheckExecutable(absolute.attempt.executor_path); !usable.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--executor: ", usable.message()));
  }
  grpc::ChannelArguments args;
  // Reconnect within seconds once a restarted server is back, instead of gRPC's default of up
  // to two minutes between connection attempts.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 500);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  args.SetMaxReceiveMessageSize(64 << 20);
  client::SetKeepalive(&args);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      client::Dial(options.server, options.security, args);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<Agent>(new Agent(absolute, *std::move(channel)));
}

Agent::Agent(const Options& options, std::shared_ptr<grpc::Channel> channel)
    : options_(options),
      channel_(std::move(channel)),
      owned_stub_(compress::v1::WorkerService::NewStub(channel_)),
      stub_(owned_stub_.get()) {}

Agent::Agent(const Options& options, compress::v1::WorkerService::StubInterface* stub)
    : options_(options), stub_(stub) {}

bool Agent::Stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

int Agent::attempts_run() const {
  absl::MutexLock lock(&mu_);
  return attempts_run_;
}

void Agent::Stop() {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  stopping_ = true;
  AgentLog("stopping");
  for (grpc::ClientContext* context : lease_calls_) context->TryCancel();
  for (AttemptRunner* runner : runners_) runner->Shutdown();
}

void Agent::SleepUnlessStopped(absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
  mu_.AwaitWithTimeout(absl::Condition(&stopping), delay);
}

bool Agent::WaitForUsableExecutor() {
  while (true) {
    absl::Duration wait;
    bool broken;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return false;
      wait = executor_paused_until_ - absl::Now();
      broken = executor_broken_;
    }
    if (wait > absl::ZeroDuration()) {
      SleepUnlessStopped(wait);
      continue;
    }
    if (!broken) return true;
    absl::Status usable = CheckExecutable(options_.attempt.executor_path);
    absl::MutexLock lock(&mu_);
    if (usable.ok()) {
      if (executor_broken_) {
        AgentLog("the executor ", options_.attempt.executor_path,
                 " is an executable file again; taking work");
      }
      executor_broken_ = false;
      return true;
    }
    const absl::Time now = absl::Now();
    if (now >= executor_paused_until_) {
      executor_pause_ = std::min(executor_pause_ * 2, options_.executor_max_pause);
      executor_paused_until_ = now + executor_pause_;
      AgentLog(usable.message(), "; taking no work for ", absl::FormatDuration(executor_pause_));
    }
  }
}

void Agent::ExecutorFailed(const std::string& job, const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  executor_broken_ = true;
  const absl::Time now = absl::Now();
  // Another loop's failure paused leasing already.
  if (now < executor_paused_until_) return;
  executor_pause_ = executor_pause_ == absl::ZeroDuration()
                        ? options_.executor_pause
                        : std::min(executor_pause_ * 2, options_.executor_max_pause);
  executor_paused_until_ = now + executor_pause_;
  AgentLog("cannot start the executor (", why.message(), "); ", job,
           " was handed back; taking no work for ", absl::FormatDuration(executor_pause_));
}

void Agent::ExecutorStarted() {
  absl::MutexLock lock(&mu_);
  if (!executor_broken_) executor_pause_ = absl::ZeroDuration();
}

void Agent::Run() {
  AgentLog("worker ", options_.worker_id, " serving ", options_.devices.size(),
           " device(s), server ", options_.server);
  std::vector<std::thread> loops;
  for (const compress::v1::Device& device : options_.devices) {
    loops.emplace_back([this, device] { LeaseLoop(device); });
  }
  if (options_.work_dir_retention > absl::ZeroDuration()) {
    loops.emplace_back([this] { SweepLoop(); });
  }
  for (std::thread& loop : loops) loop.join();
  AgentLog("stopped");
}

void Agent::SweepLoop() {
  const absl::Duration interval = std::min(options_.work_dir_sweep_interval,
                                           std::max(options_.work_dir_retention, absl::Minutes(1)));
  AgentLog("removing work dirs under ", options_.attempt.work_root, " unused for more than ",
           absl::FormatDuration(options_.work_dir_retention), ", checked every ",
           absl::FormatDuration(interval));
  WorkDirSweepOptions sweep;
  sweep.work_root = options_.attempt.work_root;
  sweep.retention = options_.work_dir_retention;
  sweep.should_stop = [this] { return Stopping(); };
  while (!Stopping()) {
    SweepWorkDirs(sweep);
    SleepUnlessStopped(interval);
  }
}

void Agent::LeaseLoop(const compress::v1::Device& device) {
  Backoff backoff(options_.initial_backoff, options_.max_backoff);
  bool connected = false;
  while (WaitForUsableExecutor()) {
    compress::v1::LeaseJobRequest request;
    request.set_worker_id(options_.worker_id);
    *request.mutable_device() = device;
    request.set_wait_seconds(options_.lease_wait_seconds);
    compress::v1::LeaseJobResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(
        absl::Now() + absl::Seconds(options_.lease_wait_seconds) + absl::Seconds(10)));
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      lease_calls_.insert(&context);
    }
    absl::Time started = absl::Now();
    grpc::Status status = stub_->LeaseJob(&context, request, &response);
    {
      absl::MutexLock lock(&mu_);
      lease_calls_.erase(&context);
    }
    // A lease in the answer is this worker's even when Stop() came meanwhile: it goes to a runner
    // below, which hands it back at once (CompleteAttempt with `stopping`), so that the server
    // requeues the job now, without waiting for the lease to expire or counting the attempt. A
    // lease whose answer Stop()'s cancel cut off never arrives: compressd gives that one back.
    const bool leased = status.ok() && response.has_lease();
    if (Stopping() && !leased) break;

    if (!status.ok()) {
      absl::Duration delay = backoff.Next();
      if (connected || delay == options_.initial_backoff) {
        AgentLog(device.name(), ": LeaseJob failed (", status.error_message(), "); retrying");
      }
      connected = false;
      SleepUnlessStopped(delay);
      continue;
    }
    if (!connected) {
      AgentLog(device.name(), ": connected to ", options_.server);
      connected = true;
    }
    backoff.Reset();
    if (!response.has_lease()) {
      // A server that answers at once despite the long poll must not make this loop spin.
      absl::Duration elapsed = absl::Now() - started;
      if (elapsed < absl::Seconds(1)) SleepUnlessStopped(absl::Seconds(1) - elapsed);
      continue;
    }

    AttemptRunner runner(stub_, options_.worker_id, device, response.lease(), options_.attempt);
    {
      absl::MutexLock lock(&mu_);
      runners_.insert(&runner);
      // A Stop() that came while LeaseJob returned must reach this runner too: it hands the
      // lease back without starting the executor.
      if (stopping_) runner.Shutdown();
    }
    AttemptResult result = runner.Run();
    {
      absl::MutexLock lock(&mu_);
      runners_.erase(&runner);
      ++attempts_run_;
    }
    if (!result.executor_start_error.ok()) {
      ExecutorFailed(response.lease().job(), result.executor_start_error);
    } else if (result.executor_started) {
      ExecutorStarted();
    }
  }
}

}  // namespace compress::worker
