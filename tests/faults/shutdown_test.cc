// compressd stopped with SIGTERM while a local worker runs a job and a client watches it:
// health turns NOT_SERVING, new jobs are refused with UNAVAILABLE, the open watch ends with
// UNAVAILABLE (which a client retries), the running attempt is handed back, and after a restart
// the job resumes where its executor stopped and succeeds, its events whole.
#include <signal.h>
#include <stdlib.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/faults/fault_processes.h"

namespace compress::faults {
namespace {

using ::testing::HasSubstr;
using HealthResponse = grpc::health::v1::HealthCheckResponse;

TEST(ShutdownTest, SigtermDrainsAndTheJobCompletesAfterARestart) {
  TempDir dir;
  const std::string log = dir.File("executors.log");
  setenv("FAULTS_EXECUTOR_LOG", log.c_str(), 1);
  setenv("FAULTS_STEP_MS", "100", 1);
  ServerOptions options;
  options.data_dir = dir.File("data");
  options.local_workers = 1;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  options.port = (*server)->port();
  Client client((*server)->address());
  ASSERT_EQ(client.Health(), "SERVING");

  v1::Job job;
  ASSERT_TRUE(client.CreateJob(Client::JobRequest(/*steps=*/60), &job).ok());
  const std::string name = job.name();
  ASSERT_TRUE(client.WaitFor(
      name,
      [](const v1::Job& j) { return j.state() == v1::RUNNING && j.last_event_sequence() >= 6; },
      absl::Seconds(15), &job))
      << job.DebugString();

  // A health watch and a job watch, both open when SIGTERM arrives.
  auto health = grpc::health::v1::Health::NewStub(client.channel());
  grpc::ClientContext health_context;
  health_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  grpc::health::v1::HealthCheckRequest health_request;
  std::unique_ptr<grpc::ClientReader<HealthResponse>> health_watch =
      health->Watch(&health_context, health_request);
  HealthResponse first;
  ASSERT_TRUE(health_watch->Read(&first));
  ASSERT_EQ(first.status(), HealthResponse::SERVING);

  std::vector<v1::JobEvent> watched;
  grpc::Status watch_status;
  absl::Notification watch_open;
  std::thread watcher([&] {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::WatchJobRequest request;
    request.set_name(name);
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader =
        client.stub().WatchJob(&context, request);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      watched.push_back(event);
      if (!watch_open.HasBeenNotified()) watch_open.Notify();
    }
    watch_status = reader->Finish();
    if (!watch_open.HasBeenNotified()) watch_open.Notify();
  });
  ASSERT_TRUE(watch_open.WaitForNotificationWithTimeout(absl::Seconds(10)));

  (*server)->Signal(SIGTERM);

  // Health goes NOT_SERVING, and from then on no job is accepted.
  HealthResponse update;
  bool not_serving = false;
  while (health_watch->Read(&update)) {
    if (update.status() == HealthResponse::NOT_SERVING) {
      not_serving = true;
      break;
    }
  }
  EXPECT_TRUE(not_serving) << "the health watch ended without NOT_SERVING";
  health_context.TryCancel();
  health_watch->Finish().IgnoreError();
  {
    v1::Job refused;
    grpc::Status status = client.CreateJob(Client::JobRequest(3), &refused, absl::Seconds(5));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  }

  // The watch ends with a status worth retrying, not OK (the job has not finished) and not a
  // cancellation.
  watcher.join();
  EXPECT_EQ(watch_status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << watch_status.error_code() << ": " << watch_status.error_message();
  worker::ExitInfo exit = (*server)->Terminate(absl::Seconds(30));
  EXPECT_EQ(exit.exit_code, 0) << exit.ToString() << (*server)->StderrTail();
  EXPECT_THAT((*server)->StderrTail(), HasSubstr("shutting down"));

  // Restarted, the job resumes (the executor starts past step 0) and succeeds; the watch
  // resumed after its last event sees the rest, and together they are the whole history.
  server->reset();
  server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_FALSE(watched.empty());
  std::vector<v1::JobEvent> rest;
  grpc::Status resumed = client.Watch(name, watched.back().sequence(), &rest, absl::Seconds(30));
  ASSERT_TRUE(resumed.ok()) << resumed.error_message();
  ASSERT_TRUE(client.GetJob(name, &job).ok());
  EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.DebugString();
  // The attempt handed back by the stopping worker was not counted: the resumed run is attempt 1
  // again.
  EXPECT_EQ(job.attempt_count(), 1);

  watched.insert(watched.end(), rest.begin(), rest.end());
  std::vector<v1::JobEvent> all;
  ASSERT_TRUE(client.Watch(name, 0, &all, absl::Seconds(10)).ok());
  ASSERT_EQ(watched.size(), all.size());
  bool handed_back = false;
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].sequence(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(watched[i].sequence(), all[i].sequence());
    if (all[i].has_state_change() && all[i].state_change().state() == v1::QUEUED &&
        absl::StrContains(all[i].state_change().reason(), "shutting down")) {
      handed_back = true;
    }
  }
  EXPECT_TRUE(handed_back) << "no requeue by the stopping worker in the history";

  auto starts = ExecutorLog(log, "start");
  ASSERT_EQ(starts[JobId(name)].size(), 2u);
  int64_t resumed_at = 0;
  ASSERT_TRUE(absl::SimpleAtoi(starts[JobId(name)][1].back(), &resumed_at));
  EXPECT_GT(resumed_at, 0) << "the second run started over instead of resuming";
  EXPECT_EQ(ExecutorLog(log, "complete")[JobId(name)].size(), 1u);
}

}  // namespace
}  // namespace compress::faults
