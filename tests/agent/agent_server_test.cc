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
#include "client/dial.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/common/test_dir.h"
#include "worker/agent/subprocess.h"
#include "worker/events/sha256.h"

namespace compress::worker {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class AgentServerTest : public ::testing::Test {
 protected:
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
  }

  // Starts compressd with one local worker whose executor is a script with `body`. Without
  // `token_file`, compressd runs --insecure; with it, compressd authenticates with that file,
  // the worker with `worker_token_file`, and the test's stub sends `token`.
  void StartServer(const std::string& body, const std::string& token_file = "",
                   const std::string& worker_token_file = "", const std::string& token = "") {
    std::string executor = root_ + "/fake-run.sh";
    std::ofstream out(executor);
    out << "#!/bin/bash\n"
           "while [ $# -gt 0 ]; do case \"$1\" in --workdir) WORKDIR=\"$2\"; shift;; esac; "
           "shift; done\n"
        << body;
    out.close();
    chmod(executor.c_str(), 0755);
    Subprocess::Options options;
    options.argv = {
        COMPRESSD_BIN,
        token_file.empty() ? "--insecure" : absl::StrCat("--token_file=", token_file),
        "--grpc_address=127.0.0.1:0",
        "--metrics_address=",
        absl::StrCat("--data_dir=", root_, "/data"),
        "--local_workers=1",
        absl::StrCat("--worker_binary=", COMPRESS_WORKER_BIN),
        absl::StrCat("--local_worker_flags=--executor=", executor,
                     ",--devices=cpu,--kill_grace=1s,--lease_wait_seconds=5",
                     worker_token_file.empty() ? "" : ",--token_file=", worker_token_file)};
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
    client::ChannelSecurity security;
    security.token = token;
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = client::Dial(
        std::string(absl::StripAsciiWhitespace(address)), security, grpc::ChannelArguments());
    ASSERT_TRUE(channel.ok()) << channel.status();
    stub_ = compress::v1::CompressionService::NewStub(*channel);
  }

  std::string WriteFile(const std::string& name, const std::string& text) {
    std::string path = root_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  grpc::Status TryCreate(int max_attempts, compress::v1::Job* job) {
    compress::v1::CreateJobRequest request;
    request.mutable_spec()->mutable_dataset()->set_format("synthetic");
    request.mutable_spec()->mutable_teacher()->mutable_train()->set_max_steps(1);
    request.set_max_attempts(max_attempts);
    grpc::ClientContext context;
    return stub_->CreateJob(&context, request, job);
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

  TestDir dir_{"agent_server_test"};
  const std::string root_ = dir_.path();
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
    if (events[i].has_metric()) {
      EXPECT_EQ(events[i].metric().step(), ++step);
    }
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

TEST_F(AgentServerTest, UploadedTeacherBlobIsFetchedIntoTheWorkDir) {
  // The executor succeeds only when DIR/blobs/<sha256> holds the uploaded bytes.
  ASSERT_NO_FATAL_FAILURE(StartServer(R"sh(
for f in "$WORKDIR"/blobs/*; do
  name=$(basename "$f")
  sum=$(sha256sum "$f" | cut -d' ' -f1)
  if [ "$name" = "$sum" ]; then
    echo "{\"blob\":\"$sum\"}" > "$WORKDIR/report.json"
    echo "{\"type\":\"report\",\"time\":1,\"report\":{\"blob\":\"$sum\"}}"
    exit 0
  fi
done
echo '{"type":"error","time":1,"code":"NOT_FOUND","message":"no blob in the work dir"}'
exit 1
)sh"));
  // Three chunks' worth of bytes (the server streams 1 MiB chunks by default).
  std::string bytes(3 * 1024 * 1024 + 17, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 131) % 251);
  Sha256 hasher;
  hasher.Update(bytes);
  const std::string sha = hasher.HexDigest();
  {
    grpc::ClientContext context;
    compress::v1::Blob blob;
    auto writer = stub_->UploadBlob(&context, &blob);
    for (size_t offset = 0; offset < bytes.size(); offset += 1 << 20) {
      compress::v1::UploadBlobRequest chunk;
      if (offset == 0) {
        chunk.set_sha256(sha);
        chunk.set_size_bytes(static_cast<int64_t>(bytes.size()));
      }
      chunk.set_data(bytes.substr(offset, 1 << 20));
      ASSERT_TRUE(writer->Write(chunk));
    }
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(blob.sha256(), sha);
  }
  compress::v1::CreateJobRequest request;
  request.mutable_spec()->mutable_dataset()->set_format("synthetic");
  request.mutable_spec()->mutable_teacher()->set_blob_sha256(sha);
  request.set_max_attempts(1);
  compress::v1::Job job;
  {
    grpc::ClientContext context;
    grpc::Status status = stub_->CreateJob(&context, request, &job);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  std::vector<compress::v1::JobEvent> events;
  compress::v1::Job done = Follow(job.name(), &events);
  ASSERT_EQ(done.state(), compress::v1::SUCCEEDED) << done.error_message();
  EXPECT_THAT(done.report_json(), HasSubstr(sha));
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

constexpr char kSubmitterToken[] = "alpha-submitter-token-0001";
constexpr char kWorkerToken[] = "ops-worker-token-000000001";

// The worker authenticates with its token file; jobs of a tenant run through it; SIGHUP makes
// compressd read a changed token file, and a broken one leaves the tokens as they were.
TEST_F(AgentServerTest, WorkerWithTokenRunsJobsAndTokensReloadOnSighup) {
  const std::string tokens = WriteFile(
      "tokens", absl::StrCat(kSubmitterToken, " alpha submitter\n", kWorkerToken, " ops worker\n"));
  const std::string worker_token = WriteFile("worker-token", absl::StrCat(kWorkerToken, "\n"));
  ASSERT_NO_FATAL_FAILURE(StartServer(R"sh(
echo '{"type":"report","time":1,"report":{"top1":0.5}}'
)sh",
                                      tokens, worker_token, kSubmitterToken));
  compress::v1::Job job = Create(1);
  std::vector<compress::v1::JobEvent> events;
  compress::v1::Job done = Follow(job.name(), &events);
  EXPECT_EQ(done.state(), compress::v1::SUCCEEDED) << done.error_message();

  // The submitter's token is taken away: compressd answers UNAUTHENTICATED once it reloaded.
  WriteFile("tokens", absl::StrCat(kWorkerToken, " ops worker\n"));
  server_->Signal(SIGHUP);
  compress::v1::Job refused;
  grpc::Status status;
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  do {
    absl::SleepFor(absl::Milliseconds(50));
    status = TryCreate(1, &refused);
  } while (status.ok() && absl::Now() < deadline);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();

  // A broken file is refused and the tokens stay as they are.
  WriteFile("tokens", absl::StrCat(kSubmitterToken, " alpha submitter\nbroken\n"));
  server_->Signal(SIGHUP);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(TryCreate(1, &refused).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace compress::worker
