// JobDirLock: an attempt's hold on its job's directory, <work_root>/<job_id>, against the
// retention sweep (work_dir_sweeper.h).
//
// An attempt holds a shared flock on the directory itself from before it writes the spec until it
// has ended (and removed or kept the directory). The sweep takes the exclusive flock, without
// waiting, before it moves a directory out of the way: a directory some attempt holds, in this
// agent or in another one on the same --work_root (compressd's local workers share one), is never
// removed. Shared, because two attempts of one job may run on two devices after a requeue; the
// executor's own flock on DIR/work/.lock keeps them apart.
//
// flock needs a local file system under --work_root (on NFS it fails; the sweep then removes
// nothing, and attempts run without the lock).
#ifndef COMPRESS_WORKER_AGENT_JOB_DIR_LOCK_H_
#define COMPRESS_WORKER_AGENT_JOB_DIR_LOCK_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace compress::worker {

// Whether `name` may name a job's directory under --work_root: letters, digits, '-', '_' and
// '.', neither empty nor "." or "..". Job ids that are not are refused by the agent.
bool IsJobDirName(absl::string_view name);

// Thread-safety: a JobDirLock is used by one thread at a time.
class JobDirLock {
 public:
  // Creates `job_dir` when absent and holds a shared flock on it. While a sweep holds the
  // exclusive lock (only as long as it moves the directory away), it waits and tries again, on the
  // new directory at the same path, up to `wait`: UNAVAILABLE then. CANCELLED when `should_stop`
  // (may be empty) returns true meanwhile. A file system without flock is no error: the lock is
  // then held in name only.
  static absl::StatusOr<JobDirLock> Acquire(const std::string& job_dir, absl::Duration wait,
                                            const std::function<bool()>& should_stop);

  JobDirLock() = default;
  JobDirLock(JobDirLock&& other) noexcept;
  JobDirLock& operator=(JobDirLock&& other) noexcept;
  JobDirLock(const JobDirLock&) = delete;
  JobDirLock& operator=(const JobDirLock&) = delete;
  ~JobDirLock();

  // Sets the directory's mtime to now, which the sweep counts as its last use: called when an
  // attempt ends and keeps the directory for a later one.
  void Touch() const;
  // Releases the lock (also done by the destructor).
  void Release();

 private:
  explicit JobDirLock(int fd) : fd_(fd) {}
  int fd_ = -1;  // the directory, opened O_RDONLY; -1 when not held
};

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_JOB_DIR_LOCK_H_
