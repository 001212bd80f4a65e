#include "tests/faults/fault_processes.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"

namespace compress::faults {
namespace {

namespace fs = std::filesystem;
using worker::ExitInfo;
using worker::Subprocess;

// Waits for `process` at most `timeout`, then kills its group with SIGKILL and waits.
ExitInfo WaitBounded(Subprocess& process, absl::Duration timeout) {
  absl::Notification done;
  std::thread watchdog([&] {
    if (!done.WaitForNotificationWithTimeout(timeout)) process.Signal(SIGKILL);
  });
  ExitInfo exit = process.Wait();
  done.Notify();
  watchdog.join();
  return exit;
}

std::chrono::system_clock::time_point Deadline(absl::Duration timeout) {
  return absl::ToChronoTime(absl::Now() + timeout);
}

}  // namespace

TempDir::TempDir() {
  char dir_template[] = "/tmp/compress_faults.XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    return;
  }
  path_ = dir_template;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  if (::testing::Test::HasFailure()) {
    std::fprintf(stderr, "keeping %s for a post-mortem\n", path_.c_str());
    return;
  }
  std::error_code ec;
  fs::remove_all(path_, ec);
}

ServerProcess::ServerProcess(std::unique_ptr<Subprocess> process) : process_(std::move(process)) {}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const ServerOptions& options) {
  Subprocess::Options spawn;
  if (!options.fault_exec_flags.empty()) {
    spawn.argv.push_back(FAULT_EXEC_BIN);
    spawn.argv.insert(spawn.argv.end(), options.fault_exec_flags.begin(),
                      options.fault_exec_flags.end());
    spawn.argv.push_back("--");
  }
  std::vector<std::string> worker_flags = {absl::StrCat("--executor=", FAKE_EXECUTOR_BIN),
                                           "--devices=cpu", "--kill_grace=2s",
                                           "--lease_wait_seconds=2"};
  worker_flags.insert(worker_flags.end(), options.local_worker_flags.begin(),
                      options.local_worker_flags.end());
  for (const std::string& arg :
       {options.binary.empty() ? std::string(COMPRESSD_BIN) : options.binary,
        std::string("--insecure"), absl::StrCat("--grpc_address=127.0.0.1:", options.port),
        std::string("--metrics_address="), absl::StrCat("--data_dir=", options.data_dir),
        absl::StrCat("--local_workers=", options.local_workers),
        absl::StrCat("--worker_binary=", COMPRESS_WORKER_BIN),
        absl::StrCat("--local_worker_flags=", absl::StrJoin(worker_flags, ",")),
        std::string("--shutdown_grace=2s")}) {
    spawn.argv.push_back(arg);
  }
  spawn.argv.insert(spawn.argv.end(), options.flags.begin(), options.flags.end());
  spawn.stderr_tail_bytes = 64 * 1024;
  spawn.stderr_echo_prefix = "[compressd] ";
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(spawn);
  if (!process.ok()) return process.status();
  std::unique_ptr<ServerProcess> server(new ServerProcess(*std::move(process)));

  // The first stdout line, or nothing if compressd hangs: a watchdog kills it after 30 s.
  absl::Notification got_line;
  Subprocess* raw = server->process_.get();
  std::thread watchdog([&] {
    if (!got_line.WaitForNotificationWithTimeout(absl::Seconds(30))) raw->Signal(SIGKILL);
  });
  std::string line = raw->ReadLine().value_or("<eof>");
  got_line.Notify();
  watchdog.join();
  absl::string_view rest = line;
  if (!absl::ConsumePrefix(&rest, "compressd listening on ")) {
    ExitInfo exit = WaitBounded(*raw, absl::Seconds(10));
    server->waited_ = true;
    return absl::UnavailableError(absl::StrCat("compressd did not start (", exit.ToString(),
                                               "); stdout: '", line,
                                               "'; stderr: ", raw->StderrTail()));
  }
  server->address_ = std::string(absl::StripAsciiWhitespace(rest));
  absl::SimpleAtoi(server->address_.substr(server->address_.rfind(':') + 1), &server->port_);
  server->drain_ = std::thread([raw] {
    while (raw->ReadLine()) {
    }
  });
  return server;
}

ServerProcess::~ServerProcess() {
  if (killed_ && !waited_) {
    // Its local workers end within seconds of its death (and of their attempts' ends).
    WaitBounded(*process_, absl::Seconds(60));
    waited_ = true;
  }
  if (!waited_) Terminate(absl::Seconds(30));
  if (drain_.joinable()) drain_.join();
}

void ServerProcess::Kill() {
  if (waited_ || killed_) return;
  kill(process_->pid(), SIGKILL);
  // Dead, but not reaped: Subprocess::Wait does that (and waits for stderr to close).
  siginfo_t info;
  while (waitid(P_PID, process_->pid(), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
  killed_ = true;
}

void ServerProcess::Signal(int sig) {
  if (!waited_ && !killed_) kill(process_->pid(), sig);
}

ExitInfo ServerProcess::Terminate(absl::Duration timeout) {
  if (waited_ || killed_) return ExitInfo{};
  kill(process_->pid(), SIGTERM);
  ExitInfo exit = WaitBounded(*process_, timeout);
  waited_ = true;
  return exit;
}

CommandResult RunCommand(const std::vector<std::string>& argv, absl::Duration timeout) {
  Subprocess::Options options;
  options.argv = argv;
  options.stderr_tail_bytes = 16384;
  CommandResult result;
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(options);
  if (!process.ok()) {
    result.err = std::string(process.status().message());
    return result;
  }
  absl::Notification done;
  std::thread watchdog([&] {
    if (!done.WaitForNotificationWithTimeout(timeout)) (*process)->Signal(SIGKILL);
  });
  while (std::optional<std::string> line = (*process)->ReadLine()) {
    absl::StrAppend(&result.out, *line, "\n");
  }
  result.exit = (*process)->Wait();
  done.Notify();
  watchdog.join();
  result.err = (*process)->StderrTail();
  return result;
}

WorkerProcess::WorkerProcess(std::unique_ptr<Subprocess> process) : process_(std::move(process)) {}

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Start(
    const std::string& server, const std::string& worker_id, const std::string& work_root,
    const std::vector<std::string>& flags) {
  Subprocess::Options spawn;
  spawn.argv = {COMPRESS_WORKER_BIN,
                absl::StrCat("--server=", server),
                absl::StrCat("--worker_id=", worker_id),
                absl::StrCat("--work_root=", work_root),
                absl::StrCat("--executor=", FAKE_EXECUTOR_BIN),
                "--devices=cpu",
                "--kill_grace=2s",
                "--lease_wait_seconds=2"};
  spawn.argv.insert(spawn.argv.end(), flags.begin(), flags.end());
  spawn.stderr_tail_bytes = 64 * 1024;
  spawn.stderr_echo_prefix = absl::StrCat("[", worker_id, "] ");
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(spawn);
  if (!process.ok()) return process.status();
  std::unique_ptr<WorkerProcess> agent(new WorkerProcess(*std::move(process)));
  Subprocess* raw = agent->process_.get();
  agent->drain_ = std::thread([raw] {
    while (raw->ReadLine()) {
    }
  });
  return agent;
}

WorkerProcess::~WorkerProcess() {
  Kill();
  if (drain_.joinable()) drain_.join();
}

void WorkerProcess::Signal(int sig) {
  if (!waited_) process_->Signal(sig);
}

void WorkerProcess::Kill() {
  if (waited_) return;
  // A stopped process dies of SIGKILL too.
  process_->Signal(SIGKILL);
  process_->Wait();
  waited_ = true;
}

Client::Client(const std::string& address) {
  grpc::ChannelArguments args;
  // Quick reconnects after a restart. (GRPC_ARG_MIN_RECONNECT_BACKOFF_MS stays at its default:
  // it is also each connection attempt's timeout, which a loaded machine needs.)
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  // A connection of its own: channels with equal arguments would otherwise share one.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  stub_ = v1::CompressionService::NewStub(channel_);
}

v1::CreateJobRequest Client::JobRequest(int steps, int max_attempts,
                                        const std::string& request_id) {
  v1::CreateJobRequest request;
  request.mutable_spec()->mutable_dataset()->set_format("synthetic");
  request.mutable_spec()->mutable_teacher()->mutable_train()->set_epochs(1);
  request.mutable_spec()->mutable_teacher()->mutable_train()->set_max_steps(steps);
  request.set_max_attempts(max_attempts);
  request.set_request_id(request_id);
  return request;
}

grpc::Status Client::CreateJob(const v1::CreateJobRequest& request, v1::Job* job,
                               absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  return stub_->CreateJob(&context, request, job);
}

grpc::Status Client::GetJob(const std::string& name, v1::Job* job, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  v1::GetJobRequest request;
  request.set_name(name);
  return stub_->GetJob(&context, request, job);
}

grpc::Status Client::ListAllJobs(std::vector<v1::Job>* jobs) {
  jobs->clear();
  v1::ListJobsRequest request;
  request.set_page_size(100);
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(Deadline(absl::Seconds(10)));
    v1::ListJobsResponse response;
    grpc::Status status = stub_->ListJobs(&context, request, &response);
    if (!status.ok()) return status;
    for (v1::Job& job : *response.mutable_jobs()) jobs->push_back(std::move(job));
    if (response.next_page_token().empty()) return grpc::Status::OK;
    request.set_page_token(response.next_page_token());
  }
}

grpc::Status Client::Watch(const std::string& name, int64_t after_sequence,
                           std::vector<v1::JobEvent>* events, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  v1::WatchJobRequest request;
  request.set_name(name);
  request.set_after_sequence(after_sequence);
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = stub_->WatchJob(&context, request);
  v1::JobEvent event;
  while (reader->Read(&event)) events->push_back(event);
  return reader->Finish();
}

bool Client::WaitFor(const std::string& name, const std::function<bool(const v1::Job&)>& done,
                     absl::Duration timeout, v1::Job* last) {
  absl::Time deadline = absl::Now() + timeout;
  v1::Job job;
  while (true) {
    v1::Job got;
    if (GetJob(name, &got, absl::Seconds(2)).ok()) {
      job = got;
      if (done(job)) break;
    }
    if (absl::Now() >= deadline) {
      if (last != nullptr) *last = job;
      return false;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  if (last != nullptr) *last = job;
  return true;
}

std::string Client::Health(absl::Duration timeout) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health->Check(&context, request, &response);
  if (!status.ok())
    return absl::StrCat("error ", status.error_code(), ": ", status.error_message());
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
}

bool IsFinished(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

std::map<std::string, std::vector<std::vector<std::string>>> ExecutorLog(const std::string& path,
                                                                         const std::string& kind) {
  std::map<std::string, std::vector<std::vector<std::string>>> by_job;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() < 2 || fields[0] != kind) continue;
    std::string job = fields[1];
    fields.erase(fields.begin(), fields.begin() + 2);
    by_job[job].push_back(std::move(fields));
  }
  return by_job;
}

std::string JobId(const std::string& name) {
  absl::string_view id = name;
  absl::ConsumePrefix(&id, "jobs/");
  return std::string(id);
}

}  // namespace compress::faults
