// compress-worker against a real compressd (a subprocess that starts the agent itself with
// --local_workers=1), with shell-script executors: relay order and artifacts through the real
// WorkerService, a crash reported as a failed attempt with its exit status and stderr tail, and
// cancellation escalating from SIGTERM to SIGKILL.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "worker/agent/subprocess.h"
#include "worker/events/sha256.h"

namespace compress::worker {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class AgentServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/agent_server_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    root_ = dir_template;
  }
  void TearDown() override {
    if (server_ != nullptr) {
      server_->Signal(SIGTERM);
      absl::Notification done;
      std::thread watchdog([&] {
        if (!done.WaitForNotificationWithTimeout(absl::Seconds(30))) server_->Signal(SIGKILL);
      });
      server_->Wait();
      done.Notify();
      watchdog.join();
    }
    if (drain_.joinable()) drain_.join();
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // Starts compressd with one local worker whose executor is a script with `body`.
  void StartServer(const std::string& body) {
    std::string executor = root_ + "/fake-run.sh";
    std::ofstream out(executor);
    out << "#!/bin/bash\n"
           "while [ $# -gt 0 ]; do case \"$1\" in --workdir) WORKDIR=\"$2\"; shift;; esac; "
           "shift; done\n"
        << body;
    out.close();
    chmod(executor.c_str(), 0755);
    Subprocess::Options options;
    options.argv = {COMPRESSD_BIN,
                    "--grpc_address=127.0.0.1:0",
                    "--metrics_address=",
                    absl::StrCat("--data_dir=", root_, "/data"),
                    "--local_workers=1",
                    absl::StrCat("--worker_binary=", COMPRESS_WORKER_BIN),
                    absl::StrCat("--local_worker_flags=--executor=", executor,
                                 ",--devices=cpu,--kill_grace=1s,--lease_wait_seconds=5")};
    options.stderr_echo_prefix = "[compressd] ";
    absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(*started);
    std::string line = server_->ReadLine().value_or("<eof>");
    absl::string_view address = line;
    ASSERT_TRUE(absl::ConsumePrefix(&address, "compressd listening on "))
        << line << server_->StderrTail();
    drain_ = std::thread([process = server_.get()] {
      while (process->ReadLine()) {
      }
    });
    stub_ = compress::v1::CompressionService::NewStub(grpc::CreateChannel(
        std::string(absl::StripAsciiWhitespace(address)), grpc::InsecureChannelCredentials()));
  }

  compress::v1::Job Create(int max_attempts) {
    compress::v1::CreateJobRequest request;
    request.mutable_spec()->mutable_dataset()->set_format("synthetic");
    request.mutable_spec()->mutable_teacher()->mutable_train()->set_max_steps(1);
    request.set_max_attempts(max_attempts);
    compress::v1::Job job;
    grpc::ClientContext context;
    grpc::Status status = stub_->CreateJob(&context, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  // Collects the job's events until it finishes; returns the finished job.
  compress::v1::Job Follow(const std::string& name, std::vector<compress::v1::JobEvent>* events) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    compress::v1::WatchJobRequest request;
    request.set_name(name);
    auto reader = stub_->WatchJob(&context, request);
    compress::v1::JobEvent event;
    while (reader->Read(&event)) events->push_back(event);
    grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    grpc::ClientContext get_context;
    compress::v1::GetJobRequest get;
    get.set_name(name);
    compress::v1::Job job;
    EXPECT_TRUE(stub_->GetJob(&get_context, get, &job).ok());
    return job;
  }

  std::string root_;
  std::unique_ptr<Subprocess> server_;
  std::thread drain_;
  std::unique_ptr<compress::v1::CompressionService::Stub> stub_;
};

TEST_F(AgentServerTest, RelaysEventsInOrderAndUploadsArtifacts) {
  ASSERT_NO_FATAL_FAILURE(StartServer(R"sh(
echo '{"type":"phase_started","time":1,"phase":"teacher"}'
for i in $(seq 1 100); do
  echo "{\"type\":\"metric\",\"time\":1,\"phase\":\"teacher\",\"step\":$i,\"values\":{\"loss\":1}}"
done
head -c 2500000 /dev/urandom > "$WORKDIR/model.bin"
sum=$(sha256sum "$WORKDIR/model.bin" | cut -d' ' -f1)
echo "{\"type\":\"artifact\",\"time\":1,\"name\":\"model.bin\",\"path\":\"$WORKDIR/model.bin\",\"sha256\":\"$sum\",\"size_bytes\":2500000}"
echo '{"top1":0.25}' > "$WORKDIR/report.json"
echo '{"type":"report","time":1,"report":{"top1":0.25}}'
)sh"));
  compress::v1::Job job = Create(1);
  std::vector<compress::v1::JobEvent> events;
  compress::v1::Job done = Follow(job.name(), &events);
  ASSERT_EQ(done.state(), compress::v1::SUCCEEDED) << done.error_message();
  EXPECT_THAT(done.report_json(), HasSubstr("0.25"));
  int64_t step = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i) + 1);
    if (events[i].has_metric()) EXPECT_EQ(events[i].metric().step(), ++step);
  }
  EXPECT_EQ(step, 100);

  ASSERT_EQ(done.artifacts_size(), 1);
  EXPECT_EQ(done.artifacts(0).size_bytes(), 2500000);
  grpc::ClientContext context;
  compress::v1::ReadArtifactRequest read;
  read.set_name(done.name() + "/artifacts/model.bin");
  auto reader = stub_->ReadArtifact(&context, read);
  compress::v1::ReadArtifactResponse chunk;
  Sha256 hasher;
  while (reader->Read(&chunk)) hasher.Update(chunk.data());
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(hasher.HexDigest(), done.artifacts(0).sha256());
}

TEST_F(AgentServerTest, CrashFailsTheAttemptWithExitStatusAndStderrTail) {
  ASSERT_NO_FATAL_FAILURE(StartServer(R"sh(
echo '{"type":"phase_started","time":1,"phase":"teacher"}'
echo "segfault-like last words" >&2
kill -9 $$
)sh"));
  compress::v1::Job job = Create(1);
  std::vector<compress::v1::JobEvent> events;
  compress::v1::Job done = Follow(job.name(), &events);
  EXPECT_EQ(done.state(), compress::v1::FAILED);
  EXPECT_EQ(done.attempt_count(), 1);
  EXPECT_THAT(done.error_message(), HasSubstr("exit status 137"));
  EXPECT_THAT(done.error_message(), HasSubstr("executor killed by signal 9"));
  bool saw_tail = false;
  for (const compress::v1::JobEvent& event : events) {
    if (event.has_log() && absl::StrContains(event.log().message(), "segfault-like last words")) {
      saw_tail = true;
    }
  }
  EXPECT_TRUE(saw_tail);
}

TEST_F(AgentServerTest, CancelEscalatesFromSigtermToSigkill) {
  ASSERT_NO_FATAL_FAILURE(StartServer(R"sh(
trap 'echo "TERM ignored" >&2' TERM
echo '{"type":"phase_started","time":1,"phase":"teacher"}'
while true; do sleep 0.1; done
)sh"));
  compress::v1::Job job = Create(1);
  // Wait until the executor runs.
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  compress::v1::Job current;
  while (absl::Now() < deadline) {
    grpc::ClientContext context;
    compress::v1::GetJobRequest get;
    get.set_name(job.name());
    ASSERT_TRUE(stub_->GetJob(&context, get, &current).ok());
    if (current.last_event_sequence() >= 3) break;  // queued, running, phase_started
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(current.state(), compress::v1::RUNNING);
  grpc::ClientContext context;
  compress::v1::CancelJobRequest cancel;
  cancel.set_name(job.name());
  compress::v1::Job cancelling;
  ASSERT_TRUE(stub_->CancelJob(&context, cancel, &cancelling).ok());
  absl::Time cancelled_at = absl::Now();
  std::vector<compress::v1::JobEvent> events;
  compress::v1::Job done = Follow(job.name(), &events);
  EXPECT_EQ(done.state(), compress::v1::CANCELLED);
  // The executor ignored SIGTERM: only SIGKILL, a 1 s grace later, ended it.
  EXPECT_GE(absl::Now() - cancelled_at, absl::Seconds(1));
  EXPECT_THAT(server_->StderrTail(), HasSubstr("TERM ignored"));
}

}  // namespace
}  // namespace compress::worker
