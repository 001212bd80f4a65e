#include "server/core/local_workers.h"

#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
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
  // sh -c takes the --device_share that each of several processes gets as its $0.
  options.binary = "/bin/sh";
  options.args = {"-c", "exec sleep 600"};
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

// Starts `count` processes of a script that appends its arguments, one line per process, to
// `dir`/args; returns the lines once every process wrote its own, sorted.
std::vector<std::string> ArgsOfProcesses(const TestDir& dir, std::vector<std::string> args,
                                         int count) {
  const std::string script = dir.File("worker.sh");
  std::ofstream(script) << "#!/bin/sh\necho \"$*\" >> '" << dir.File("args")
                        << "'\nexec sleep 600\n";
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  LocalWorkers::Options options;
  options.binary = script;
  options.args = std::move(args);
  options.count = count;
  options.stop_grace = absl::Seconds(2);
  absl::StatusOr<std::unique_ptr<LocalWorkers>> workers = LocalWorkers::Start(options);
  EXPECT_TRUE(workers.ok()) << workers.status();
  if (!workers.ok()) return {};
  std::vector<std::string> lines;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (static_cast<int>(lines.size()) < count && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
    lines.clear();
    std::ifstream in(dir.File("args"));
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  (*workers)->Stop();
  std::sort(lines.begin(), lines.end());
  return lines;
}

TEST(LocalWorkersTest, EachOfSeveralProcessesGetsItsShareOfTheDevices) {
  TestDir dir("local-workers");
  EXPECT_EQ(ArgsOfProcesses(dir, {"--server=x", "--devices=auto"}, 3),
            (std::vector<std::string>{"--server=x --devices=auto --device_share=0/3",
                                      "--server=x --devices=auto --device_share=1/3",
                                      "--server=x --devices=auto --device_share=2/3"}));
}

TEST(LocalWorkersTest, OneProcessGetsNoDeviceShare) {
  TestDir dir("local-workers");
  EXPECT_EQ(ArgsOfProcesses(dir, {"--server=x", "--devices=cuda:1"}, 1),
            (std::vector<std::string>{"--server=x --devices=cuda:1"}));
}

TEST(LocalWorkersTest, SeveralProcessesMayNotNameTheirGpus) {
  LocalWorkers::Options options;
  options.binary = "/bin/sleep";
  options.count = 2;
  for (const std::vector<std::string>& args : {std::vector<std::string>{"--devices=cuda:0"},
                                               {"--executor=x", "--devices", "cuda:1"},
                                               {"-devices=cpu", "--devices=cuda:0"}}) {
    options.args = args;
    absl::StatusOr<std::unique_ptr<LocalWorkers>> workers = LocalWorkers::Start(options);
    EXPECT_EQ(workers.status().code(), absl::StatusCode::kInvalidArgument) << args.back();
    const absl::string_view message = workers.status().message();
    EXPECT_TRUE(absl::StrContains(message, "--local_worker_flags: --devices=cuda:") &&
                absl::StrContains(message, "all 2 --local_workers offer the same GPUs"))
        << message;
  }
  options.args = {"--device_share=0/2"};
  EXPECT_EQ(LocalWorkers::Start(options).status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--devices=cpu"}, {"--devices=auto"}, {"--devices", "auto"}, {}}) {
    EXPECT_TRUE(LocalWorkers::CheckArgs(args, 4).ok()) << (args.empty() ? "" : args.back());
  }
  EXPECT_TRUE(LocalWorkers::CheckArgs({"--devices=cuda:0"}, 1).ok());
  // compress-worker refuses an empty --devices at start; compressd would restart it for ever.
  for (int count : {1, 4}) {
    const absl::Status empty = LocalWorkers::CheckArgs({"--devices="}, count);
    EXPECT_EQ(empty.code(), absl::StatusCode::kInvalidArgument) << count;
    EXPECT_TRUE(absl::StrContains(empty.message(), "--local_worker_flags: --devices is empty"))
        << empty.message();
  }
}

}  // namespace
}  // namespace compress::server
