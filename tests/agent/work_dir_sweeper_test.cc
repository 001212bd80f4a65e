// The retention sweep of --work_root: which directories it removes, which it leaves alone.
#include "worker/agent/work_dir_sweeper.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/common/test_dir.h"
#include "worker/agent/job_dir_lock.h"

namespace compress::worker {
namespace {

namespace fs = std::filesystem;

// Sets the mtime of `path` and of everything below it (symlinks themselves) to `age` ago.
void Backdate(const fs::path& path, absl::Duration age) {
  const timespec when = absl::ToTimespec(absl::Now() - age);
  const timespec times[2] = {when, when};
  std::error_code ec;
  if (fs::is_directory(fs::symlink_status(path, ec))) {
    for (const fs::directory_entry& entry : fs::recursive_directory_iterator(path, ec)) {
      utimensat(AT_FDCWD, entry.path().c_str(), times, AT_SYMLINK_NOFOLLOW);
    }
  }
  utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW);
}

void WriteFile(const fs::path& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary) << contents;
}

class WorkDirSweeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    work_root_ = root_ / "work";
    fs::create_directories(work_root_);
    options_.work_root = work_root_.string();
    options_.retention = absl::Hours(72);
  }

  // A job's directory as the agent lays it out, with a checkpoint and a data cache, last
  // modified `age` ago.
  fs::path MakeJobDir(const fs::path& parent, const std::string& job, absl::Duration age) {
    fs::path dir = parent / job;
    fs::create_directories(dir / "work/phases/distill/trainer");
    fs::create_directories(dir / "work/cache");
    WriteFile(dir / "spec.json", "{}");
    WriteFile(dir / "work/spec.json", "{}");
    WriteFile(dir / "work/state.json", "{}");
    WriteFile(dir / "work/.lock", "123\n");
    WriteFile(dir / "work/phases/distill/trainer/checkpoint.pt", std::string(100000, 'c'));
    WriteFile(dir / "work/cache/data.bin", std::string(200000, 'd'));
    Backdate(dir, age);
    return dir;
  }

  TestDir dir_{"work_dir_sweeper_test"};
  const fs::path root_ = dir_.path();
  fs::path work_root_;
  WorkDirSweepOptions options_;
};

TEST_F(WorkDirSweeperTest, OldUnlockedJobDirIsRemoved) {
  fs::path old = MakeJobDir(work_root_, "01hold0000000000", absl::Hours(100));
  WorkDirSweepStats stats = SweepWorkDirs(options_);
  EXPECT_FALSE(fs::exists(fs::symlink_status(old)));
  EXPECT_EQ(stats.removed, 1);
  EXPECT_EQ(stats.failed, 0);
  EXPECT_GE(stats.bytes_freed, 300000);
  // The work root stays, with nothing left in it (no renamed leftover).
  ASSERT_TRUE(fs::is_directory(work_root_));
  EXPECT_TRUE(fs::is_empty(work_root_));
}

TEST_F(WorkDirSweeperTest, FreshJobDirIsKept) {
  fs::path fresh = MakeJobDir(work_root_, "fresh", absl::Hours(71));
  fs::path old = MakeJobDir(work_root_, "old", absl::Hours(73));
  WorkDirSweepStats stats = SweepWorkDirs(options_);
  EXPECT_TRUE(fs::exists(fresh / "work/phases/distill/trainer/checkpoint.pt"));
  EXPECT_FALSE(fs::exists(old));
  EXPECT_EQ(stats.removed, 1);
}

// The newest mtime counts, of the directory, its entries, work/ and work/'s entries: one recent
// change to state.json (a phase finished) keeps the directory.
TEST_F(WorkDirSweeperTest, ARecentStateJsonKeepsTheDirectory) {
  fs::path dir = MakeJobDir(work_root_, "j1", absl::Hours(100));
  Backdate(dir / "work/state.json", absl::Hours(1));
  EXPECT_EQ(SweepWorkDirs(options_).removed, 0);
  EXPECT_TRUE(fs::exists(dir / "work/state.json"));
  Backdate(dir / "work/state.json", absl::Hours(100));
  EXPECT_EQ(SweepWorkDirs(options_).removed, 1);
}

TEST_F(WorkDirSweeperTest, DirectoryHeldByAnAttemptIsKept) {
  fs::path dir = MakeJobDir(work_root_, "held", absl::Hours(100));
  absl::StatusOr<JobDirLock> lock = JobDirLock::Acquire(dir.string(), absl::Seconds(1), {});
  ASSERT_TRUE(lock.ok()) << lock.status();
  Backdate(dir, absl::Hours(100));
  WorkDirSweepStats stats = SweepWorkDirs(options_);
  EXPECT_EQ(stats.removed, 0);
  EXPECT_EQ(stats.in_use, 1);
  EXPECT_TRUE(fs::exists(dir / "work/state.json"));
  lock->Release();
  EXPECT_EQ(SweepWorkDirs(options_).removed, 1);
  EXPECT_FALSE(fs::exists(dir));
}

// compress-run holds an exclusive flock on work/.lock while it runs, also after its agent died.
TEST_F(WorkDirSweeperTest, DirectoryWhoseExecutorHoldsTheWorkLockIsKept) {
  fs::path dir = MakeJobDir(work_root_, "running", absl::Hours(100));
  const int fd = open((dir / "work/.lock").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_EX | LOCK_NB), 0);
  WorkDirSweepStats stats = SweepWorkDirs(options_);
  EXPECT_EQ(stats.removed, 0);
  EXPECT_EQ(stats.in_use, 1);
  EXPECT_TRUE(fs::exists(dir / "work/phases/distill/trainer/checkpoint.pt"));
  close(fd);
  EXPECT_EQ(SweepWorkDirs(options_).removed, 1);
}

TEST_F(WorkDirSweeperTest, ZeroRetentionKeepsEverything) {
  fs::path old = MakeJobDir(work_root_, "ancient", absl::Hours(24 * 365));
  options_.retention = absl::ZeroDuration();
  WorkDirSweepStats stats = SweepWorkDirs(options_);
  EXPECT_EQ(stats.removed, 0);
  EXPECT_TRUE(fs::exists(old / "work/cache/data.bin"));
}

TEST_F(WorkDirSweeperTest, SymlinksAreNeverFollowedOutOfTheWorkRoot) {
  // An old job directory outside the work root, reached by a symlink named like a job.
  fs::path outside = MakeJobDir(root_, "outside", absl::Hours(100));
  fs::create_directory_symlink(outside, work_root_ / "linked");
  // A job directory holding symlinks to outside files and directories.
  fs::create_directories(root_ / "precious");
  WriteFile(root_ / "precious/data.bin", "keep me");
  fs::path job = MakeJobDir(work_root_, "withlinks", absl::Hours(100));
  fs::create_directory_symlink(root_ / "precious", job / "work/cache/linked_dir");
  fs::create_symlink(root_ / "precious/data.bin", job / "work/linked_file");
  fs::create_directory_symlink(root_ / "precious", job / "work/phases/distill/linked_dir");
  Backdate(job, absl::Hours(100));

  WorkDirSweepStats stats = SweepWorkDirs(options_);
  EXPECT_EQ(stats.removed, 1);
  EXPECT_FALSE(fs::exists(fs::symlink_status(job)));
  // Nothing outside was touched; the symlink in the work root is not a job directory.
  EXPECT_TRUE(fs::exists(outside / "work/cache/data.bin"));
  EXPECT_TRUE(fs::exists(outside / "spec.json"));
  EXPECT_TRUE(fs::is_symlink(work_root_ / "linked"));
  EXPECT_TRUE(fs::exists(root_ / "precious/data.bin"));
}

TEST_F(WorkDirSweeperTest, WhatIsNotAJobDirectoryIsLeftAlone) {
  // Names that are no job id, a directory without the agent's layout, a file.
  fs::path spaced = MakeJobDir(work_root_, "not a job", absl::Hours(100));
  fs::path lost = work_root_ / "lost+found";
  fs::create_directories(lost / "x");
  fs::path no_spec = work_root_ / "cache";
  fs::create_directories(no_spec / "work");
  fs::path file = work_root_ / "notes.txt";
  WriteFile(file, "x");
  fs::path work_only_spec = work_root_ / "nowork";
  fs::create_directories(work_only_spec);
  WriteFile(work_only_spec / "spec.json", "{}");
  for (const fs::path& path : {lost, no_spec, file, work_only_spec}) {
    Backdate(path, absl::Hours(100));
  }
  EXPECT_EQ(SweepWorkDirs(options_).removed, 0);
  for (const fs::path& path : {spaced, lost / "x", no_spec / "work", file, work_only_spec}) {
    EXPECT_TRUE(fs::exists(path)) << path;
  }
}

TEST_F(WorkDirSweeperTest, LeftoverOfAnInterruptedSweepIsRemovedWhateverItsAge) {
  fs::path leftover = work_root_ / "j9~removing~42-1";
  fs::create_directories(leftover / "work/cache");
  WriteFile(leftover / "work/cache/data.bin", std::string(50000, 'd'));
  WorkDirSweepStats stats = SweepWorkDirs(options_);
  EXPECT_EQ(stats.removed, 1);
  EXPECT_FALSE(fs::exists(leftover));
}

TEST_F(WorkDirSweeperTest, MissingWorkRootIsNothingToSweep) {
  options_.work_root = (root_ / "absent").string();
  WorkDirSweepStats stats = SweepWorkDirs(options_);
  EXPECT_EQ(stats.removed + stats.failed + stats.in_use, 0);
}

}  // namespace
}  // namespace compress::worker
