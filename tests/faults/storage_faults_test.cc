// compressd's storage failing: a data dir it may not write is refused at start with a message
// naming the path, and a store that runs out of room answers RPCs that write with a status a
// client retries (RESOURCE_EXHAUSTED or UNAVAILABLE) and a message, keeps serving reads, and
// holds every job it accepted before when room returns and after a restart.
//
// Two ways to run out of room: RLIMIT_FSIZE lowered on the running server (with SIGXFSZ
// ignored, so that writes fail with EFBIG instead of killing it), which works everywhere; and a
// small tmpfs filled up (ENOSPC, a real full disk), where the tests may mount one.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/faults/fault_processes.h"

namespace compress::faults {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// compressd run to its end on `data_dir`, as a user that may not write there: as root, through
// fault_exec as nobody (65534), since root ignores permission bits.
CommandResult RunCompressdWithoutWriteAccess(const std::string& data_dir) {
  std::vector<std::string> argv;
  if (geteuid() == 0) argv = {FAULT_EXEC_BIN, "--user=65534:65534", "--"};
  for (const std::string& arg :
       {std::string(COMPRESSD_BIN), std::string("--insecure"),
        std::string("--grpc_address=127.0.0.1:0"), std::string("--metrics_address="),
        absl::StrCat("--data_dir=", data_dir)}) {
    argv.push_back(arg);
  }
  return RunCommand(argv, absl::Seconds(20));
}

// Makes `path` and everything below it read-only, and its ancestors up to `root` searchable by
// anyone.
void MakeReadOnly(const std::string& root, const std::string& path) {
  for (fs::path p = fs::path(path).parent_path(); p.string().size() >= root.size();
       p = p.parent_path()) {
    chmod(p.c_str(), 0755);
    if (p.string() == root) break;
  }
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(path)) {
    chmod(entry.path().c_str(), entry.is_directory() ? 0555 : 0444);
  }
  chmod(path.c_str(), 0555);
}

TEST(StorageFaultsTest, UnwritableNewDataDirIsRefusedNamingThePath) {
  TempDir dir;
  const std::string data_dir = dir.File("data");
  ASSERT_TRUE(fs::create_directory(data_dir));
  MakeReadOnly(dir.path(), data_dir);

  CommandResult run = RunCompressdWithoutWriteAccess(data_dir);
  EXPECT_NE(run.exit.exit_code, 0) << run.exit.ToString();
  EXPECT_EQ(run.exit.signal, 0) << run.exit.ToString();
  EXPECT_THAT(run.out, ::testing::Not(HasSubstr("listening"))) << run.err;
  EXPECT_THAT(run.err, HasSubstr(data_dir));
  chmod(data_dir.c_str(), 0755);
}

TEST(StorageFaultsTest, UnwritableDataDirWithAStoreIsRefusedNamingThePath) {
  TempDir dir;
  const std::string data_dir = dir.File("data");
  {
    ServerOptions options;
    options.data_dir = data_dir;
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    Client client((*server)->address());
    v1::Job job;
    ASSERT_TRUE(client.CreateJob(Client::JobRequest(3), &job).ok());
    EXPECT_EQ((*server)->Terminate(absl::Seconds(20)).exit_code, 0);
  }
  MakeReadOnly(dir.path(), data_dir);

  CommandResult run = RunCompressdWithoutWriteAccess(data_dir);
  EXPECT_NE(run.exit.exit_code, 0) << run.exit.ToString();
  EXPECT_EQ(run.exit.signal, 0) << run.exit.ToString();
  EXPECT_THAT(run.out, ::testing::Not(HasSubstr("listening"))) << run.err;
  EXPECT_THAT(run.err, HasSubstr(data_dir));
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(data_dir)) {
    chmod(entry.path().c_str(), entry.is_directory() ? 0755 : 0644);
  }
  chmod(data_dir.c_str(), 0755);
}

// With the store out of room: CreateJob and CancelJob fail with one of `codes` and a message
// naming the job store and containing `message`; GetJob still answers, every accepted job
// unchanged.
void ExpectWritesRefusedAndReadsServed(Client& client, const std::set<std::string>& accepted,
                                       const std::set<grpc::StatusCode>& codes,
                                       const std::string& message) {
  for (int i = 0; i < 3; ++i) {
    v1::Job job;
    grpc::Status status = client.CreateJob(Client::JobRequest(3), &job);
    EXPECT_EQ(codes.count(status.error_code()), 1u)
        << status.error_code() << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("job store"));
    EXPECT_THAT(status.error_message(), HasSubstr(message));
  }
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::CancelJobRequest request;
    request.set_name(*accepted.begin());
    v1::Job job;
    grpc::Status status = client.stub().CancelJob(&context, request, &job);
    EXPECT_EQ(codes.count(status.error_code()), 1u)
        << status.error_code() << ": " << status.error_message();
  }
  for (const std::string& name : accepted) {
    v1::Job job;
    grpc::Status status = client.GetJob(name, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(job.state(), v1::QUEUED);
  }
}

// Every job of the server at `address`, by name, all QUEUED.
std::set<std::string> QueuedJobNames(const std::string& address) {
  Client client(address);
  std::vector<v1::Job> listed;
  grpc::Status status = client.ListAllJobs(&listed);
  EXPECT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  std::set<std::string> names;
  for (const v1::Job& job : listed) {
    names.insert(job.name());
    EXPECT_EQ(job.state(), v1::QUEUED) << job.name();
  }
  return names;
}

// Sets compressd's soft RLIMIT_FSIZE (the hard limit stays): 0 makes every write fail.
void SetFileSizeLimit(pid_t pid, rlim_t soft) {
  struct rlimit current;
  ASSERT_EQ(prlimit(pid, RLIMIT_FSIZE, nullptr, &current), 0) << std::strerror(errno);
  struct rlimit limit = {soft, current.rlim_max};
  ASSERT_EQ(prlimit(pid, RLIMIT_FSIZE, &limit, nullptr), 0) << std::strerror(errno);
}

TEST(StorageFaultsTest, FileSizeLimitMakesWritesUnavailableAndKeepsEveryAcceptedJob) {
  TempDir dir;
  ServerOptions options;
  options.data_dir = dir.File("data");
  options.fault_exec_flags = {"--ignore_sigxfsz"};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->address());

  std::set<std::string> accepted;
  for (int i = 0; i < 5; ++i) {
    v1::Job job;
    ASSERT_TRUE(client.CreateJob(Client::JobRequest(3), &job).ok());
    accepted.insert(job.name());
  }
  struct rlimit unlimited;
  ASSERT_EQ(prlimit((*server)->pid(), RLIMIT_FSIZE, nullptr, &unlimited), 0);

  // The disk is full: writes are refused with a code a client can act on (retry later), and a
  // message saying what failed; reads still work.
  ASSERT_NO_FATAL_FAILURE(SetFileSizeLimit((*server)->pid(), 0));
  ExpectWritesRefusedAndReadsServed(client, accepted, {grpc::StatusCode::UNAVAILABLE},
                                    "disk I/O error");

  // Room again: the running server writes again, without a restart.
  ASSERT_NO_FATAL_FAILURE(SetFileSizeLimit((*server)->pid(), unlimited.rlim_cur));
  {
    v1::Job job;
    grpc::Status status = client.CreateJob(Client::JobRequest(3), &job);
    ASSERT_TRUE(status.ok()) << status.error_message();
    accepted.insert(job.name());
  }

  // Full again, then a crash; restarted with room, the store opens and holds every job it
  // accepted, and only those.
  ASSERT_NO_FATAL_FAILURE(SetFileSizeLimit((*server)->pid(), 0));
  {
    v1::Job job;
    grpc::Status status = client.CreateJob(Client::JobRequest(3), &job);
    EXPECT_FALSE(status.ok());
  }
  (*server)->Kill();
  server->reset();
  server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(QueuedJobNames((*server)->address()), accepted);
  Client restarted((*server)->address());
  v1::Job job;
  grpc::Status created = restarted.CreateJob(Client::JobRequest(3), &job);
  EXPECT_TRUE(created.ok()) << created.error_code() << ": " << created.error_message();
}

// compressd restarted on a full disk after a crash while a job ran: it starts (its requeue of the
// job cannot be written yet), serves reads, and requeues the job once there is room, without
// another restart.
TEST(StorageFaultsTest, RestartOnAFullDiskWithARunningJobStartsAndRequeuesItLater) {
  TempDir dir;
  ServerOptions options;
  options.data_dir = dir.File("data");
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->address());
  setenv("FAULTS_STEP_MS", "1000", 1);
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker =
      WorkerProcess::Start((*server)->address(), "w1", dir.File("w1"));
  ASSERT_TRUE(worker.ok()) << worker.status();
  v1::Job job;
  ASSERT_TRUE(client.CreateJob(Client::JobRequest(60), &job).ok());
  const std::string name = job.name();
  ASSERT_TRUE(client.WaitFor(
      name, [](const v1::Job& j) { return j.state() == v1::RUNNING; }, absl::Seconds(15), &job))
      << job.DebugString();
  (*worker)->Kill();
  (*server)->Kill();
  server->reset();

  // Out of room from the start: no file may grow, while SQLite may still open the store (it
  // writes into its -shm file, which exists already).
  uintmax_t largest = 0;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(options.data_dir)) {
    if (entry.is_regular_file()) largest = std::max(largest, entry.file_size());
  }
  options.fault_exec_flags = {"--ignore_sigxfsz", absl::StrCat("--file_size_limit=", largest)};
  server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_THAT((*server)->StderrTail(), HasSubstr("could not be written"));
  Client restarted((*server)->address());
  ASSERT_TRUE(restarted.GetJob(name, &job).ok());
  EXPECT_EQ(job.state(), v1::RUNNING);
  std::vector<v1::Job> listed;
  grpc::Status status = restarted.ListAllJobs(&listed);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(listed.size(), 1u);

  struct rlimit limit;
  ASSERT_EQ(prlimit((*server)->pid(), RLIMIT_FSIZE, nullptr, &limit), 0);
  ASSERT_NO_FATAL_FAILURE(SetFileSizeLimit((*server)->pid(), limit.rlim_max));
  EXPECT_TRUE(restarted.WaitFor(
      name, [](const v1::Job& j) { return j.state() == v1::QUEUED; }, absl::Seconds(10), &job))
      << job.DebugString();
  EXPECT_EQ(job.attempt_count(), 1);
  EXPECT_THAT(job.error_message(), HasSubstr("compressd restarted"));
}

// Fills the file system holding `path` by writing to it until a write fails; returns that
// write's errno.
int FillUp(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  std::string block(64 * 1024, 'x');
  int error = 0;
  while (error == 0) {
    if (write(fd, block.data(), block.size()) < 0) error = errno;
  }
  close(fd);
  return error;
}

TEST(StorageFaultsTest, FullTmpfsGivesResourceExhaustedAndKeepsEveryAcceptedJob) {
  TempDir dir;
  const std::string mount_point = dir.File("disk");
  ASSERT_TRUE(fs::create_directory(mount_point));
  if (mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=8m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno)
                 << "); the RLIMIT_FSIZE test covers a full store";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{mount_point};

  ServerOptions options;
  options.data_dir = mount_point + "/data";
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  Client client((*server)->address());
  std::set<std::string> accepted;
  for (int i = 0; i < 5; ++i) {
    v1::Job job;
    ASSERT_TRUE(client.CreateJob(Client::JobRequest(3), &job).ok());
    accepted.insert(job.name());
  }

  const std::string filler = mount_point + "/filler";
  ASSERT_EQ(FillUp(filler), ENOSPC);
  ExpectWritesRefusedAndReadsServed(client, accepted, {grpc::StatusCode::RESOURCE_EXHAUSTED},
                                    "disk is full");

  // Room again: the running server writes again.
  ASSERT_TRUE(fs::remove(filler));
  {
    v1::Job job;
    grpc::Status status = client.CreateJob(Client::JobRequest(3), &job);
    ASSERT_TRUE(status.ok()) << status.error_message();
    accepted.insert(job.name());
  }

  // Full again, then a crash; with room after the restart, every accepted job is there.
  ASSERT_EQ(FillUp(filler), ENOSPC);
  {
    v1::Job job;
    grpc::Status status = client.CreateJob(Client::JobRequest(3), &job);
    EXPECT_FALSE(status.ok());
  }
  (*server)->Kill();
  server->reset();
  ASSERT_TRUE(fs::remove(filler));
  server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(QueuedJobNames((*server)->address()), accepted);
  server->reset();
}

}  // namespace
}  // namespace compress::faults
