// SweepWorkDirs: the retention sweep of --work_root, which removes the directories of jobs that
// no attempt has used for a while.
//
// A job's directory, <work_root>/<job_id>/ (spec.json and the executor's work/), stays after a
// retryable failure so that a later attempt on this node resumes from its checkpoints; when the
// job then ends on another node, is cancelled or deleted meanwhile, or the agent died, nothing
// else ever removes it.
//
// A directory is removed when all of these hold:
//   - its name is a job id (IsJobDirName), it is a directory and no symlink, and it holds a
//     regular file spec.json and a directory work/ (the agent's layout; anything else under
//     --work_root is left alone);
//   - no attempt holds it (JobDirLock's shared flock on the directory, in this agent or another
//     one on the same work root) and no executor holds work/.lock (compress-run's flock; an
//     executor whose agent died still holds it);
//   - it was last modified more than `retention` ago: the newest mtime of the directory, its
//     entries, work/ and work/'s entries (state.json, report.json, .lock, phases/, blobs/, ...).
//     The agent sets the directory's mtime when an attempt ends and keeps it, and each attempt
//     rewrites spec.json, so this is the time since the last attempt on this node ended,
//     or, after an agent crash, the last change at those two levels.
// The sweep checks the age again once it holds both locks, then renames the directory to
// `<job_id>~removing~<n>` (the name is free again at once, for a new attempt), and deletes that
// without following any symlink (directory file descriptors, O_NOFOLLOW, unlinkat), holding
// the lock until it is gone. A `~removing~` directory left by an earlier sweep that died midway is
// deleted whatever its age. Nothing is followed out of the work root, and the work root itself is
// never removed. Each removal is logged with the path, how long it was unused and the bytes
// freed.
#ifndef COMPRESS_WORKER_AGENT_WORK_DIR_SWEEPER_H_
#define COMPRESS_WORKER_AGENT_WORK_DIR_SWEEPER_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/time/time.h"

namespace compress::worker {

struct WorkDirSweepOptions {
  // The agent's --work_root. A work root that does not exist has nothing to sweep.
  std::string work_root;
  // Directories unused for longer are removed; zero or less removes nothing.
  absl::Duration retention = absl::Hours(72);
  // Polled between directories; true ends the sweep early. May be empty.
  std::function<bool()> should_stop;
};

// What one sweep did.
struct WorkDirSweepStats {
  int removed = 0;          // job directories and leftovers of earlier sweeps removed
  int64_t bytes_freed = 0;  // disk blocks of what was removed, in bytes
  int in_use = 0;           // old enough, but held by an attempt or an executor
  int failed = 0;           // could not be removed (logged)
};

// Sweeps `options.work_root` once. Thread-safe: sweeps may run at the same time, in one process
// or in several, and alongside attempts.
WorkDirSweepStats SweepWorkDirs(const WorkDirSweepOptions& options);

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_WORK_DIR_SWEEPER_H_
