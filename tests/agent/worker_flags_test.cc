// compress-worker as built: a flag value outside its range (docs/worker.md, "Flags") ends the
// agent at start with status 1 and one line naming the flag, before it dials or leases.
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/test_dir.h"
#include "worker/agent/subprocess.h"

namespace compress::worker {
namespace {

namespace fs = std::filesystem;

struct WorkerRun {
  ExitInfo exit;
  std::string err;
  // Whether the agent had to be killed because it did not exit at once.
  bool killed = false;
};

class WorkerFlagsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    executor_ = dir_.File("fake-run.sh");
    std::ofstream(executor_) << "#!/bin/sh\nexit 0\n";
    chmod(executor_.c_str(), 0755);
    // Without nvidia-smi and CUDA_VISIBLE_DEVICES the agent finds no GPU, whatever the host has.
    fs::create_directories(dir_.File("empty-path"));
    unsetenv("CUDA_VISIBLE_DEVICES");
  }

  // Runs compress-worker with a usable executor, work root and devices, then `args` (a later
  // flag wins). A worker still running after 5 s is killed.
  WorkerRun Worker(const std::vector<std::string>& args) {
    Subprocess::Options options;
    options.argv = {COMPRESS_WORKER_BIN, "--server=127.0.0.1:1", "--devices=cpu",
                    absl::StrCat("--executor=", executor_),
                    absl::StrCat("--work_root=", dir_.File("work"))};
    options.argv.insert(options.argv.end(), args.begin(), args.end());
    options.environment = {{"PATH", dir_.File("empty-path")}};
    WorkerRun run;
    absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(options);
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return run;
    Subprocess* worker = started->get();
    absl::Notification exited;
    std::thread watchdog([&] {
      if (!exited.WaitForNotificationWithTimeout(absl::Seconds(5))) {
        run.killed = true;
        worker->Signal(SIGKILL);
      }
    });
    while (worker->ReadLine()) {
    }
    run.exit = worker->Wait();
    exited.Notify();
    watchdog.join();
    run.err = worker->StderrTail();
    return run;
  }

  TestDir dir_{"worker_flags_test"};
  std::string executor_;
};

TEST_F(WorkerFlagsTest, AValueOutsideItsRangeIsAUsageErrorNamingTheFlag) {
  std::ofstream(dir_.File("file")) << "x";
  const std::string missing = dir_.File("missing-run");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"--kill_grace=-1s"}, "--kill_grace: must be in [0s, 1h], got -1s"},
           {{"--kill_grace=2h"}, "--kill_grace: must be in [0s, 1h], got 2h"},
           {{"--devices="},
            "--devices: empty; expected auto, or a comma-separated list of cpu and cuda:N"},
           {{"--devices=cuda:0"},
            "--devices: cuda:0 is not visible: nvidia-smi is not on PATH, so this agent finds no "
            "GPU (give --devices=cpu, or auto)"},
           {{"--threads=1025"},
            "--threads: must be in [0, 1024] (0 = the executor's default), got 1025"},
           {{"--threads=-1"},
            "--threads: must be in [0, 1024] (0 = the executor's default), got -1"},
           {{"stray"},
            "unexpected argument 'stray': compress-worker takes flags only (--flag=VALUE); see "
            "--help"},
           {{"--", "--threads=1"},
            "unexpected argument '--threads=1': compress-worker takes flags only (--flag=VALUE); "
            "see --help"},
           {{"--server=127.0.0.1:99999"},
            "--server: the port must be a number in [0, 65535], got '99999' in '127.0.0.1:99999'"},
           {{"--server="}, "--server: empty address"},
           {{"--server=compressd"},
            "--server: expected HOST:PORT, [IPV6]:PORT or unix:PATH, got 'compressd'"},
           {{"--executor=" + missing},
            absl::StrCat("--executor: cannot run ", missing, ": No such file or directory")},
           {{"--executor=" + dir_.path()},
            absl::StrCat("--executor: cannot run ", dir_.path(),
                         ": a directory, not an executable file")},
           {{"--worker_id=w 1"},
            "--worker_id: byte 0x20 at offset 1 is not printable ASCII without spaces "
            "(0x21-0x7e)"},
           {{"--work_root=" + dir_.File("file")},
            absl::StrCat("--work_root: ", dir_.File("file"), " is not a directory")},
           {{"--lease_wait_seconds=31"}, "--lease_wait_seconds: must be in [0, 30], got 31"},
           {{"--work_dir_retention=-1s"}, "--work_dir_retention: must not be negative, got -1s"},
           {{"--device_share=2/2"},
            "--device_share: expected I/N with 0 <= I < N (agent I of N), got \"2/2\""},
           {{"--tls_cert=" + dir_.File("file")}, "--tls_cert and --tls_key: give both or neither"},
       }) {
    WorkerRun run = Worker(c.args);
    EXPECT_FALSE(run.killed) << c.message << ": the agent started";
    EXPECT_EQ(run.exit.exit_code, 1) << c.message;
    EXPECT_EQ(run.err, absl::StrCat("compress-worker: INVALID_ARGUMENT: ", c.message, "\n"));
  }
}

// Without --executor the agent runs compress-run next to it; when that is missing, the line says
// so.
TEST_F(WorkerFlagsTest, AMissingDefaultExecutorIsNamed) {
  const std::string beside =
      (fs::path(COMPRESS_WORKER_BIN).parent_path() / "compress-run").lexically_normal().string();
  if (fs::exists(beside)) GTEST_SKIP() << beside << " is built";
  WorkerRun run = Worker({"--executor="});
  EXPECT_FALSE(run.killed);
  EXPECT_EQ(run.exit.exit_code, 1);
  EXPECT_EQ(run.err,
            absl::StrCat("compress-worker: INVALID_ARGUMENT: --executor: cannot run ", beside,
                         ": No such file or directory (the default, compress-run next to "
                         "compress-worker: build compress-run or give --executor)\n"));
}

}  // namespace
}  // namespace compress::worker
