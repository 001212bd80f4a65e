// compressd SIGKILLed at random moments while clients submit and local workers run many small
// jobs, and restarted on the same data dir each time. Afterwards every accepted job has ended
// exactly once, none is lost or doubled, none was run to completion twice, and each job's events
// run 1, 2, 3, ... with no gap and no repeat.
//
// The kill moments come from a seeded generator; the seed is printed (and recorded as the test's
// `seed` property). FAULTS_SEED=N in the environment replays a seed.
#include <signal.h>
#include <stdlib.h>

#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/faults/fault_processes.h"

namespace compress::faults {
namespace {

constexpr int kJobs = 24;
constexpr int kKills = 6;

uint64_t Seed() {
  uint64_t seed = 0;
  if (const char* env = std::getenv("FAULTS_SEED");
      env != nullptr && absl::SimpleAtoi(env, &seed)) {
    return seed;
  }
  return std::random_device()();
}

TEST(ServerCrashTest, RandomKillsLoseNoJobAndRunNoneTwice) {
  const uint64_t seed = Seed();
  std::printf("FAULTS_SEED=%llu\n", static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 random(seed);

  TempDir dir;
  const std::string log = dir.File("executors.log");
  setenv("FAULTS_EXECUTOR_LOG", log.c_str(), 1);
  setenv("FAULTS_STEP_MS", "60", 1);
  ServerOptions options;
  options.data_dir = dir.File("data");
  options.local_workers = 2;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  options.port = (*server)->port();
  Client client((*server)->address());

  // The jobs' sizes and the submitter's pauses are drawn up front, so the seed fixes them.
  std::vector<int> steps(kJobs);
  std::vector<int> pauses_ms(kJobs);
  for (int i = 0; i < kJobs; ++i) {
    steps[i] = std::uniform_int_distribution<int>(3, 8)(random);
    pauses_ms[i] = std::uniform_int_distribution<int>(0, 150)(random);
  }

  // A client that submits while the server dies and returns: each request is repeated with its
  // request_id until it is accepted, as a careful client does.
  absl::Mutex mu;
  std::map<std::string, std::string> accepted;  // request_id -> job name
  std::vector<std::string> submit_errors;
  std::thread submitter([&] {
    for (int i = 0; i < kJobs; ++i) {
      const std::string request_id = absl::StrCat("request-", i);
      v1::CreateJobRequest request = Client::JobRequest(steps[i], /*max_attempts=*/50, request_id);
      absl::Time give_up = absl::Now() + absl::Seconds(40);
      while (true) {
        v1::Job job;
        grpc::Status status = client.CreateJob(request, &job, absl::Seconds(3));
        if (status.ok()) {
          absl::MutexLock lock(&mu);
          accepted[request_id] = job.name();
          break;
        }
        if (absl::Now() > give_up) {
          absl::MutexLock lock(&mu);
          submit_errors.push_back(absl::StrCat(request_id, ": ", status.error_message()));
          break;
        }
        absl::SleepFor(absl::Milliseconds(50));
      }
      absl::SleepFor(absl::Milliseconds(pauses_ms[i]));
    }
  });
  // Joined however the test ends (a failed ASSERT returns early).
  struct Joiner {
    std::thread& thread;
    ~Joiner() {
      if (thread.joinable()) thread.join();
    }
  } joiner{submitter};

  // Killed servers are reaped at the end: their local workers outlive them for a while.
  std::vector<std::unique_ptr<ServerProcess>> killed;
  for (int kill = 0; kill < kKills; ++kill) {
    absl::SleepFor(absl::Milliseconds(std::uniform_int_distribution<int>(300, 1200)(random)));
    (*server)->Kill();
    killed.push_back(*std::move(server));
    server = ServerProcess::Start(options);
    ASSERT_TRUE(server.ok()) << "restart " << kill + 1 << ": " << server.status();
  }
  submitter.join();
  ASSERT_THAT(submit_errors, ::testing::IsEmpty());
  ASSERT_EQ(accepted.size(), static_cast<size_t>(kJobs));

  // Every accepted job ends.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::map<std::string, v1::Job> final_jobs;
  for (const auto& [request_id, name] : accepted) {
    v1::Job job;
    ASSERT_TRUE(client.WaitFor(
        name, [](const v1::Job& j) { return IsFinished(j.state()); }, deadline - absl::Now(), &job))
        << name << " (" << request_id << ") did not finish: " << job.DebugString();
    final_jobs[name] = job;
  }

  // No job lost, none created twice by a repeated request.
  std::vector<v1::Job> listed;
  ASSERT_TRUE(client.ListAllJobs(&listed).ok());
  std::set<std::string> listed_names;
  for (const v1::Job& job : listed) listed_names.insert(job.name());
  std::set<std::string> accepted_names;
  for (const auto& [request_id, name] : accepted) accepted_names.insert(name);
  EXPECT_EQ(listed.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(listed_names, accepted_names);

  const auto completions = ExecutorLog(log, "complete");
  const auto overlaps = ExecutorLog(log, "overlap");
  int retried = 0;
  for (const auto& [name, job] : final_jobs) retried += job.attempt_count() > 1 ? 1 : 0;
  std::printf("%d kills; %d of %d jobs needed more than one attempt\n", kKills, retried, kJobs);
  // The kills must have landed mid-job, or nothing was tested.
  EXPECT_GE(retried, 1);
  for (const auto& [name, job] : final_jobs) {
    SCOPED_TRACE(name);
    // Enough attempts for every kill: each job must succeed.
    EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.DebugString();

    // Events 1..N, each once, and exactly one terminal state change, the last event.
    std::vector<v1::JobEvent> events;
    grpc::Status watched = client.Watch(name, 0, &events, absl::Seconds(10));
    EXPECT_TRUE(watched.ok()) << watched.error_message();
    ASSERT_FALSE(events.empty());
    int terminal = 0;
    for (size_t i = 0; i < events.size(); ++i) {
      EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
      if (events[i].has_state_change() && IsFinished(events[i].state_change().state())) {
        ++terminal;
        EXPECT_EQ(i + 1, events.size()) << "a terminal state change that is not the last event";
      }
    }
    EXPECT_EQ(terminal, 1);
    EXPECT_EQ(events.back().sequence(), job.last_event_sequence());

    // The work ran to completion once, and the stored artifact is that run's.
    auto completed = completions.find(JobId(name));
    ASSERT_NE(completed, completions.end()) << "no executor completed it";
    EXPECT_EQ(completed->second.size(), 1u) << "completed by more than one executor run";
    ASSERT_EQ(job.artifacts_size(), 1);
    EXPECT_EQ(job.artifacts(0).sha256(), completed->second.front().back());
    EXPECT_EQ(overlaps.count(JobId(name)), 0u) << "two executors shared its work dir";
  }
}

}  // namespace
}  // namespace compress::faults
