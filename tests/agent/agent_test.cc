// The agent's lease loop against the fake WorkerService: leasing, running, reconnecting.
#include "worker/agent/agent.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/agent/fake_worker_service.h"
#include "tests/common/test_dir.h"

namespace compress::worker {
namespace {

namespace fs = std::filesystem;
using testing::FakeWorkerService;

// A loopback port that was free a moment ago.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

// Attempt 1 of `job`, with an empty spec and a 30 s lease.
compress::v1::Lease FirstAttempt(const std::string& job) {
  compress::v1::Lease lease;
  lease.set_job(job);
  lease.set_attempt(1);
  lease.set_spec_json("{}");
  lease.set_lease_seconds(30);
  return lease;
}

namespace v1 = compress::v1;

// A WorkerService stub that passes every call to `inner` and calls `on_lease` once a LeaseJob
// answer carrying a lease has arrived, before the agent sees it.
class LeaseHookStub : public v1::WorkerService::StubInterface {
 public:
  LeaseHookStub(v1::WorkerService::StubInterface* inner, std::function<void()> on_lease)
      : inner_(inner), on_lease_(std::move(on_lease)) {}

  grpc::Status LeaseJob(grpc::ClientContext* context, const v1::LeaseJobRequest& request,
                        v1::LeaseJobResponse* response) override {
    grpc::Status status = inner_->LeaseJob(context, request, response);
    if (status.ok() && response->has_lease()) on_lease_();
    return status;
  }
  grpc::Status Heartbeat(grpc::ClientContext* context, const v1::HeartbeatRequest& request,
                         v1::HeartbeatResponse* response) override {
    return inner_->Heartbeat(context, request, response);
  }
  grpc::Status ReportEvents(grpc::ClientContext* context, const v1::ReportEventsRequest& request,
                            v1::ReportEventsResponse* response) override {
    return inner_->ReportEvents(context, request, response);
  }
  grpc::Status CompleteAttempt(grpc::ClientContext* context,
                               const v1::CompleteAttemptRequest& request,
                               v1::CompleteAttemptResponse* response) override {
    return inner_->CompleteAttempt(context, request, response);
  }

 private:
  template <typename T>
  using AsyncReader = grpc::ClientAsyncResponseReaderInterface<T>;

  AsyncReader<v1::LeaseJobResponse>* AsyncLeaseJobRaw(grpc::ClientContext* c,
                                                      const v1::LeaseJobRequest& r,
                                                      grpc::CompletionQueue* cq) override {
    return inner_->AsyncLeaseJob(c, r, cq).release();
  }
  AsyncReader<v1::LeaseJobResponse>* PrepareAsyncLeaseJobRaw(grpc::ClientContext* c,
                                                             const v1::LeaseJobRequest& r,
                                                             grpc::CompletionQueue* cq) override {
    return inner_->PrepareAsyncLeaseJob(c, r, cq).release();
  }
  AsyncReader<v1::HeartbeatResponse>* AsyncHeartbeatRaw(grpc::ClientContext* c,
                                                        const v1::HeartbeatRequest& r,
                                                        grpc::CompletionQueue* cq) override {
    return inner_->AsyncHeartbeat(c, r, cq).release();
  }
  AsyncReader<v1::HeartbeatResponse>* PrepareAsyncHeartbeatRaw(grpc::ClientContext* c,
                                                               const v1::HeartbeatRequest& r,
                                                               grpc::CompletionQueue* cq) override {
    return inner_->PrepareAsyncHeartbeat(c, r, cq).release();
  }
  AsyncReader<v1::ReportEventsResponse>* AsyncReportEventsRaw(grpc::ClientContext* c,
                                                              const v1::ReportEventsRequest& r,
                                                              grpc::CompletionQueue* cq) override {
    return inner_->AsyncReportEvents(c, r, cq).release();
  }
  AsyncReader<v1::ReportEventsResponse>* PrepareAsyncReportEventsRaw(
      grpc::ClientContext* c, const v1::ReportEventsRequest& r,
      grpc::CompletionQueue* cq) override {
    return inner_->PrepareAsyncReportEvents(c, r, cq).release();
  }
  grpc::ClientWriterInterface<v1::UploadArtifactRequest>* UploadArtifactRaw(
      grpc::ClientContext* c, v1::Artifact* response) override {
    return inner_->UploadArtifact(c, response).release();
  }
  grpc::ClientAsyncWriterInterface<v1::UploadArtifactRequest>* AsyncUploadArtifactRaw(
      grpc::ClientContext* c, v1::Artifact* response, grpc::CompletionQueue* cq,
      void* tag) override {
    return inner_->AsyncUploadArtifact(c, response, cq, tag).release();
  }
  grpc::ClientAsyncWriterInterface<v1::UploadArtifactRequest>* PrepareAsyncUploadArtifactRaw(
      grpc::ClientContext* c, v1::Artifact* response, grpc::CompletionQueue* cq) override {
    return inner_->PrepareAsyncUploadArtifact(c, response, cq).release();
  }
  AsyncReader<v1::CompleteAttemptResponse>* AsyncCompleteAttemptRaw(
      grpc::ClientContext* c, const v1::CompleteAttemptRequest& r,
      grpc::CompletionQueue* cq) override {
    return inner_->AsyncCompleteAttempt(c, r, cq).release();
  }
  AsyncReader<v1::CompleteAttemptResponse>* PrepareAsyncCompleteAttemptRaw(
      grpc::ClientContext* c, const v1::CompleteAttemptRequest& r,
      grpc::CompletionQueue* cq) override {
    return inner_->PrepareAsyncCompleteAttempt(c, r, cq).release();
  }
  grpc::ClientReaderInterface<v1::ReadArtifactResponse>* ReadBlobRaw(
      grpc::ClientContext* c, const v1::ReadBlobRequest& r) override {
    return inner_->ReadBlob(c, r).release();
  }
  grpc::ClientAsyncReaderInterface<v1::ReadArtifactResponse>* AsyncReadBlobRaw(
      grpc::ClientContext* c, const v1::ReadBlobRequest& r, grpc::CompletionQueue* cq,
      void* tag) override {
    return inner_->AsyncReadBlob(c, r, cq, tag).release();
  }
  grpc::ClientAsyncReaderInterface<v1::ReadArtifactResponse>* PrepareAsyncReadBlobRaw(
      grpc::ClientContext* c, const v1::ReadBlobRequest& r, grpc::CompletionQueue* cq) override {
    return inner_->PrepareAsyncReadBlob(c, r, cq).release();
  }

  v1::WorkerService::StubInterface* const inner_;
  const std::function<void()> on_lease_;
};

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string executor = root_ + "/fake-run.sh";
    std::ofstream out(executor);
    out << "#!/bin/sh\n"
           "echo '{\"type\":\"phase_started\",\"time\":1,\"phase\":\"teacher\"}'\n"
           "echo '{\"type\":\"report\",\"time\":1,\"report\":{\"ok\":true}}'\n";
    out.close();
    chmod(executor.c_str(), 0755);
    options_.worker_id = "agent-test";
    compress::v1::Device cpu;
    cpu.set_name("cpu");
    options_.devices = {cpu};
    options_.lease_wait_seconds = 1;
    options_.initial_backoff = absl::Milliseconds(100);
    options_.max_backoff = absl::Milliseconds(500);
    options_.attempt.executor_path = executor;
    options_.attempt.work_root = root_ + "/work";
    options_.attempt.echo_executor_stderr = false;
  }
  // Serves `service` on a free loopback port and points options_.server at it; null when it
  // cannot be served.
  std::unique_ptr<grpc::Server> ServeForAgent(FakeWorkerService* service) {
    int port = 0;
    std::unique_ptr<grpc::Server> server = FakeWorkerService::Serve(service, "127.0.0.1:0", &port);
    options_.server = absl::StrCat("127.0.0.1:", port);
    return server;
  }

  TestDir dir_{"agent_test"};
  const std::string root_ = dir_.path();
  Agent::Options options_;
};

TEST_F(AgentTest, ConnectsOnceTheServerComesUpAndRunsTheLeasedJob) {
  int port = FreePort();
  options_.server = absl::StrCat("127.0.0.1:", port);
  absl::StatusOr<std::unique_ptr<Agent>> agent = Agent::Create(options_);
  ASSERT_TRUE(agent.ok()) << agent.status();
  std::thread runner([&agent] { (*agent)->Run(); });

  // No server yet: the agent backs off and keeps trying.
  absl::SleepFor(absl::Milliseconds(1500));
  FakeWorkerService service;
  service.AddLease(FirstAttempt("jobs/a1"));
  int bound = 0;
  std::unique_ptr<grpc::Server> server =
      FakeWorkerService::Serve(&service, options_.server, &bound);
  ASSERT_NE(server, nullptr);
  ASSERT_EQ(bound, port);

  ASSERT_TRUE(service.WaitForCompletions(1, absl::Seconds(20)));
  compress::v1::CompleteAttemptRequest completion = service.completions()[0];
  EXPECT_EQ(completion.worker_id(), "agent-test");
  EXPECT_EQ(completion.job(), "jobs/a1");
  EXPECT_EQ(completion.outcome(), compress::v1::ATTEMPT_SUCCEEDED);
  EXPECT_EQ(service.events().size(), 2u);
  EXPECT_EQ(service.last_device().name(), "cpu");

  absl::Time stop = absl::Now();
  (*agent)->Stop();
  runner.join();
  EXPECT_LT(absl::Now() - stop, absl::Seconds(3));
  EXPECT_EQ((*agent)->attempts_run(), 1);
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

TEST_F(AgentTest, RelativeWorkRootAndExecutorAreTheAgentsNotTheJobDirectorys) {
  // The executor fails unless its --spec (argument 2) is readable from its working directory
  // (the job's directory).
  std::ofstream(root_ + "/reads-spec.sh")
      << "#!/bin/sh\n"
         "test -r \"$2\" || { echo \"cannot read $2 from $(pwd)\" >&2; exit 3; }\n"
         "echo '{\"type\":\"report\",\"time\":1,\"report\":{\"ok\":true}}'\n";
  chmod((root_ + "/reads-spec.sh").c_str(), 0755);
  const fs::path previous = fs::current_path();
  fs::current_path(root_);
  options_.attempt.executor_path = "./reads-spec.sh";
  options_.attempt.work_root = "relative/work";
  options_.server = absl::StrCat("127.0.0.1:", FreePort());
  absl::StatusOr<std::unique_ptr<Agent>> agent = Agent::Create(options_);
  fs::current_path(previous);  // the agent must not depend on the directory it was created in
  ASSERT_TRUE(agent.ok()) << agent.status();
  FakeWorkerService service;
  service.AddLease(FirstAttempt("jobs/r1"));
  int bound = 0;
  std::unique_ptr<grpc::Server> server =
      FakeWorkerService::Serve(&service, options_.server, &bound);
  ASSERT_NE(server, nullptr);
  std::thread runner([&agent] { (*agent)->Run(); });
  ASSERT_TRUE(service.WaitForCompletions(1, absl::Seconds(20)));
  EXPECT_EQ(service.completions()[0].outcome(), compress::v1::ATTEMPT_SUCCEEDED)
      << service.completions()[0].error_message();
  (*agent)->Stop();
  runner.join();
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

TEST_F(AgentTest, DoesNotSpinWhileTheServerIsAway) {
  options_.server = absl::StrCat("127.0.0.1:", FreePort());
  options_.initial_backoff = absl::Milliseconds(200);
  options_.max_backoff = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<Agent>> agent = Agent::Create(options_);
  ASSERT_TRUE(agent.ok());
  std::thread runner([&agent] { (*agent)->Run(); });
  absl::SleepFor(absl::Seconds(2));
  (*agent)->Stop();
  runner.join();
  EXPECT_EQ((*agent)->attempts_run(), 0);
}

// A lease that arrives in the same LeaseJob answer as Stop() is handed back at once
// (CompleteAttempt FAILED, retryable, `stopping`), without starting its executor, so that the
// server requeues the job without waiting for the lease to expire or counting the attempt.
TEST_F(AgentTest, LeaseArrivingWithStopIsHandedBack) {
  FakeWorkerService service;
  service.AddLease(FirstAttempt("jobs/s1"));
  int port = 0;
  std::unique_ptr<grpc::Server> server = FakeWorkerService::Serve(&service, "127.0.0.1:0", &port);
  ASSERT_NE(server, nullptr);
  std::unique_ptr<v1::WorkerService::Stub> real = v1::WorkerService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  Agent* agent_ptr = nullptr;
  LeaseHookStub stub(real.get(), [&agent_ptr] { agent_ptr->Stop(); });
  options_.server = absl::StrCat("127.0.0.1:", port);
  Agent agent(options_, &stub);
  agent_ptr = &agent;

  absl::Time start = absl::Now();
  std::thread runner([&agent] { agent.Run(); });
  runner.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));

  std::vector<v1::CompleteAttemptRequest> completions = service.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].job(), "jobs/s1");
  EXPECT_EQ(completions[0].outcome(), v1::ATTEMPT_FAILED);
  EXPECT_TRUE(completions[0].stopping());
  EXPECT_TRUE(completions[0].retryable());
  EXPECT_EQ(completions[0].error_code(), "UNAVAILABLE");
  // The executor never ran: no line reached the server.
  EXPECT_TRUE(service.events().empty());
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

// An executor that stops being startable (removed after the agent started, as by a deployment)
// fails no job: each lease is handed back, and the agent takes no work until the executor is an
// executable file again, instead of leasing and handing back the whole queue.
TEST_F(AgentTest, AnExecutorThatCannotStartHandsLeasesBackAndPausesLeasing) {
  const std::string executor = options_.attempt.executor_path;
  options_.executor_pause = absl::Milliseconds(300);
  options_.executor_max_pause = absl::Milliseconds(600);
  compress::v1::Device second;
  second.set_name("cuda:0");
  options_.devices.push_back(second);
  FakeWorkerService service;
  for (const char* job : {"jobs/x1", "jobs/x2", "jobs/x3", "jobs/x4"}) {
    service.AddLease(FirstAttempt(job));
  }
  std::unique_ptr<grpc::Server> server = ServeForAgent(&service);
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<Agent>> agent = Agent::Create(options_);
  ASSERT_TRUE(agent.ok()) << agent.status();
  fs::rename(executor, executor + ".away");
  std::thread runner([&agent] { (*agent)->Run(); });
  auto stop = [&] {
    (*agent)->Stop();
    runner.join();
    server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  };

  if (!service.WaitForCompletions(1, absl::Seconds(20))) {
    stop();
    FAIL() << "no attempt was reported";
  }
  // Both loops may lease at once: at most one hand-back each, then no more leases.
  absl::SleepFor(absl::Seconds(2));
  std::vector<compress::v1::CompleteAttemptRequest> handed_back = service.completions();
  EXPECT_LE(handed_back.size(), 2u) << "the agent went on leasing";
  for (const compress::v1::CompleteAttemptRequest& completion : handed_back) {
    EXPECT_EQ(completion.outcome(), compress::v1::ATTEMPT_FAILED);
    EXPECT_TRUE(completion.stopping()) << "the attempt must not count against the job";
    EXPECT_TRUE(completion.retryable());
    EXPECT_EQ(completion.error_code(), "UNAVAILABLE");
    EXPECT_EQ(completion.error_message(),
              absl::StrCat("this worker cannot start its executor (NOT_FOUND: cannot start ",
                           executor, ": No such file or directory)"));
  }
  const int leases_while_away = service.lease_calls();
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(service.lease_calls(), leases_while_away) << "no lease while the executor is away";

  // Back: the queue's remaining jobs run.
  fs::rename(executor + ".away", executor);
  EXPECT_TRUE(service.WaitForCompletions(4, absl::Seconds(20)));
  std::vector<compress::v1::CompleteAttemptRequest> all = service.completions();
  for (size_t i = handed_back.size(); i < all.size(); ++i) {
    EXPECT_EQ(all[i].outcome(), compress::v1::ATTEMPT_SUCCEEDED) << all[i].error_message();
  }
  stop();
}

// Sets the mtime of `path` and of everything below it to `age` ago.
void Backdate(const fs::path& path, absl::Duration age) {
  const timespec when = absl::ToTimespec(absl::Now() - age);
  const timespec times[2] = {when, when};
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(path, ec)) {
    utimensat(AT_FDCWD, entry.path().c_str(), times, AT_SYMLINK_NOFOLLOW);
  }
  utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW);
}

// A job's directory as the agent leaves it after a retryable failure, `age` old.
fs::path MakeOldJobDir(const fs::path& work_root, const std::string& job, absl::Duration age) {
  fs::path dir = work_root / job;
  fs::create_directories(dir / "work/phases");
  std::ofstream(dir / "spec.json") << "{}";
  std::ofstream(dir / "work/state.json") << "{}";
  Backdate(dir, age);
  return dir;
}

TEST_F(AgentTest, SweepsOldWorkDirsAtStart) {
  fs::path old = MakeOldJobDir(options_.attempt.work_root, "old1", absl::Hours(100));
  fs::path fresh = MakeOldJobDir(options_.attempt.work_root, "fresh1", absl::Hours(1));
  options_.server = absl::StrCat("127.0.0.1:", FreePort());  // no server: the sweep needs none
  absl::StatusOr<std::unique_ptr<Agent>> agent = Agent::Create(options_);
  ASSERT_TRUE(agent.ok()) << agent.status();
  std::thread runner([&agent] { (*agent)->Run(); });
  absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (fs::exists(old) && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(fs::exists(old));
  EXPECT_TRUE(fs::exists(fresh / "work/state.json"));
  (*agent)->Stop();
  runner.join();
}

TEST_F(AgentTest, SweepKeepsTheWorkDirOfTheRunningAttempt) {
  const fs::path work_root = options_.attempt.work_root;
  const fs::path release = fs::path(root_) / "release";
  // Runs until `release` exists, then fails unless its work dir is still there.
  std::ofstream(root_ + "/slow-run.sh") << absl::StrCat(
      "#!/bin/bash\n"
      "while [ $# -gt 0 ]; do [ \"$1\" = --workdir ] && WORKDIR=\"$2\"; shift; done\n"
      "touch \"$WORKDIR/started\"\n"
      "while [ ! -e ",
      release.string(),
      " ]; do sleep 0.05; done\n"
      "test -e \"$WORKDIR/started\" || { echo 'work dir gone' >&2; exit 3; }\n"
      "echo '{\"type\":\"report\",\"time\":1,\"report\":{\"ok\":true}}'\n");
  chmod((root_ + "/slow-run.sh").c_str(), 0755);
  options_.attempt.executor_path = root_ + "/slow-run.sh";
  options_.attempt.remove_finished_work_dirs = false;
  options_.work_dir_retention = absl::Seconds(1);
  options_.work_dir_sweep_interval = absl::Milliseconds(100);
  FakeWorkerService service;
  service.AddLease(FirstAttempt("jobs/run1"));
  std::unique_ptr<grpc::Server> server = ServeForAgent(&service);
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<Agent>> agent = Agent::Create(options_);
  ASSERT_TRUE(agent.ok()) << agent.status();
  std::thread runner([&agent] { (*agent)->Run(); });

  const fs::path running = work_root / "run1";
  absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (!fs::exists(running / "work/started") && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE(fs::exists(running / "work/started"));
  // Old by its files; only the attempt's hold keeps it. A stale one beside it shows the sweeps
  // running meanwhile.
  Backdate(running, absl::Hours(100));
  fs::path stale = MakeOldJobDir(work_root, "stale1", absl::Hours(100));
  give_up = absl::Now() + absl::Seconds(10);
  while (fs::exists(stale) && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(fs::exists(stale));
  absl::SleepFor(absl::Milliseconds(500));  // a few more sweeps
  EXPECT_TRUE(fs::exists(running / "work/started"));
  EXPECT_TRUE(fs::exists(running / "spec.json"));

  std::ofstream(release.string()) << "go";
  ASSERT_TRUE(service.WaitForCompletions(1, absl::Seconds(20)));
  EXPECT_EQ(service.completions()[0].outcome(), compress::v1::ATTEMPT_SUCCEEDED)
      << service.completions()[0].error_message() << service.completions()[0].stderr_tail();
  (*agent)->Stop();
  runner.join();
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

TEST_F(AgentTest, RejectsUnusableOptions) {
  options_.lease_wait_seconds = 31;
  EXPECT_EQ(Agent::Create(options_).status().code(), absl::StatusCode::kInvalidArgument);
  options_.lease_wait_seconds = 1;
  options_.devices.clear();
  EXPECT_EQ(Agent::Create(options_).status().code(), absl::StatusCode::kInvalidArgument);
  options_.devices.emplace_back().set_name("cpu");
  options_.work_dir_retention = absl::Seconds(-1);
  EXPECT_EQ(Agent::Create(options_).status().code(), absl::StatusCode::kInvalidArgument);
}

// Every option a flag sets has a range (docs/worker.md, "Flags"); a value outside it is refused
// naming the flag, before the agent dials or leases.
TEST_F(AgentTest, RefusesOptionsOutsideTheirRanges) {
  std::ofstream(root_ + "/file") << "x";
  struct Case {
    std::function<void(Agent::Options&)> set;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {[](Agent::Options& o) { o.server = ""; }, "--server: empty address"},
           {[](Agent::Options& o) { o.server = "127.0.0.1:99999"; },
            "--server: the port must be a number in [0, 65535], got '99999' in '127.0.0.1:99999'"},
           {[](Agent::Options& o) { o.server = "compressd"; },
            "--server: expected HOST:PORT, [IPV6]:PORT or unix:PATH, got 'compressd'"},
           {[](Agent::Options& o) { o.attempt.executor_threads = -1; },
            "--threads: must be in [0, 1024] (0 = the executor's default), got -1"},
           {[](Agent::Options& o) { o.attempt.executor_threads = 1025; },
            "--threads: must be in [0, 1024] (0 = the executor's default), got 1025"},
           {[](Agent::Options& o) { o.attempt.kill_grace = absl::Seconds(-1); },
            "--kill_grace: must be in [0s, 1h], got -1s"},
           {[](Agent::Options& o) { o.attempt.kill_grace = absl::InfiniteDuration(); },
            "--kill_grace: must be in [0s, 1h], got inf"},
           {[](Agent::Options& o) { o.lease_wait_seconds = -1; },
            "--lease_wait_seconds: must be in [0, 30], got -1"},
           {[](Agent::Options& o) { o.worker_id = "w 1"; },
            "--worker_id: byte 0x20 at offset 1 is not printable ASCII without spaces "
            "(0x21-0x7e)"},
           {[](Agent::Options& o) { o.worker_id = std::string(129, 'w'); },
            "--worker_id: at most 128 characters, got 129"},
           {[this](Agent::Options& o) { o.attempt.work_root = root_ + "/file"; },
            absl::StrCat("--work_root: ", root_, "/file is not a directory")},
           {[this](Agent::Options& o) { o.attempt.work_root = root_ + "/file/work"; },
            absl::StrCat("--work_root: cannot create ", root_, "/file/work: Not a directory")}}) {
    Agent::Options options = options_;
    options.server = "127.0.0.1:1";
    c.set(options);
    absl::StatusOr<std::unique_ptr<Agent>> agent = Agent::Create(options);
    EXPECT_EQ(agent.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_EQ(std::string(agent.status().message()), c.message);
  }
  // The ends of the ranges pass; a missing work root is created.
  Agent::Options edges = options_;
  edges.server = "127.0.0.1:0";
  edges.attempt.executor_threads = 1024;
  edges.attempt.kill_grace = absl::Hours(1);
  edges.worker_id = std::string(128, 'w');
  edges.attempt.work_root = root_ + "/new/work";
  EXPECT_TRUE(Agent::Create(edges).ok());
  EXPECT_TRUE(fs::is_directory(root_ + "/new/work"));
}

// An executor that is not an executable regular file is refused at start, naming --executor and
// why, rather than found out by every job leased.
TEST_F(AgentTest, RefusesAnExecutorThatCannotRun) {
  options_.server = "127.0.0.1:1";
  const std::string text = root_ + "/text";
  std::ofstream(text) << "#!/bin/sh\n";
  chmod(text.c_str(), 0644);
  const std::string link = root_ + "/link";
  fs::create_symlink(options_.attempt.executor_path, link);
  struct Case {
    std::string path;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {root_ + "/missing",
            absl::StrCat("--executor: cannot run ", root_, "/missing: No such file or directory")},
           {root_, absl::StrCat("--executor: cannot run ", root_,
                                ": a directory, not an executable file")},
           {"/dev/null", "--executor: cannot run /dev/null: not a regular file"},
           {text, absl::StrCat("--executor: cannot run ", text,
                               ": not executable by this user (mode 0644)")}}) {
    options_.attempt.executor_path = c.path;
    absl::StatusOr<std::unique_ptr<Agent>> agent = Agent::Create(options_);
    EXPECT_EQ(agent.status().code(), absl::StatusCode::kInvalidArgument) << c.path;
    EXPECT_EQ(std::string(agent.status().message()), c.message);
  }
  options_.attempt.executor_path = link;  // a symlink to an executable file
  EXPECT_TRUE(Agent::Create(options_).ok());
}

}  // namespace
}  // namespace compress::worker
