#include "server/core/local_workers.h"

#include <signal.h>

#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/common/test_dir.h"

namespace compress::server {
namespace {

bool Alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

bool Exists(const std::string& path) { return std::filesystem::exists(path); }

// Waits up to 10 s for `path` to exist.
bool AwaitFile(const std::string& path) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!Exists(path) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  return Exists(path);
}

// One process that, like a compress-worker stopping its executor and handing its attempt back,
// takes 2 s to exit after SIGTERM: it writes `dir`/ready once its handler is in place and
// `dir`/stopped just before it exits 0.
LocalWorkers::Options SlowToStop(const TestDir& dir) {
  LocalWorkers::Options options;
  options.binary = "/bin/sh";
  options.args = {"-c",
                  "trap 'sleep 2; : > \"$0/stopped\"; exit 0' TERM; : > \"$0/ready\"; "
                  "while :; do sleep 0.1; done",
                  dir.path()};
  options.count = 1;
  return options;
}

TEST(LocalWorkersTest, MissingBinaryIsNotFound) {
  LocalWorkers::Options options;
  options.binary = "/nonexistent/compress-worker";
  options.count = 1;
  EXPECT_EQ(LocalWorkers::Start(options).status().code(), absl::StatusCode::kNotFound);
}

TEST(LocalWorkersTest, RestartsProcessesThatDieAndStopsThemAll) {
  LocalWorkers::Options options;
  options.binary = "/bin/sleep";
  options.args = {"600"};
  options.count = 2;
  options.restart_delay = absl::Milliseconds(50);
  options.stop_grace = absl::Seconds(2);
  absl::StatusOr<std::unique_ptr<LocalWorkers>> workers = LocalWorkers::Start(options);
  ASSERT_TRUE(workers.ok()) << workers.status();
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((*workers)->Starts() < 2 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  std::vector<pid_t> pids = (*workers)->Pids();
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_TRUE(Alive(pids[0]) && Alive(pids[1]));

  ::kill(pids[0], SIGKILL);
  while ((*workers)->Starts() < 3 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ((*workers)->Starts(), 3);
  std::vector<pid_t> after = (*workers)->Pids();
  EXPECT_NE(after[0], pids[0]);
  EXPECT_TRUE(Alive(after[0]));
  EXPECT_EQ(after[1], pids[1]);

  (*workers)->Stop();
  EXPECT_FALSE(Alive(after[0]));
  EXPECT_FALSE(Alive(after[1]));
}

TEST(LocalWorkersTest, StopWaitsForAProcessThatStopsWithinTheGrace) {
  TestDir dir("local-workers");
  LocalWorkers::Options options = SlowToStop(dir);
  options.stop_grace = absl::Seconds(20);
  absl::StatusOr<std::unique_ptr<LocalWorkers>> workers = LocalWorkers::Start(options);
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_TRUE(AwaitFile(dir.File("ready")));
  const pid_t pid = (*workers)->Pids()[0];

  (*workers)->Stop();
  EXPECT_TRUE(Exists(dir.File("stopped"))) << "SIGKILLed before it finished stopping";
  EXPECT_FALSE(Alive(pid));
}

TEST(LocalWorkersTest, StopKillsAProcessStillRunningAfterTheGrace) {
  TestDir dir("local-workers");
  LocalWorkers::Options options = SlowToStop(dir);
  options.stop_grace = absl::Milliseconds(300);
  absl::StatusOr<std::unique_ptr<LocalWorkers>> workers = LocalWorkers::Start(options);
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_TRUE(AwaitFile(dir.File("ready")));
  const pid_t pid = (*workers)->Pids()[0];

  const absl::Time start = absl::Now();
  (*workers)->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_FALSE(Alive(pid));
  absl::SleepFor(absl::Seconds(3));  // the handler's sleep, orphaned, ends; nothing writes
  EXPECT_FALSE(Exists(dir.File("stopped")));
}

// compress-worker's shutdown takes up to its --kill_grace (30 s by default) plus about 20 s of
// calls handing the attempt back; the default grace must not cut it short.
TEST(LocalWorkersTest, DefaultGraceCoversAWorkersShutdown) {
  EXPECT_GT(LocalWorkers::Options().stop_grace, absl::Seconds(30) + absl::Seconds(20));
}

}  // namespace
}  // namespace compress::server
