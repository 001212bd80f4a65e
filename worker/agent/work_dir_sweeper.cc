#include "worker/agent/work_dir_sweeper.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "worker/agent/job_dir_lock.h"
#include "worker/agent/log.h"

namespace compress::worker {
namespace {

// What the sweep renames a directory to before deleting it: '~' is in no job id.
constexpr char kRemovingInfix[] = "~removing~";

// Opens directories and files below a directory descriptor without following a symlink in the
// last component (the directory descriptors themselves were opened the same way).
constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

// An owned file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  const int fd_;
};

absl::Time ModifiedAt(const struct stat& st) { return absl::TimeFromTimespec(st.st_mtim); }

bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// The names in the directory `dir_fd`, without "." and ".."; `*error` gets an errno on failure.
std::vector<std::string> ListNames(int dir_fd, int* error) {
  *error = 0;
  // A descriptor of its own, so that reading does not move `dir_fd`'s offset.
  const int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    *error = errno;
    return {};
  }
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    *error = errno;
    close(fd);
    return {};
  }
  std::vector<std::string> names;
  while (true) {
    errno = 0;
    const dirent* entry = readdir(dir);
    if (entry == nullptr) {
      *error = errno;
      break;
    }
    const absl::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  closedir(dir);
  return names;
}

// The newest mtime of the job directory `dir_fd`, of its entries, of work/ and of work/'s
// entries (symlinks themselves, not what they point to); nullopt when the directory cannot be
// read.
std::optional<absl::Time> LastModified(int dir_fd) {
  struct stat st;
  if (fstat(dir_fd, &st) != 0) return std::nullopt;
  absl::Time newest = ModifiedAt(st);
  int error = 0;
  for (const std::string& name : ListNames(dir_fd, &error)) {
    if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      newest = std::max(newest, ModifiedAt(st));
    }
  }
  if (error != 0) return std::nullopt;
  Fd work(openat(dir_fd, "work", kDirFlags));
  if (!work.ok()) return newest;
  for (const std::string& name : ListNames(work.get(), &error)) {
    if (fstatat(work.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      newest = std::max(newest, ModifiedAt(st));
    }
  }
  if (error != 0) return std::nullopt;
  return newest;
}

// Whether the directory `dir_fd` is laid out as the agent lays out a job's directory.
bool HasJobDirLayout(int dir_fd) {
  struct stat spec, work;
  return fstatat(dir_fd, "spec.json", &spec, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(spec.st_mode) &&
         fstatat(dir_fd, "work", &work, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(work.st_mode);
}

// Deletes `name` in the directory `parent_fd` and everything below it, following no symlink (a
// symlink is deleted itself), and adds the disk space this frees to `*bytes`. Returns the first
// errno met (0: all gone); goes on past failures so as to free what it can.
int RemoveTree(int parent_fd, const std::string& name, int64_t* bytes) {
  struct stat st;
  if (fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? 0 : errno;
  }
  const int64_t blocks_bytes = static_cast<int64_t>(st.st_blocks) * 512;
  if (!S_ISDIR(st.st_mode)) {
    if (unlinkat(parent_fd, name.c_str(), 0) != 0) return errno == ENOENT ? 0 : errno;
    // A file with other links keeps its blocks.
    if (st.st_nlink <= 1) *bytes += blocks_bytes;
    return 0;
  }
  int first_error = 0;
  {
    Fd dir(openat(parent_fd, name.c_str(), kDirFlags));
    if (!dir.ok()) return errno;
    int list_error = 0;
    for (const std::string& child : ListNames(dir.get(), &list_error)) {
      const int error = RemoveTree(dir.get(), child, bytes);
      if (first_error == 0) first_error = error;
    }
    if (first_error == 0) first_error = list_error;
  }
  if (unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) == 0) {
    *bytes += blocks_bytes;
  } else if (errno != ENOENT && first_error == 0) {
    first_error = errno;
  }
  return first_error;
}

class Sweep {
 public:
  Sweep(const WorkDirSweepOptions& options, int root_fd) : options_(options), root_fd_(root_fd) {}

  void Entry(const std::string& name) {
    const size_t removing = name.find(kRemovingInfix);
    if (removing != std::string::npos) {
      if (IsJobDirName(absl::string_view(name).substr(0, removing))) Leftover(name);
      return;
    }
    if (IsJobDirName(name)) JobDir(name);
  }

  const WorkDirSweepStats& stats() const { return stats_; }

 private:
  std::string PathOf(const std::string& name) const {
    return absl::StrCat(options_.work_root, "/", name);
  }

  void Failed(const std::string& name, absl::string_view what, int error) {
    ++stats_.failed;
    AgentLog("work dir sweep: ", what, " ", PathOf(name), ": ", std::strerror(error));
  }

  // A job's directory: removed when old, unlocked and still old under the locks.
  void JobDir(const std::string& name) {
    // Neither a symlink nor a file: O_NOFOLLOW | O_DIRECTORY refuses both.
    Fd dir(openat(root_fd_, name.c_str(), kDirFlags));
    if (!dir.ok() || !HasJobDirLayout(dir.get())) return;
    const auto idle_for = [&dir]() -> std::optional<absl::Duration> {
      std::optional<absl::Time> modified = LastModified(dir.get());
      if (!modified.has_value()) return std::nullopt;
      return absl::Now() - *modified;
    };
    if (std::optional<absl::Duration> idle = idle_for();
        !idle.has_value() || *idle <= options_.retention) {
      return;
    }
    // An attempt of this agent or of another on the same work root holds it shared.
    if (flock(dir.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        ++stats_.in_use;
      } else {
        Failed(name, "cannot lock", errno);
      }
      return;
    }
    // A running executor holds work/.lock, also one whose agent died. O_NONBLOCK: a FIFO in its
    // place must not block the open.
    Fd work(openat(dir.get(), "work", kDirFlags));
    if (!work.ok()) return;
    Fd executor_lock(openat(work.get(), ".lock", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!executor_lock.ok() && errno != ENOENT) {
      Failed(name, "cannot open work/.lock of", errno);
      return;
    }
    if (executor_lock.ok() && flock(executor_lock.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        ++stats_.in_use;
      } else {
        Failed(name, "cannot lock work/.lock of", errno);
      }
      return;
    }
    // Again under the locks: an attempt may have ended, and marked the directory used, since.
    std::optional<absl::Duration> idle = idle_for();
    if (!idle.has_value() || *idle <= options_.retention) return;
    // The name must still be the directory locked (attempts only ever add it anew after a
    // sweep moved it away, which takes this lock).
    struct stat held, named;
    if (fstat(dir.get(), &held) != 0 ||
        fstatat(root_fd_, name.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0 ||
        !SameFile(held, named)) {
      return;
    }
    // Renamed first, so that an attempt of the job arriving now gets a fresh directory at once,
    // instead of waiting for the deletion or writing into a directory being deleted.
    const std::string trash =
        absl::StrCat(name, kRemovingInfix, getpid(), "-", absl::ToUnixNanos(absl::Now()));
    if (renameat(root_fd_, name.c_str(), root_fd_, trash.c_str()) != 0) {
      Failed(name, "cannot move away", errno);
      return;
    }
    int64_t bytes = 0;
    const int error = RemoveTree(root_fd_, trash, &bytes);
    stats_.bytes_freed += bytes;
    if (error != 0) {
      Failed(trash, absl::StrCat("freed ", bytes, " bytes but cannot remove all of"), error);
      return;
    }
    ++stats_.removed;
    AgentLog("removed work dir ", PathOf(name), ": unused for ",
             absl::FormatDuration(absl::Trunc(*idle, absl::Seconds(1))), " (more than ",
             absl::FormatDuration(options_.retention), "), ", bytes, " bytes freed");
  }

  // What an earlier sweep renamed and did not finish deleting; one still deleting it holds its
  // lock.
  void Leftover(const std::string& name) {
    Fd dir(openat(root_fd_, name.c_str(), kDirFlags));
    if (!dir.ok()) return;
    if (flock(dir.get(), LOCK_EX | LOCK_NB) != 0) return;
    int64_t bytes = 0;
    const int error = RemoveTree(root_fd_, name, &bytes);
    stats_.bytes_freed += bytes;
    if (error != 0) {
      Failed(name, absl::StrCat("freed ", bytes, " bytes but cannot remove all of"), error);
      return;
    }
    ++stats_.removed;
    AgentLog("removed ", PathOf(name), ", left by an earlier work dir sweep: ", bytes,
             " bytes freed");
  }

  const WorkDirSweepOptions& options_;
  const int root_fd_;
  WorkDirSweepStats stats_;
};

}  // namespace

WorkDirSweepStats SweepWorkDirs(const WorkDirSweepOptions& options) {
  if (options.retention <= absl::ZeroDuration() || options.work_root.empty()) return {};
  Fd root(open(options.work_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.ok()) {
    if (errno != ENOENT) {
      AgentLog("work dir sweep: cannot open ", options.work_root, ": ", std::strerror(errno));
    }
    return {};
  }
  int error = 0;
  std::vector<std::string> names = ListNames(root.get(), &error);
  if (error != 0) {
    AgentLog("work dir sweep: cannot read ", options.work_root, ": ", std::strerror(error));
  }
  Sweep sweep(options, root.get());
  for (const std::string& name : names) {
    if (options.should_stop && options.should_stop()) break;
    sweep.Entry(name);
  }
  return sweep.stats();
}

}  // namespace compress::worker
