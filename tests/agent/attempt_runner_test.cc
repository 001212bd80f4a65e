// AttemptRunner against an in-process fake WorkerService and fake executors (shell scripts that
// follow, or break, the executor contract).
#include "worker/agent/attempt_runner.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/agent/fake_worker_service.h"
#include "tests/common/test_dir.h"
#include "worker/agent/rpc_retry.h"
#include "worker/agent/work_dir_sweeper.h"
#include "worker/events/event.h"
#include "worker/events/sha256.h"

namespace compress::worker {
namespace {

namespace fs = std::filesystem;
using testing::FakeWorkerService;
using ::testing::HasSubstr;

// Parses the executor's flags into $SPEC, $WORKDIR, $DEVICE, and defines emit().
constexpr char kScriptPrelude[] = R"sh(#!/bin/bash
while [ $# -gt 0 ]; do
  case "$1" in
    --spec) SPEC="$2"; shift ;;
    --workdir) WORKDIR="$2"; shift ;;
    --device) DEVICE="$2"; shift ;;
  esac
  shift
done
emit() { printf '%s\n' "$1"; }
)sh";

class AttemptRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = FakeWorkerService::Serve(&service_, "127.0.0.1:0", &port_);
    ASSERT_NE(server_, nullptr);
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials());
    stub_ = compress::v1::WorkerService::NewStub(channel_);
    options_.work_root = root_ + "/work";
    options_.kill_grace = absl::Seconds(5);
    options_.rpc_timeout = absl::Seconds(5);
    options_.complete_retry_for = absl::Seconds(10);
    options_.echo_executor_stderr = false;
    options_.relay.initial_backoff = absl::Milliseconds(20);
    options_.relay.max_backoff = absl::Milliseconds(100);
    device_.set_name("cpu");
    lease_.set_job("jobs/j1");
    lease_.set_attempt(1);
    lease_.set_spec_json(R"({"dataset":{"format":"synthetic"},"teacher":{"train":{"epochs":1}}})");
    lease_.set_lease_seconds(3);
  }

  void TearDown() override {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }

  // Writes an executable fake executor whose body follows kScriptPrelude.
  void WriteExecutor(const std::string& body) {
    options_.executor_path = root_ + "/fake-run.sh";
    std::ofstream out(options_.executor_path);
    out << kScriptPrelude << body;
    out.close();
    chmod(options_.executor_path.c_str(), 0755);
  }

  AttemptResult RunAttempt() {
    AttemptRunner runner(stub_.get(), "w1", device_, lease_, options_);
    return runner.Run();
  }

  // Runs an attempt and shuts the runner down if it has not ended within `limit`, so that a
  // wedged attempt fails the test instead of hanging it; `*wedged` says whether that happened.
  AttemptResult RunAttemptWithin(absl::Duration limit, bool* wedged) {
    AttemptRunner runner(stub_.get(), "w1", device_, lease_, options_);
    absl::Notification done;
    std::atomic<bool> fired{false};
    std::thread watchdog([&] {
      if (!done.WaitForNotificationWithTimeout(limit)) {
        fired = true;
        runner.Shutdown();
      }
    });
    AttemptResult result = runner.Run();
    done.Notify();
    watchdog.join();
    *wedged = fired;
    return result;
  }

  // Replaces the fake's server with one that refuses requests over `max_receive_bytes`.
  void RestartServer(int max_receive_bytes) {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    server_ = FakeWorkerService::Serve(&service_, "127.0.0.1:0", &port_, max_receive_bytes);
    ASSERT_NE(server_, nullptr);
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials());
    stub_ = compress::v1::WorkerService::NewStub(channel_);
  }

  // Makes the lease's spec name a teacher blob that the fake serves, slowly when asked to.
  std::string UseTeacherBlob(size_t size, absl::Duration chunk_delay) {
    std::string data(size, '\0');
    for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>(i * 7 + i / 251);
    std::string sha = Sha256Hex(data);
    service_.AddBlob(sha, std::move(data), 64 << 10, chunk_delay);
    lease_.set_spec_json(absl::StrCat(
        R"({"dataset":{"format":"synthetic"},"teacher":{"blob_sha256":")", sha, R"("}})"));
    return sha;
  }

  TestDir dir_{"attempt_runner_test"};
  const std::string root_ = dir_.path();
  FakeWorkerService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<compress::v1::WorkerService::Stub> stub_;
  AttemptRunner::Options options_;
  compress::v1::Device device_;
  compress::v1::Lease lease_;
};

// A successful run: 300 metric lines and a line that is not JSON, an artifact, a report.
constexpr char kSuccessBody[] = R"sh(
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
for i in $(seq 1 300); do
  emit "{\"type\":\"metric\",\"time\":1,\"phase\":\"teacher\",\"step\":$i,\"values\":{\"loss\":1}}"
  if [ $i = 150 ]; then echo 'plain text, not an event'; fi
done
echo "device=$DEVICE visible=[$CUDA_VISIBLE_DEVICES] spec=$(cat "$SPEC")" >&2
head -c 3000000 /dev/urandom > "$WORKDIR/model.bin"
sum=$(sha256sum "$WORKDIR/model.bin" | cut -d' ' -f1)
emit "{\"type\":\"artifact\",\"time\":1,\"name\":\"model.bin\",\"path\":\"$WORKDIR/model.bin\",\"sha256\":\"$sum\",\"size_bytes\":3000000}"
echo '{"top1":0.5}' > "$WORKDIR/report.json"
emit '{"type":"report","time":1,"report":{"top1":0.5}}'
exit 0
)sh";

TEST_F(AttemptRunnerTest, RelaysEveryLineInOrderAndUploadsArtifacts) {
  WriteExecutor(kSuccessBody);
  service_.FailReportEvents(2);  // the relay must retry, not drop
  AttemptResult result = RunAttempt();

  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_SUCCEEDED);
  EXPECT_TRUE(result.completed);
  EXPECT_EQ(service_.failed_report_calls(), 2);
  std::vector<std::string> events = service_.events();
  ASSERT_EQ(events.size(), 1u + 300u + 1u + 1u + 1u);
  int step = 0;
  bool saw_text = false;
  for (size_t i = 1; i < events.size() - 2; ++i) {
    absl::StatusOr<events::Event> event = events::Parse(events[i]);
    ASSERT_TRUE(event.ok()) << events[i];
    if (event->type == events::EventType::kLog) {
      EXPECT_EQ(event->message, "plain text, not an event");
      EXPECT_EQ(step, 150);
      saw_text = true;
      continue;
    }
    ASSERT_EQ(event->type, events::EventType::kMetric);
    EXPECT_EQ(event->step, ++step);
  }
  EXPECT_TRUE(saw_text);
  EXPECT_EQ(step, 300);

  std::map<std::string, std::string> artifacts = service_.artifacts();
  ASSERT_EQ(artifacts.count("model.bin"), 1u);
  EXPECT_EQ(artifacts["model.bin"].size(), 3000000u);
  EXPECT_EQ(service_.artifact_sha256("model.bin"), Sha256Hex(artifacts["model.bin"]));

  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].job(), "jobs/j1");
  EXPECT_EQ(completions[0].attempt(), 1);
  EXPECT_EQ(completions[0].outcome(), compress::v1::ATTEMPT_SUCCEEDED);
  EXPECT_THAT(completions[0].report_json(), HasSubstr("\"top1\":0.5"));
  // A CPU attempt sees no GPU.
  EXPECT_THAT(completions[0].stderr_tail(), HasSubstr("device=cpu visible=[] spec={\"dataset\""));
  // The job is over: its work dir is gone.
  EXPECT_FALSE(fs::exists(options_.work_root + "/j1"));
}

// Every call about the attempt names it as the lease did: its job, attempt number and lease_id
// (a lease handed back and given again keeps the number; the server tells the two apart by the
// id), and the worker.
TEST_F(AttemptRunnerTest, EveryCallOfTheAttemptCarriesTheLeaseId) {
  lease_.set_lease_id("0123456789abcdef0123456789abcdef");
  WriteExecutor(R"sh(
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
sleep 2  # past the first heartbeat (the lease lasts 3 s: a heartbeat a second)
echo weights > "$WORKDIR/model.bin"
sum=$(sha256sum "$WORKDIR/model.bin" | cut -d' ' -f1)
emit "{\"type\":\"artifact\",\"time\":1,\"name\":\"model.bin\",\"path\":\"$WORKDIR/model.bin\",\"sha256\":\"$sum\",\"size_bytes\":8}"
echo '{}' > "$WORKDIR/report.json"
emit '{"type":"report","time":1,"report":{}}'
exit 0
)sh");
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_SUCCEEDED) << result.error_message;
  std::map<std::string, int> calls;
  for (const FakeWorkerService::AttemptCall& call : service_.attempt_calls()) {
    SCOPED_TRACE(call.method);
    ++calls[call.method];
    EXPECT_EQ(call.lease_id, "0123456789abcdef0123456789abcdef");
    EXPECT_EQ(call.worker_id, "w1");
    EXPECT_EQ(call.job, "jobs/j1");
    EXPECT_EQ(call.attempt, 1);
  }
  for (const char* method : {"Heartbeat", "ReportEvents", "UploadArtifact", "CompleteAttempt"}) {
    EXPECT_GE(calls[method], 1) << method << " was never called";
  }
}

// The executor of a GPU lease sees that GPU alone, as its cuda:0; the rest of the agent's
// environment reaches it unchanged.
TEST_F(AttemptRunnerTest, ExecutorOfAGpuLeaseIsPinnedToItsGpu) {
  device_.set_name("cuda:2");
  setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3", 1);
  setenv("ATTEMPT_RUNNER_TEST_INHERITED", "kept", 1);
  WriteExecutor(R"sh(
echo "device=$DEVICE visible=[$CUDA_VISIBLE_DEVICES] order=$CUDA_DEVICE_ORDER inherited=$ATTEMPT_RUNNER_TEST_INHERITED" >&2
echo '{}' > "$WORKDIR/report.json"
emit '{"type":"report","time":1,"report":{}}'
exit 0
)sh");
  RunAttempt();
  unsetenv("CUDA_VISIBLE_DEVICES");
  unsetenv("ATTEMPT_RUNNER_TEST_INHERITED");
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].outcome(), compress::v1::ATTEMPT_SUCCEEDED);
  EXPECT_THAT(completions[0].stderr_tail(),
              HasSubstr("device=cuda:0 visible=[2] order=PCI_BUS_ID inherited=kept"));
}

TEST_F(AttemptRunnerTest, CrashIsRetryableFailureWithExitStatusAndStderrTail) {
  WriteExecutor(R"sh(
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
for i in $(seq 1 200); do echo "filler line $i of stderr output to push past the tail" >&2; done
echo "the last words" >&2
kill -9 $$
)sh");
  AttemptResult result = RunAttempt();
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  const compress::v1::CompleteAttemptRequest& c = completions[0];
  EXPECT_EQ(c.outcome(), compress::v1::ATTEMPT_FAILED);
  EXPECT_TRUE(c.retryable());
  EXPECT_EQ(c.exit_status(), 128 + 9);
  EXPECT_EQ(c.error_message(), "executor killed by signal 9");
  EXPECT_LE(c.stderr_tail().size(), 4096u);
  EXPECT_GT(c.stderr_tail().size(), 3000u);
  EXPECT_TRUE(absl::EndsWith(c.stderr_tail(), "the last words\n"));
  EXPECT_EQ(service_.events().size(), 1u);
  // A retryable failure keeps the work dir for the next attempt to resume from.
  EXPECT_TRUE(fs::exists(options_.work_root + "/j1/work"));
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
}

TEST_F(AttemptRunnerTest, ErrorLineDecidesWhetherToRetry) {
  WriteExecutor(R"sh(
emit '{"type":"error","time":1,"code":"INVALID_ARGUMENT","message":"spec.dataset.path: no such dir"}'
exit 1
)sh");
  RunAttempt();
  WriteExecutor(R"sh(
emit '{"type":"error","time":1,"code":"RESOURCE_EXHAUSTED","message":"out of memory"}'
exit 1
)sh");
  lease_.set_attempt(2);
  RunAttempt();
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 2u);
  EXPECT_EQ(completions[0].error_code(), "INVALID_ARGUMENT");
  EXPECT_EQ(completions[0].error_message(), "spec.dataset.path: no such dir");
  EXPECT_FALSE(completions[0].retryable());
  EXPECT_EQ(completions[0].exit_status(), 1);
  EXPECT_EQ(completions[1].error_code(), "RESOURCE_EXHAUSTED");
  EXPECT_TRUE(completions[1].retryable());
  EXPECT_EQ(completions[1].attempt(), 2);
}

// Only the last stdout line decides a failed run (the executor contract): an error line that
// other lines followed, then a crash or a non-zero exit, is a death without an error line, and
// retryable, whatever the earlier line's code.
TEST_F(AttemptRunnerTest, OnlyAnErrorLineThatIsTheLastLineDecidesTheFailure) {
  WriteExecutor(R"sh(
emit '{"type":"error","time":1,"code":"INVALID_ARGUMENT","message":"not the end"}'
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
if [ "$HOW" = signal ]; then kill -9 $$; fi
exit 3
)sh");
  setenv("HOW", "signal", 1);
  RunAttempt();
  setenv("HOW", "exit", 1);
  lease_.set_attempt(2);
  RunAttempt();
  unsetenv("HOW");
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 2u);
  EXPECT_EQ(completions[0].outcome(), compress::v1::ATTEMPT_FAILED);
  EXPECT_EQ(completions[0].error_code(), "INTERNAL");
  EXPECT_TRUE(completions[0].retryable());
  EXPECT_EQ(completions[0].exit_status(), 128 + 9);
  EXPECT_THAT(completions[0].error_message(), HasSubstr("executor killed by signal 9"));
  EXPECT_THAT(completions[0].error_message(), HasSubstr("INVALID_ARGUMENT: not the end"));
  EXPECT_EQ(completions[1].error_code(), "UNKNOWN");
  EXPECT_TRUE(completions[1].retryable());
  EXPECT_EQ(completions[1].exit_status(), 3);
  EXPECT_THAT(completions[1].error_message(),
              HasSubstr("executor exited with status 3 without an error line"));
  // The work dir stays for the next attempt.
  EXPECT_TRUE(fs::exists(options_.work_root + "/j1/work"));
}

TEST_F(AttemptRunnerTest, CancelSendsSigtermAndReportsCancelled) {
  WriteExecutor(R"sh(
trap 'echo TERM > "$WORKDIR/got-term"; emit "{\"type\":\"error\",\"time\":1,\"code\":\"CANCELLED\",\"message\":\"stopped\"}"; exit 1' TERM
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
while true; do sleep 0.1; done
)sh");
  options_.remove_finished_work_dirs = false;
  service_.SetCancelRequested(true);
  absl::Time start = absl::Now();
  AttemptResult result = RunAttempt();
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_CANCELLED);
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].outcome(), compress::v1::ATTEMPT_CANCELLED);
  EXPECT_TRUE(fs::exists(options_.work_root + "/j1/work/got-term"));
  // The executor's CANCELLED line reached the server before the outcome.
  ASSERT_FALSE(service_.events().empty());
  EXPECT_THAT(service_.events().back(), HasSubstr("CANCELLED"));
}

TEST_F(AttemptRunnerTest, CancelEscalatesToSigkillWhenSigtermIsIgnored) {
  WriteExecutor(R"sh(
trap '' TERM
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
while true; do sleep 0.1; done
)sh");
  options_.kill_grace = absl::Seconds(1);
  service_.SetCancelRequested(true);
  absl::Time start = absl::Now();
  AttemptResult result = RunAttempt();
  absl::Duration took = absl::Now() - start;
  // The first ReportEvents answer carries the cancellation; SIGKILL follows the 1 s grace.
  EXPECT_GE(took, absl::Seconds(1));
  EXPECT_LT(took, absl::Seconds(6));
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_CANCELLED);
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].exit_status(), 128 + 9);
}

TEST_F(AttemptRunnerTest, LostLeaseKillsTheExecutorAndDropsTheAttempt) {
  WriteExecutor(R"sh(
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
while true; do sleep 0.1; done
)sh");
  service_.SetHeartbeatError(grpc::StatusCode::ABORTED);
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_OUTCOME_UNSPECIFIED);
  EXPECT_FALSE(result.completed);
  EXPECT_TRUE(service_.completions().empty());
}

// The attempt is dropped (lost lease) while a ReportEvents call is in flight whose answer asks
// for cancellation: the runner's destruction waits for that call (the abandoned relay drops its
// answer rather than call back into the runner).
TEST_F(AttemptRunnerTest, DestructionWaitsForTheRelaysCallInFlight) {
  WriteExecutor(R"sh(
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
while true; do sleep 0.1; done
)sh");
  options_.kill_grace = absl::Seconds(1);
  service_.SetReportEventsDelay(absl::Seconds(3));
  service_.SetCancelRequested(true);
  service_.SetHeartbeatError(grpc::StatusCode::ABORTED);
  absl::Time start = absl::Now();
  absl::Duration ran;
  {
    AttemptRunner runner(stub_.get(), "w1", device_, lease_, options_);
    AttemptResult result = runner.Run();
    ran = absl::Now() - start;
    EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_OUTCOME_UNSPECIFIED);
    EXPECT_FALSE(result.completed);
  }
  // Run() ended on the lost lease (the first heartbeat, after 1 s) while the relay's call was
  // still waiting for its answer, which the destructor waited for.
  EXPECT_LT(ran, absl::Seconds(3));
  EXPECT_GE(absl::Now() - start, absl::Seconds(3));
  EXPECT_TRUE(service_.completions().empty());
  EXPECT_EQ(service_.events().size(), 1u);
}

TEST_F(AttemptRunnerTest, ArtifactNotMatchingItsAnnouncementIsDataLoss) {
  WriteExecutor(R"sh(
echo hello > "$WORKDIR/model.bin"
emit "{\"type\":\"artifact\",\"time\":1,\"name\":\"model.bin\",\"path\":\"$WORKDIR/model.bin\",\"sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"size_bytes\":6}"
emit '{"type":"report","time":1,"report":{}}'
exit 0
)sh");
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].error_code(), "DATA_LOSS");
  EXPECT_FALSE(completions[0].retryable());
  EXPECT_TRUE(service_.artifacts().empty());
}

// Writes a $SIZE-byte artifact model.bin and a report, and exits 0.
constexpr char kOneArtifactBody[] = R"sh(
head -c "$SIZE" /dev/urandom > "$WORKDIR/model.bin"
sum=$(sha256sum "$WORKDIR/model.bin" | cut -d' ' -f1)
emit "{\"type\":\"artifact\",\"time\":1,\"name\":\"model.bin\",\"path\":\"$WORKDIR/model.bin\",\"sha256\":\"$sum\",\"size_bytes\":$SIZE}"
echo '{}' > "$WORKDIR/report.json"
emit '{"type":"report","time":1,"report":{}}'
exit 0
)sh";

// A cancellation that arrives while an upload is retried against a server that refuses it ends
// the retries at once: the attempt is reported CANCELLED, not FAILED after the retry time.
TEST_F(AttemptRunnerTest, CancelDuringArtifactUploadRetriesEndsTheAttempt) {
  WriteExecutor(absl::StrCat("SIZE=1000\n", kOneArtifactBody));
  options_.upload.retry_for = absl::Seconds(30);
  options_.upload.initial_backoff = absl::Milliseconds(50);
  options_.upload.max_backoff = absl::Milliseconds(200);
  service_.SetUploadError(grpc::StatusCode::UNAVAILABLE);
  service_.CancelWhenUploadStarts();
  absl::Time start = absl::Now();
  bool wedged = false;
  AttemptResult result = RunAttemptWithin(absl::Seconds(20), &wedged);
  EXPECT_FALSE(wedged);
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_CANCELLED) << result.error_message;
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].outcome(), compress::v1::ATTEMPT_CANCELLED);
  EXPECT_TRUE(service_.artifacts().empty());
}

// A cancellation that arrives while an artifact streams to the server cancels the stream
// instead of sending the rest of the file.
TEST_F(AttemptRunnerTest, CancelDuringAnArtifactStreamStopsIt) {
  WriteExecutor(absl::StrCat("SIZE=", 4 << 20, "\n", kOneArtifactBody));
  options_.upload.chunk_bytes = 64 << 10;
  service_.SetUploadChunkDelay(absl::Milliseconds(100));  // 64 chunks: 6.4 s
  service_.CancelWhenUploadStarts();
  absl::Time start = absl::Now();
  bool wedged = false;
  AttemptResult result = RunAttemptWithin(absl::Seconds(20), &wedged);
  EXPECT_FALSE(wedged);
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_CANCELLED) << result.error_message;
  EXPECT_EQ(service_.upload_calls(), 1);
  EXPECT_TRUE(service_.artifacts().empty());
}

// compressd's idle watch cancels an upload that stood still for its timeout (a slow disk, a
// paused VM), and the agent sees plain CANCELLED, which it did not ask for: it uploads the
// artifact again, although the stall outlasted the retry window counted from the upload's start,
// and the attempt succeeds.
TEST_F(AttemptRunnerTest, AnUploadTheServerCancelledIsUploadedAgain) {
  WriteExecutor(absl::StrCat("SIZE=", 256 << 10, "\n", kOneArtifactBody));
  options_.upload.chunk_bytes = 64 << 10;
  options_.upload.retry_for = absl::Seconds(1);
  options_.upload.initial_backoff = absl::Milliseconds(50);
  service_.CancelUploads(1, absl::Milliseconds(1500));
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_SUCCEEDED)
      << result.error_code << ": " << result.error_message;
  EXPECT_EQ(service_.upload_calls(), 2);
  std::map<std::string, std::string> artifacts = service_.artifacts();
  ASSERT_EQ(artifacts.count("model.bin"), 1u);
  EXPECT_EQ(artifacts["model.bin"].size(), size_t{256} << 10);
  EXPECT_EQ(Sha256Hex(artifacts["model.bin"]), service_.artifact_sha256("model.bin"));
}

// A server that cancels every try is given up on after kMaxServerCancels more: the attempt fails,
// retryable, UNAVAILABLE (CANCELLED would be the agent's own stop).
TEST_F(AttemptRunnerTest, AnUploadTheServerKeepsCancellingIsGivenUpOn) {
  WriteExecutor(absl::StrCat("SIZE=", 256 << 10, "\n", kOneArtifactBody));
  options_.upload.chunk_bytes = 64 << 10;
  options_.upload.initial_backoff = absl::Milliseconds(20);
  options_.upload.max_backoff = absl::Milliseconds(50);
  service_.CancelUploads(100);
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_TRUE(result.retryable);
  EXPECT_EQ(result.error_code, "UNAVAILABLE");
  EXPECT_THAT(result.error_message, HasSubstr("cancelled by the server"));
  EXPECT_EQ(service_.upload_calls(), kMaxServerCancels + 1);
  EXPECT_TRUE(service_.artifacts().empty());
}

// The job's cancellation while the server cancels the upload's tries stops the upload at once:
// the agent's own cancel is never retried.
TEST_F(AttemptRunnerTest, CancelWhileTheServerCancelsUploadsEndsTheAttempt) {
  WriteExecutor(absl::StrCat("SIZE=", 256 << 10, "\n", kOneArtifactBody));
  options_.upload.chunk_bytes = 64 << 10;
  options_.upload.retry_for = absl::Seconds(30);
  options_.upload.initial_backoff = absl::Milliseconds(50);
  options_.upload.max_backoff = absl::Milliseconds(200);
  service_.CancelUploads(100, absl::Milliseconds(700));
  service_.CancelWhenUploadStarts();
  absl::Time start = absl::Now();
  bool wedged = false;
  AttemptResult result = RunAttemptWithin(absl::Seconds(20), &wedged);
  EXPECT_FALSE(wedged);
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_CANCELLED) << result.error_message;
  EXPECT_LT(service_.upload_calls(), kMaxServerCancels + 1);
  EXPECT_TRUE(service_.artifacts().empty());
}

// An artifact whose file shrinks after it was verified, while it is uploaded, fails the attempt
// with DATA_LOSS naming the file and its size then and now: the agent cancels that upload itself,
// and the CANCELLED this brings back is neither the answer nor taken for the server's cancel.
TEST_F(AttemptRunnerTest, AnArtifactThatShrinksWhileItIsUploadedIsDataLoss) {
  const int64_t size = int64_t{32} << 20;
  WriteExecutor(absl::StrCat("SIZE=", size, "\n", kOneArtifactBody));
  options_.upload.chunk_bytes = 64 << 10;
  options_.upload.initial_backoff = absl::Milliseconds(20);
  const std::string artifact = root_ + "/work/j1/work/model.bin";
  service_.OnUploadHeader([&artifact] { ASSERT_EQ(truncate(artifact.c_str(), 1 << 20), 0); });
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_FALSE(result.retryable);
  EXPECT_EQ(result.error_code, "DATA_LOSS") << result.error_message;
  EXPECT_THAT(result.error_message,
              HasSubstr(absl::StrCat(artifact, " changed while it was uploaded: ", size,
                                     " bytes when verified, 1048576 bytes now")));
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].error_code(), "DATA_LOSS");
  EXPECT_FALSE(completions[0].retryable());
  EXPECT_EQ(service_.upload_calls(), 1);
  EXPECT_TRUE(service_.artifacts().empty());
}

// The same for a file that grows: the announced bytes are all there, but the file is no longer
// the one verified.
TEST_F(AttemptRunnerTest, AnArtifactThatGrowsWhileItIsUploadedIsDataLoss) {
  const int64_t size = int64_t{32} << 20;
  WriteExecutor(absl::StrCat("SIZE=", size, "\n", kOneArtifactBody));
  options_.upload.chunk_bytes = 64 << 10;
  options_.upload.initial_backoff = absl::Milliseconds(20);
  const std::string artifact = root_ + "/work/j1/work/model.bin";
  service_.OnUploadHeader([&artifact] {
    std::ofstream out(artifact, std::ios::binary | std::ios::app);
    out << "more";
  });
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_FALSE(result.retryable);
  EXPECT_EQ(result.error_code, "DATA_LOSS") << result.error_message;
  EXPECT_THAT(result.error_message,
              HasSubstr(absl::StrCat(artifact, " changed while it was uploaded: ", size,
                                     " bytes when verified, ", size + 4, " bytes now")));
  EXPECT_EQ(service_.upload_calls(), 1);
  EXPECT_TRUE(service_.artifacts().empty());
}

TEST_F(AttemptRunnerTest, WorkDirSurvivesAcrossAttemptsSoTheExecutorCanResume) {
  WriteExecutor(R"sh(
if [ -f "$WORKDIR/checkpoint" ]; then
  emit '{"type":"log","time":1,"level":"info","message":"resumed"}'
  emit '{"type":"report","time":1,"report":{"resumed":true}}'
  exit 0
fi
touch "$WORKDIR/checkpoint"
kill -9 $$
)sh");
  AttemptResult first = RunAttempt();
  EXPECT_EQ(first.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_TRUE(first.retryable);
  lease_.set_attempt(2);
  AttemptResult second = RunAttempt();
  EXPECT_EQ(second.outcome, compress::v1::ATTEMPT_SUCCEEDED);
  ASSERT_EQ(service_.events().size(), 2u);
  EXPECT_THAT(service_.events()[0], HasSubstr("resumed"));
}

// The retention sweep counts a kept work dir's age from the end of the last attempt that used
// it, however long ago its files last changed.
TEST_F(AttemptRunnerTest, AKeptWorkDirIsMarkedUsedWhenTheAttemptEnds) {
  WriteExecutor(R"sh(
touch "$WORKDIR/checkpoint"
find "$(dirname "$WORKDIR")" -exec touch -h -d '2000-01-01' {} +
kill -9 $$
)sh");
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_TRUE(result.retryable);
  WorkDirSweepOptions sweep;
  sweep.work_root = options_.work_root;
  sweep.retention = absl::Hours(72);
  EXPECT_EQ(SweepWorkDirs(sweep).removed, 0);
  EXPECT_TRUE(fs::exists(options_.work_root + "/j1/work/checkpoint"));
  // Once that, too, is old, the sweep removes it.
  const timespec old = absl::ToTimespec(absl::Now() - absl::Hours(73));
  const timespec times[2] = {old, old};
  ASSERT_EQ(utimensat(AT_FDCWD, (options_.work_root + "/j1").c_str(), times, 0), 0);
  EXPECT_EQ(SweepWorkDirs(sweep).removed, 1);
  EXPECT_FALSE(fs::exists(options_.work_root + "/j1"));
}

TEST_F(AttemptRunnerTest, ExitZeroWithoutReportIsARetryableFailure) {
  WriteExecutor("exit 0\n");
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_TRUE(result.retryable);
  EXPECT_THAT(result.error_message, HasSubstr("without a report"));
}

// A report.json that is not a JSON object is the executor's failure, not a success whose report
// no client could read.
TEST_F(AttemptRunnerTest, ExitZeroWithAReportThatIsNotAnObjectIsARetryableFailure) {
  WriteExecutor(R"sh(
printf '{"top1": 0.5' > "$WORKDIR/report.json"
exit 0
)sh");
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_TRUE(result.retryable);
  EXPECT_THAT(result.error_message, HasSubstr("not a JSON object"));
}

// A report over max_report_bytes goes to compressd as a note with its size, naming the artifact
// report.json when the executor announced it; the attempt succeeds.
TEST_F(AttemptRunnerTest, AReportOverTheLimitIsSentAsANote) {
  options_.max_report_bytes = 1000;
  WriteExecutor(R"sh(
printf '{"pad":"%02000d"}' 0 > "$WORKDIR/report.json"
if [ "$ANNOUNCE" = 1 ]; then
  sum=$(sha256sum "$WORKDIR/report.json" | cut -d' ' -f1)
  emit "{\"type\":\"artifact\",\"time\":1,\"name\":\"report.json\",\"path\":\"$WORKDIR/report.json\",\"sha256\":\"$sum\",\"size_bytes\":2010}"
fi
exit 0
)sh");
  for (const char* announce : {"0", "1"}) {
    setenv("ANNOUNCE", announce, 1);
    lease_.set_job(absl::StrCat("jobs/note", announce));
    AttemptResult result = RunAttempt();
    EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_SUCCEEDED) << result.error_message;
  }
  unsetenv("ANNOUNCE");
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 2u);
  EXPECT_EQ(completions[0].report_json(),
            R"({"report_omitted":{"bytes":2010,"limit_bytes":1000,)"
            R"("reason":"larger than a job's record keeps"}})");
  EXPECT_EQ(completions[1].report_json(),
            R"({"report_omitted":{"artifact":"report.json","bytes":2010,"limit_bytes":1000,)"
            R"("reason":"larger than a job's record keeps"}})");
}

// An executor that cannot be started is the worker's fault: the lease is handed back, so that the
// attempt is not counted against the job.
TEST_F(AttemptRunnerTest, MissingExecutorHandsTheLeaseBack) {
  options_.executor_path = root_ + "/no-such-executor";
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_TRUE(result.retryable);
  EXPECT_FALSE(result.executor_started);
  EXPECT_EQ(result.executor_start_error.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(result.error_code, "UNAVAILABLE");
  EXPECT_EQ(result.error_message,
            absl::StrCat("this worker cannot start its executor (NOT_FOUND: cannot start ", root_,
                         "/no-such-executor: No such file or directory)"));
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_TRUE(completions[0].stopping());
  EXPECT_TRUE(completions[0].retryable());
  // The work dir stays for the job's next attempt here.
  EXPECT_TRUE(fs::exists(root_ + "/work/j1/spec.json"));

  // A file that is there but no program the kernel can load is handed back too.
  options_.executor_path = root_ + "/not-a-program";
  std::ofstream(options_.executor_path) << "neither ELF nor #!\n";
  chmod(options_.executor_path.c_str(), 0755);
  AttemptResult garbage = RunAttempt();
  EXPECT_FALSE(garbage.executor_start_error.ok());
  EXPECT_EQ(garbage.error_code, "UNAVAILABLE");
  EXPECT_THAT(garbage.error_message, HasSubstr("not-a-program: Exec format error"));
  ASSERT_EQ(service_.completions().size(), 2u);
  EXPECT_TRUE(service_.completions()[1].stopping());

  WriteExecutor(R"sh(
emit '{"type":"report","time":1,"report":{"ok":true}}'
)sh");
  AttemptResult ran = RunAttempt();
  EXPECT_EQ(ran.outcome, compress::v1::ATTEMPT_SUCCEEDED);
  EXPECT_TRUE(ran.executor_started);
  EXPECT_TRUE(ran.executor_start_error.ok());
}

TEST_F(AttemptRunnerTest, ShutdownStopsTheExecutorAndReportsARetryableFailure) {
  WriteExecutor(R"sh(
trap 'emit "{\"type\":\"error\",\"time\":1,\"code\":\"CANCELLED\",\"message\":\"stopped\"}"; exit 1' TERM
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
while true; do sleep 0.1; done
)sh");
  AttemptRunner runner(stub_.get(), "w1", device_, lease_, options_);
  std::thread stopper([&runner] {
    absl::SleepFor(absl::Milliseconds(500));
    runner.Shutdown();
  });
  AttemptResult result = runner.Run();
  stopper.join();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_TRUE(result.retryable);
  EXPECT_EQ(result.error_code, "UNAVAILABLE");
}

// One line far over the server's message limit (4 MiB here, gRPC's default, as compressd's) must
// not wedge the relay: it is cut to the relay's bound, keeping its type where it can, and stays a
// well-formed event.
TEST_F(AttemptRunnerTest, OversizedLinesAreCutAndTheAttemptCompletes) {
  WriteExecutor(R"sh(
big=$(head -c 5000000 /dev/zero | tr '\0' 'a')
emit "{\"type\":\"log\",\"time\":1,\"level\":\"warning\",\"message\":\"$big\"}"
echo "$big"
emit "{\"type\":\"metric\",\"time\":1,\"phase\":\"teacher\",\"step\":1,\"values\":{\"$big\":1}}"
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
echo '{}' > "$WORKDIR/report.json"
emit '{"type":"report","time":1,"report":{}}'
exit 0
)sh");
  bool wedged = false;
  AttemptResult result = RunAttemptWithin(absl::Seconds(30), &wedged);
  EXPECT_FALSE(wedged);
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_SUCCEEDED);
  std::vector<std::string> events = service_.events();
  ASSERT_EQ(events.size(), 5u);
  for (const std::string& line : events) {
    EXPECT_LE(line.size(), 256u << 10) << line.substr(0, 200);
  }
  absl::StatusOr<events::Event> log = events::Parse(events[0]);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->type, events::EventType::kLog);
  EXPECT_EQ(log->level, "warning");
  EXPECT_TRUE(absl::StartsWith(log->message, "aaaa"));
  EXPECT_THAT(log->message, HasSubstr("cut"));
  absl::StatusOr<events::Event> text = events::Parse(events[1]);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->type, events::EventType::kLog);
  EXPECT_THAT(text->message, HasSubstr("cut"));
  absl::StatusOr<events::Event> metric = events::Parse(events[2]);
  ASSERT_TRUE(metric.ok()) << metric.status();
  EXPECT_EQ(metric->type, events::EventType::kLog);
  EXPECT_THAT(metric->message, HasSubstr("metric"));
  EXPECT_THAT(events[3], HasSubstr("phase_started"));
}

// An error line too long for the server keeps its type and code on the relay, and
// CompleteAttempt's error_message is capped so that it always fits a message.
TEST_F(AttemptRunnerTest, OversizedErrorLineKeepsItsCodeAndTheReportedMessageIsCapped) {
  WriteExecutor(R"sh(
big=$(head -c 5000000 /dev/zero | tr '\0' 'e')
emit "{\"type\":\"error\",\"time\":1,\"code\":\"INVALID_ARGUMENT\",\"message\":\"$big\"}"
exit 1
)sh");
  bool wedged = false;
  AttemptResult result = RunAttemptWithin(absl::Seconds(30), &wedged);
  EXPECT_FALSE(wedged);
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].error_code(), "INVALID_ARGUMENT");
  EXPECT_FALSE(completions[0].retryable());
  EXPECT_LE(completions[0].error_message().size(), 64u << 10);
  EXPECT_TRUE(absl::StartsWith(completions[0].error_message(), "eeee"));
  std::vector<std::string> events = service_.events();
  ASSERT_EQ(events.size(), 1u);
  absl::StatusOr<events::Event> error = events::Parse(events[0]);
  ASSERT_TRUE(error.ok()) << error.status();
  EXPECT_EQ(error->type, events::EventType::kError);
  EXPECT_EQ(error->code, "INVALID_ARGUMENT");
}

// A server with a smaller message limit than the relay's batches and line bound answers
// RESOURCE_EXHAUSTED ("message larger than max"): the relay splits the batch, and a single line
// the server still refuses is replaced by a short log line under the same number.
TEST_F(AttemptRunnerTest, BatchesTooLargeForTheServerAreSplitAndRefusedLinesReplaced) {
  RestartServer(64 << 10);
  WriteExecutor(R"sh(
line=$(head -c 30000 /dev/zero | tr '\0' 'b')
for i in $(seq 1 20); do
  emit "{\"type\":\"log\",\"time\":1,\"level\":\"info\",\"message\":\"$i $line\"}"
done
huge=$(head -c 100000 /dev/zero | tr '\0' 'c')
emit "{\"type\":\"log\",\"time\":1,\"level\":\"info\",\"message\":\"$huge\"}"
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
echo '{}' > "$WORKDIR/report.json"
emit '{"type":"report","time":1,"report":{}}'
exit 0
)sh");
  bool wedged = false;
  AttemptResult result = RunAttemptWithin(absl::Seconds(30), &wedged);
  EXPECT_FALSE(wedged);
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_SUCCEEDED);
  std::vector<std::string> events = service_.events();
  ASSERT_EQ(events.size(), 23u);
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<events::Event> event = events::Parse(events[i]);
    ASSERT_TRUE(event.ok()) << event.status();
    EXPECT_TRUE(absl::StartsWith(event->message, absl::StrCat(i + 1, " bbb")));
  }
  absl::StatusOr<events::Event> replaced = events::Parse(events[20]);
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(replaced->type, events::EventType::kLog);
  EXPECT_LT(events[20].size(), 1024u);
  EXPECT_THAT(events[21], HasSubstr("phase_started"));
  // The accepted batches number the lines 1..23 without a gap.
  int64_t next = 1;
  for (const FakeWorkerService::ReportCall& call : service_.report_calls()) {
    if (!call.ok) continue;
    EXPECT_EQ(call.first_line, next);
    next += call.lines;
  }
  EXPECT_EQ(next, 24);
}

// Lines are numbered from 1 within the attempt; a retried batch carries the numbers it had, and
// the next batch continues the count. A RESOURCE_EXHAUSTED that is not about the message's size
// (the server's disk is full) is retried like UNAVAILABLE.
TEST_F(AttemptRunnerTest, LinesAreNumberedAndARetriedBatchRepeatsItsNumbers) {
  WriteExecutor(kSuccessBody);
  options_.relay.max_batch_lines = 50;
  service_.FailReportEvents(3, grpc::StatusCode::RESOURCE_EXHAUSTED);
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_SUCCEEDED);
  EXPECT_EQ(service_.events().size(), 304u);
  std::vector<FakeWorkerService::ReportCall> calls = service_.report_calls();
  ASSERT_GE(calls.size(), 3u + 7u);
  int64_t next = 1;
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].first_line, next) << "call " << i;
    EXPECT_LE(calls[i].lines, 50);
    if (calls[i].ok) next += calls[i].lines;
  }
  EXPECT_FALSE(calls[0].ok);
  EXPECT_FALSE(calls[2].ok);
  EXPECT_EQ(calls[3].first_line, 1);
  EXPECT_EQ(next, 305);
}

// Writes 2000 log lines of about 1 KiB (2 MB in all), then touches $WORKDIR/wrote-all and does
// what $THEN says: `exit` (with a report) or `wait` (forever).
constexpr char kManyLinesBody[] = R"sh(
pad=$(head -c 1000 /dev/zero | tr '\0' 'x')
for i in $(seq 1 2000); do
  emit "{\"type\":\"log\",\"time\":1,\"level\":\"info\",\"message\":\"$i $pad\"}"
done
touch "$WORKDIR/wrote-all"
if [ "$THEN" = wait ]; then while true; do sleep 0.1; done; fi
echo '{}' > "$WORKDIR/report.json"
emit '{"type":"report","time":1,"report":{}}'
exit 0
)sh";

// While the server takes no lines, the relay holds at most max_pending_bytes of them; then the
// agent stops reading the executor's stdout, so that the executor's writes wait (its output is
// held back, not dropped). Once the server is back, every line arrives, in order.
TEST_F(AttemptRunnerTest, AFullRelayQueueHoldsTheExecutorBackUntilTheServerTakesLines) {
  WriteExecutor(absl::StrCat("THEN=exit\n", kManyLinesBody));
  options_.relay.max_pending_bytes = 32 << 10;
  options_.remove_finished_work_dirs = false;
  service_.FailReportEvents(1 << 30);
  AttemptResult result;
  std::thread run([&] { result = RunAttempt(); });
  absl::SleepFor(absl::Milliseconds(1500));
  // 2 MB cannot fit in the relay's 32 KiB, the pipe and the reader's buffer.
  EXPECT_FALSE(fs::exists(options_.work_root + "/j1/work/wrote-all"));
  service_.FailReportEvents(0);
  run.join();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_SUCCEEDED) << result.error_message;
  EXPECT_TRUE(fs::exists(options_.work_root + "/j1/work/wrote-all"));
  std::vector<std::string> events = service_.events();
  ASSERT_EQ(events.size(), 2001u);
  for (int i = 0; i < 2000; ++i) {
    ASSERT_THAT(events[i], HasSubstr(absl::StrCat("\"message\":\"", i + 1, " xxx"))) << i;
  }
}

// A lost lease frees the reader waiting on a full relay queue (the server still takes no
// lines): the queued lines are dropped, the executor is stopped and the attempt ends.
TEST_F(AttemptRunnerTest, LostLeaseReleasesAReaderWaitingOnAFullRelayQueue) {
  WriteExecutor(absl::StrCat("THEN=wait\n", kManyLinesBody));
  options_.relay.max_pending_bytes = 32 << 10;
  service_.FailReportEvents(1 << 30);
  service_.SetHeartbeatError(grpc::StatusCode::ABORTED);
  absl::Time start = absl::Now();
  bool wedged = false;
  AttemptResult result = RunAttemptWithin(absl::Seconds(10), &wedged);
  EXPECT_FALSE(wedged);
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_OUTCOME_UNSPECIFIED);
  EXPECT_FALSE(result.completed);
  EXPECT_TRUE(service_.completions().empty());
}

// A shutdown frees the reader waiting on a full relay queue once the relay gives up
// (shutdown_retry_for), and the attempt is handed back.
TEST_F(AttemptRunnerTest, ShutdownReleasesAReaderWaitingOnAFullRelayQueue) {
  WriteExecutor(absl::StrCat("THEN=wait\n", kManyLinesBody));
  options_.relay.max_pending_bytes = 32 << 10;
  options_.shutdown_retry_for = absl::Seconds(1);
  service_.FailReportEvents(1 << 30);
  AttemptRunner runner(stub_.get(), "w1", device_, lease_, options_);
  std::thread stopper([&runner] {
    absl::SleepFor(absl::Seconds(1));
    runner.Shutdown();
  });
  absl::Time start = absl::Now();
  AttemptResult result = runner.Run();
  stopper.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_TRUE(completions[0].stopping());
  EXPECT_TRUE(completions[0].retryable());
}

// INTERNAL answers to the same batch are retried a bounded number of times
// (server_error_tries); then the attempt fails, retryably, with that code.
TEST_F(AttemptRunnerTest, InternalAnswersToABatchAreRetriedABoundedNumberOfTimes) {
  WriteExecutor(R"sh(
emit '{"type":"phase_started","time":1,"phase":"teacher"}'
while true; do sleep 0.1; done
)sh");
  options_.relay.server_error_tries = 3;
  options_.kill_grace = absl::Seconds(1);
  service_.FailReportEvents(1 << 30, grpc::StatusCode::INTERNAL);
  bool wedged = false;
  AttemptResult result = RunAttemptWithin(absl::Seconds(10), &wedged);
  EXPECT_FALSE(wedged);
  EXPECT_EQ(service_.failed_report_calls(), 3);
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].outcome(), compress::v1::ATTEMPT_FAILED);
  EXPECT_EQ(completions[0].error_code(), "INTERNAL");
  EXPECT_TRUE(completions[0].retryable());
  EXPECT_FALSE(completions[0].stopping());
  EXPECT_THAT(completions[0].error_message(), HasSubstr("jobs/j1 attempt 1"));
  EXPECT_THAT(completions[0].error_message(), HasSubstr("gave up after 3 INTERNAL answers"));
}

// Fetching the teacher blob takes longer than the lease (3 s): heartbeats keep the lease
// meanwhile.
TEST_F(AttemptRunnerTest, FetchingTheTeacherBlobIsCoveredByHeartbeats) {
  std::string sha = UseTeacherBlob(1 << 20, absl::Milliseconds(300));  // 16 chunks: 4.8 s
  WriteExecutor(R"sh(
ls "$WORKDIR/blobs" >&2
echo '{}' > "$WORKDIR/report.json"
emit '{"type":"report","time":1,"report":{}}'
exit 0
)sh");
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_SUCCEEDED) << result.error_message;
  EXPECT_GE(service_.heartbeats(), 3);
  std::vector<compress::v1::CompleteAttemptRequest> completions = service_.completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_THAT(completions[0].stderr_tail(), HasSubstr(sha));
}

// A cancellation that arrives while the blob is fetched ends the fetch and the attempt without
// starting the executor.
TEST_F(AttemptRunnerTest, CancelDuringTheBlobFetchEndsTheAttemptWithoutStartingTheExecutor) {
  UseTeacherBlob(1 << 20, absl::Seconds(1));  // 16 s
  WriteExecutor(R"sh(
touch "$WORKDIR/started"
emit '{"type":"report","time":1,"report":{}}'
exit 0
)sh");
  options_.remove_finished_work_dirs = false;
  service_.SetCancelRequested(true);
  absl::Time start = absl::Now();
  AttemptResult result = RunAttempt();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_CANCELLED);
  EXPECT_FALSE(fs::exists(options_.work_root + "/j1/work/started"));
}

// A blob the server does not have is a final failure, and the job's work dir goes with it.
TEST_F(AttemptRunnerTest, MissingTeacherBlobIsAFinalFailureThatRemovesTheWorkDir) {
  lease_.set_spec_json(
      absl::StrCat(R"({"dataset":{"format":"synthetic"},"teacher":{"blob_sha256":")",
                   std::string(64, 'a'), R"("}})"));
  WriteExecutor("exit 0\n");
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_EQ(result.error_code, "NOT_FOUND");
  EXPECT_FALSE(result.retryable);
  EXPECT_TRUE(result.completed);
  EXPECT_FALSE(fs::exists(options_.work_root + "/j1"));
}

}  // namespace
}  // namespace compress::worker
