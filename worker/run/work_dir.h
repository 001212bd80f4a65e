// WorkDir: the executor's work directory and the record of the phases it has completed, so that
// a run on the same directory resumes where the last one stopped (docs/executor-contract.md).
#ifndef COMPRESS_WORKER_RUN_WORK_DIR_H_
#define COMPRESS_WORKER_RUN_WORK_DIR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace compress::run {

// Writes `contents` to `path` atomically: a temporary file in the same directory, fsync, rename.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// Not thread-safe; one executor owns its work directory.
class WorkDir {
 public:
  // Creates the directory if needed and binds it to `spec` (the normalised spec JSON): a fresh
  // directory records it in spec.json; a directory holding a different spec is
  // FAILED_PRECONDITION, since resuming another job's phases would mix two jobs.
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
