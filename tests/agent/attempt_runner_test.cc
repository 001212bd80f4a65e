// AttemptRunner against an in-process fake WorkerService and fake executors (shell scripts that
// follow, or break, the executor contract).
#include "worker/agent/attempt_runner.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/agent/fake_worker_service.h"
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
    char dir_template[] = "/tmp/attempt_runner_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    root_ = dir_template;
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
    std::error_code ec;
    fs::remove_all(root_, ec);
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

  std::string root_;
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

TEST_F(AttemptRunnerTest, ExitZeroWithoutReportIsARetryableFailure) {
  WriteExecutor("exit 0\n");
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_TRUE(result.retryable);
  EXPECT_THAT(result.error_message, HasSubstr("without a report"));
}

TEST_F(AttemptRunnerTest, MissingExecutorFailsTheAttemptRetryably) {
  options_.executor_path = root_ + "/no-such-executor";
  AttemptResult result = RunAttempt();
  EXPECT_EQ(result.outcome, compress::v1::ATTEMPT_FAILED);
  EXPECT_TRUE(result.retryable);
  EXPECT_EQ(result.error_code, "NOT_FOUND");
  EXPECT_THAT(result.error_message, HasSubstr("no-such-executor"));
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

}  // namespace
}  // namespace compress::worker
