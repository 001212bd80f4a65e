// WorkDir: the executor's work directory and the record of the phases it has completed, so that
// a run on the same directory resumes where the last one stopped (docs/executor-contract.md).
#ifndef COMPRESS_WORKER_RUN_WORK_DIR_H_
#define COMPRESS_WORKER_RUN_WORK_DIR_H_

#include <atomic>
#include <functional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace compress::run {

// An exclusive lock on a work directory (flock of DIR/.lock, released when the object goes away
// or the process ends), so that two executors never run the same job's directory at once: after
// a crash of compressd, an executor of the old attempt may still be stopping when the next
// attempt starts on the same node.
class WorkDirLock {
 public:
  // Creates the directory if needed and takes the lock, waiting up to `wait` (polling every
  // 100 ms) while another executor holds it, and calling `on_wait` once when it has to wait.
  // UNAVAILABLE (retryable) naming the directory and the holder's pid when the wait ends,
  // CANCELLED when `cancel` becomes true meanwhile.
  static absl::StatusOr<WorkDirLock> Acquire(
      const std::string& dir, absl::Duration wait, const std::atomic<bool>* cancel,
      const std::function<void(const std::string&)>& on_wait);
  WorkDirLock(WorkDirLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  WorkDirLock& operator=(WorkDirLock&& other) noexcept;
  WorkDirLock(const WorkDirLock&) = delete;
  WorkDirLock& operator=(const WorkDirLock&) = delete;
  ~WorkDirLock();

 private:
  explicit WorkDirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// Not thread-safe; one executor owns its work directory.
class WorkDir {
 public:
  // Creates the directory if needed and binds it to `spec` (the normalised spec JSON): a fresh
  // directory records it in spec.json; a directory holding a different spec is
  // FAILED_PRECONDITION, since resuming another job's phases would mix two jobs. The
  // temporaries of writes an earlier run did not finish (killed mid-write) are removed, not
  // those of a process that still runs nor any below a directory with a work dir lock of its
  // own. Call with the directory's WorkDirLock held.
  static absl::StatusOr<WorkDir> Open(const std::string& path, const nlohmann::json& spec);

  const std::string& path() const { return path_; }
  // DIR/phases/<phase>, created on demand.
  absl::StatusOr<std::string> PhaseDir(const std::string& phase) const;

  // Whether `phase` completed in an earlier run, and what it recorded then.
  bool Completed(const std::string& phase) const;
  const nlohmann::json& Result(const std::string& phase) const;
  // Records `phase` as completed with `result`, durably, before returning.
  absl::Status MarkCompleted(const std::string& phase, nlohmann::json result);

 private:
  WorkDir(std::string path, nlohmann::json state)
      : path_(std::move(path)), state_(std::move(state)) {}

  std::string path_;
  // {"completed": {"<phase>": <result>, ...}}
  nlohmann::json state_;
};

}  // namespace compress::run

#endif  // COMPRESS_WORKER_RUN_WORK_DIR_H_
