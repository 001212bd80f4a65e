#include "worker/agent/job_dir_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace compress::worker {

bool IsJobDirName(absl::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<JobDirLock> JobDirLock::Acquire(const std::string& job_dir, absl::Duration wait,
                                               const std::function<bool()>& should_stop) {
  const absl::Time give_up = absl::Now() + wait;
  while (true) {
    std::error_code ec;
    std::filesystem::create_directories(job_dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", job_dir, ": ", ec.message()));
    const int fd = open(job_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    // ENOENT: a sweep moved the directory away since it was made; make it again.
    if (fd < 0 && errno != ENOENT) {
      return absl::InternalError(absl::StrCat("cannot open ", job_dir, ": ", std::strerror(errno)));
    }
    if (fd >= 0) {
      JobDirLock lock(fd);
      if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        // The lock counts only if it is on the directory now at the path: a sweep may have moved
        // the one opened above out of the way before letting go of it.
        struct stat held, current;
        if (fstat(fd, &held) == 0 && stat(job_dir.c_str(), &current) == 0 &&
            held.st_dev == current.st_dev && held.st_ino == current.st_ino) {
          return lock;
        }
      } else if (errno != EWOULDBLOCK && errno != EINTR) {
        // No flock here (NFS, for one): the sweep cannot lock either, so it removes nothing.
        return lock;
      }
    }
    if (should_stop && should_stop()) {
      return absl::CancelledError(absl::StrCat("stopped while waiting for ", job_dir));
    }
    if (absl::Now() >= give_up) {
      return absl::UnavailableError(absl::StrCat(job_dir, " stayed locked by a work dir sweep for ",
                                                 absl::FormatDuration(wait), "; retry later"));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

JobDirLock::JobDirLock(JobDirLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

JobDirLock& JobDirLock::operator=(JobDirLock&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

JobDirLock::~JobDirLock() { Release(); }

void JobDirLock::Touch() const {
  if (fd_ >= 0) futimens(fd_, nullptr);
}

void JobDirLock::Release() {
  if (fd_ >= 0) close(fd_);  // releases the flock
  fd_ = -1;
}

}  // namespace compress::worker
