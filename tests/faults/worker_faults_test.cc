// Worker agents that die (SIGKILL) or freeze (SIGSTOP) mid-attempt: their lease expires, the
// job is retried up to its maximum attempts and then FAILED with a reason naming the lost
// worker; a frozen agent that thaws (SIGCONT) after its lease went to another attempt is fenced
// off and changes nothing of the attempt that replaced it.
#include <signal.h>
#include <stdlib.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/faults/fault_processes.h"

namespace compress::faults {
namespace {

using ::testing::HasSubstr;

class WorkerFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_ = dir_.File("executors.log");
    setenv("FAULTS_EXECUTOR_LOG", log_.c_str(), 1);
    ServerOptions options;
    options.data_dir = dir_.File("data");
    options.flags = {"--lease_seconds=2"};
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = std::make_unique<Client>(server_->address());
  }

  // Starts an agent whose executors take `step_ms` per step.
  std::unique_ptr<WorkerProcess> StartAgent(const std::string& id, int step_ms) {
    setenv("FAULTS_STEP_MS", std::to_string(step_ms).c_str(), 1);
    absl::StatusOr<std::unique_ptr<WorkerProcess>> agent =
        WorkerProcess::Start(server_->address(), id, dir_.File(id));
    EXPECT_TRUE(agent.ok()) << agent.status();
    return agent.ok() ? *std::move(agent) : nullptr;
  }

  // Waits until the job runs attempt `attempt`.
  bool WaitForAttempt(const std::string& name, int attempt, v1::Job* job) {
    return client_->WaitFor(
        name,
        [attempt](const v1::Job& j) {
          return j.state() == v1::RUNNING && j.attempt_count() == attempt;
        },
        absl::Seconds(15), job);
  }

  // Waits until an executor run whose work dir lies under `work_root` wrote a `kind` line for
  // the job; returns that line's fields (after the job id), or nothing after 15 s.
  std::vector<std::string> WaitForLog(const std::string& kind, const std::string& name,
                                      const std::string& work_root) {
    absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (absl::Now() < deadline) {
      auto lines = ExecutorLog(log_, kind);
      for (const std::vector<std::string>& fields : lines[JobId(name)]) {
        if (fields.size() >= 2 && absl::StartsWith(fields[1], work_root + "/")) return fields;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return {};
  }

  // Waits until the agent's stderr says it dropped `attempt` of the job.
  static bool WaitUntilDropped(const WorkerProcess& agent, const std::string& name, int attempt) {
    absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (absl::Now() < deadline) {
      if (absl::StrContains(agent.StderrTail(),
                            absl::StrCat(name, " attempt ", attempt, ": dropped"))) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }

  TempDir dir_;
  std::string log_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(WorkerFaultsTest, KilledThenStoppedWorkersExhaustTheAttemptsAndTheJobFailsNamingTheCause) {
  v1::Job job;
  // Long enough that no attempt finishes during the test.
  grpc::Status created =
      client_->CreateJob(Client::JobRequest(/*steps=*/200, /*max_attempts=*/2), &job);
  ASSERT_TRUE(created.ok()) << created.error_code() << ": " << created.error_message();
  const std::string name = job.name();

  std::unique_ptr<WorkerProcess> killed = StartAgent("agent-killed", 100);
  ASSERT_NE(killed, nullptr);
  ASSERT_TRUE(WaitForAttempt(name, 1, &job)) << job.DebugString();
  killed->Kill();

  std::unique_ptr<WorkerProcess> stopped = StartAgent("agent-stopped", 100);
  ASSERT_NE(stopped, nullptr);
  ASSERT_TRUE(WaitForAttempt(name, 2, &job)) << job.DebugString();
  ASSERT_FALSE(WaitForLog("start", name, dir_.File("agent-stopped")).empty());
  stopped->Signal(SIGSTOP);

  ASSERT_TRUE(client_->WaitFor(
      name, [](const v1::Job& j) { return IsFinished(j.state()); }, absl::Seconds(15), &job))
      << job.DebugString();
  EXPECT_EQ(job.state(), v1::FAILED);
  EXPECT_EQ(job.attempt_count(), 2);
  EXPECT_EQ(job.error_code(), "UNAVAILABLE");
  EXPECT_THAT(job.error_message(),
              HasSubstr("worker agent-stopped lost: lease expired after 2 attempts"));

  // The thawed agent is refused and drops its attempt; the failed job stays as it was.
  stopped->Signal(SIGCONT);
  EXPECT_TRUE(WaitUntilDropped(*stopped, name, 2)) << stopped->StderrTail();
  v1::Job after;
  ASSERT_TRUE(client_->GetJob(name, &after).ok());
  EXPECT_EQ(after.state(), v1::FAILED);
  EXPECT_EQ(after.error_message(), job.error_message());
  EXPECT_EQ(after.last_event_sequence(), job.last_event_sequence());

  // The history tells the story: the first lease expired and was requeued, the second failed
  // the job.
  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(client_->Watch(name, 0, &events, absl::Seconds(10)).ok());
  std::vector<std::string> reasons;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
    if (events[i].has_state_change()) reasons.push_back(events[i].state_change().reason());
  }
  EXPECT_THAT(reasons, ::testing::Contains(HasSubstr(
                           "worker agent-killed lost: lease expired during attempt 1 of 2")));
  EXPECT_THAT(reasons.back(), HasSubstr("worker agent-stopped lost: lease expired after 2"));
}

TEST_F(WorkerFaultsTest, StoppedWorkerThawedAfterItsLeaseWasTakenCannotOverwriteTheNewAttempt) {
  v1::Job job;
  grpc::Status created =
      client_->CreateJob(Client::JobRequest(/*steps=*/10, /*max_attempts=*/3), &job);
  ASSERT_TRUE(created.ok()) << created.error_code() << ": " << created.error_message();
  const std::string name = job.name();

  // The first agent's executor is quick: it finishes its work while the agent is frozen, so the
  // agent holds a complete result when it thaws.
  std::unique_ptr<WorkerProcess> stale = StartAgent("agent-stale", 100);
  ASSERT_NE(stale, nullptr);
  ASSERT_TRUE(WaitForAttempt(name, 1, &job)) << job.DebugString();
  ASSERT_FALSE(WaitForLog("start", name, dir_.File("agent-stale")).empty());
  stale->Signal(SIGSTOP);
  std::vector<std::string> stale_result = WaitForLog("complete", name, dir_.File("agent-stale"));
  ASSERT_FALSE(stale_result.empty()) << "the frozen agent's executor did not finish";

  // The lease expires and a second agent takes attempt 2, whose executor is slow.
  std::unique_ptr<WorkerProcess> fresh = StartAgent("agent-fresh", 400);
  ASSERT_NE(fresh, nullptr);
  ASSERT_TRUE(WaitForAttempt(name, 2, &job)) << job.DebugString();

  // Thawed while attempt 2 runs, the first agent relays its lines, uploads and completes: all of
  // it refused, so it drops the attempt.
  stale->Signal(SIGCONT);
  ASSERT_TRUE(WaitUntilDropped(*stale, name, 1)) << stale->StderrTail();
  v1::Job during;
  ASSERT_TRUE(client_->GetJob(name, &during).ok());
  EXPECT_EQ(during.state(), v1::RUNNING) << during.DebugString();
  EXPECT_EQ(during.attempt_count(), 2);
  EXPECT_EQ(during.artifacts_size(), 0);

  ASSERT_TRUE(client_->WaitFor(
      name, [](const v1::Job& j) { return IsFinished(j.state()); }, absl::Seconds(20), &job))
      << job.DebugString();
  EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.DebugString();
  EXPECT_EQ(job.attempt_count(), 2);
  std::vector<std::string> fresh_result = WaitForLog("complete", name, dir_.File("agent-fresh"));
  ASSERT_FALSE(fresh_result.empty());
  ASSERT_NE(fresh_result.back(), stale_result.back()) << "the two runs made the same model";
  ASSERT_EQ(job.artifacts_size(), 1);
  EXPECT_EQ(job.artifacts(0).sha256(), fresh_result.back());
  EXPECT_THAT(job.report_json(), HasSubstr(fresh_result.back()));

  // No event of attempt 1 after attempt 2 began; the only artifact event is attempt 2's.
  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(client_->Watch(name, 0, &events, absl::Seconds(10)).ok());
  int64_t attempt2_began = 0;
  int artifact_events = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    const v1::JobEvent& event = events[i];
    EXPECT_EQ(event.sequence(), static_cast<int64_t>(i + 1));
    if (attempt2_began == 0 && event.has_state_change() &&
        absl::StrContains(event.state_change().reason(), "attempt 2 of 3 leased")) {
      attempt2_began = event.sequence();
    }
    if (attempt2_began != 0) {
      EXPECT_NE(event.attempt(), 1)
          << "attempt 1 wrote after attempt 2 began: " << event.DebugString();
    }
    if (event.has_artifact()) {
      ++artifact_events;
      EXPECT_EQ(event.attempt(), 2);
      EXPECT_EQ(event.artifact().sha256(), fresh_result.back());
    }
  }
  EXPECT_NE(attempt2_began, 0);
  EXPECT_EQ(artifact_events, 1);
}

}  // namespace
}  // namespace compress::faults
