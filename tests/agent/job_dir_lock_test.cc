// JobDirLock: an attempt's shared hold on its job's directory against the retention sweep.
#include "worker/agent/job_dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/common/test_dir.h"

namespace compress::worker {
namespace {

namespace fs = std::filesystem;

class JobDirLockTest : public ::testing::Test {
 protected:
  // The exclusive flock a sweep takes; -1 when it is not to be had.
  static int LockExclusively(const fs::path& dir) {
    const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }

  TestDir dir_{"job_dir_lock_test"};
  const fs::path root_ = dir_.path();
};

TEST_F(JobDirLockTest, CreatesTheDirectoryAndHoldsItSharedUntilReleased) {
  const fs::path dir = root_ / "j1";
  absl::StatusOr<JobDirLock> first = JobDirLock::Acquire(dir.string(), absl::Seconds(1), {});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(fs::is_directory(dir));
  // A second attempt of the job (another device) shares it; a sweep cannot have it.
  absl::StatusOr<JobDirLock> second = JobDirLock::Acquire(dir.string(), absl::Seconds(1), {});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(LockExclusively(dir), -1);
  first->Release();
  EXPECT_EQ(LockExclusively(dir), -1);
  second->Release();
  const int fd = LockExclusively(dir);
  EXPECT_GE(fd, 0);
  close(fd);
}

TEST_F(JobDirLockTest, TouchMarksTheDirectoryUsedNow) {
  const fs::path dir = root_ / "j1";
  absl::StatusOr<JobDirLock> lock = JobDirLock::Acquire(dir.string(), absl::Seconds(1), {});
  ASSERT_TRUE(lock.ok()) << lock.status();
  const timespec old = absl::ToTimespec(absl::Now() - absl::Hours(100));
  const timespec times[2] = {old, old};
  ASSERT_EQ(utimensat(AT_FDCWD, dir.c_str(), times, 0), 0);
  lock->Touch();
  struct stat st;
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_LT(absl::Now() - absl::TimeFromTimespec(st.st_mtim), absl::Minutes(1));
}

// A sweep holds the directory exclusively only while it moves it away: the attempt waiting
// meanwhile gets the new directory at the same path, never the one moved away.
TEST_F(JobDirLockTest, WaitsForASweepAndTakesTheNewDirectory) {
  const fs::path dir = root_ / "j1";
  fs::create_directories(dir / "work");
  std::ofstream(dir / "work/state.json") << "{}";
  const int sweep = LockExclusively(dir);
  ASSERT_GE(sweep, 0);
  absl::Notification acquired;
  std::atomic<bool> ok{false};
  std::thread attempt([&] {
    absl::StatusOr<JobDirLock> lock = JobDirLock::Acquire(dir.string(), absl::Seconds(20), {});
    ok = lock.ok();
    acquired.Notify();
    // The directory held is the one at the path.
    EXPECT_FALSE(fs::exists(dir / "work/state.json"));
  });
  EXPECT_FALSE(acquired.WaitForNotificationWithTimeout(absl::Milliseconds(300)));
  fs::rename(dir, root_ / "j1~removing~1");
  fs::remove_all(root_ / "j1~removing~1");
  close(sweep);
  ASSERT_TRUE(acquired.WaitForNotificationWithTimeout(absl::Seconds(10)));
  attempt.join();
  EXPECT_TRUE(ok);
  EXPECT_TRUE(fs::is_directory(dir));
}

TEST_F(JobDirLockTest, GivesUpWhenTheDirectoryStaysLockedOrTheAttemptStops) {
  const fs::path dir = root_ / "j1";
  fs::create_directories(dir);
  const int sweep = LockExclusively(dir);
  ASSERT_GE(sweep, 0);
  absl::StatusOr<JobDirLock> lock = JobDirLock::Acquire(dir.string(), absl::Milliseconds(200), {});
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kUnavailable);
  lock = JobDirLock::Acquire(dir.string(), absl::Seconds(20), [] { return true; });
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kCancelled);
  close(sweep);
}

TEST_F(JobDirLockTest, JobDirNames) {
  EXPECT_TRUE(IsJobDirName("01hx2k3m4n5p6q7r"));
  EXPECT_TRUE(IsJobDirName("a.b-c_d"));
  for (const char* name : {"", ".", "..", "a/b", "a b", "j1~removing~1", "lost+found"}) {
    EXPECT_FALSE(IsJobDirName(name)) << name;
  }
}

}  // namespace
}  // namespace compress::worker
