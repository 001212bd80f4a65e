#include "server/core/local_workers.h"

#include <signal.h>

#include "gtest/gtest.h"

namespace compress::server {
namespace {

bool Alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

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

}  // namespace
}  // namespace compress::server
