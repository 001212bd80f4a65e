// File-system helpers shared by the data set readers. Every error names the path it concerns.
#ifndef COMPRESS_WORKER_PIPELINE_DATA_SOURCE_FILES_H_
#define COMPRESS_WORKER_PIPELINE_DATA_SOURCE_FILES_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/pipeline/data/raw_dataset.h"

namespace compress::pipeline {

// Size and modification time of a regular file. NOT_FOUND when it does not exist,
// FAILED_PRECONDITION when it is not a regular file. `what` describes the file in messages.
absl::StatusOr<SourceFile> StatSourceFile(const std::string& path, absl::string_view what);

// Whole contents of a file. NOT_FOUND when missing; DATA_LOSS when it cannot be read fully.
absl::StatusOr<std::string> ReadFileBytes(const std::string& path, absl::string_view what);

// OK when `path` is a directory; NOT_FOUND otherwise, naming `what` and the path.
absl::Status CheckDirectory(const std::string& path, absl::string_view what);

// Sorted names (not paths) of the entries of `dir`: subdirectories when `directories` is true,
// regular files otherwise. Hidden entries (starting with '.') are skipped.
absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& dir, bool directories);

// `dir` + "/" + `name`.
std::string JoinPath(absl::string_view dir, absl::string_view name);

// Lines of `text` with trailing '\r' removed; a final empty line is dropped.
std::vector<std::string> SplitLines(absl::string_view text);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_SOURCE_FILES_H_
