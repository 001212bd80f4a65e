// DataRoots: the directories (--data_root) under which paths named in job specs (data sets,
// teacher checkpoints) must lie.
//
// A path must be absolute (a relative one would depend on the worker's working directory). It is
// resolved the way open() would see it on shared storage: `..` is collapsed and every symbolic
// link that exists is followed (std::filesystem::weakly_canonical: realpath of the existing
// prefix).
// The result must be one of the roots or lie below one. So `/data/../etc`, a link inside a root
// that points outside it, and `/etc/passwd` are all refused.
#ifndef COMPRESS_SERVER_CORE_DATA_ROOTS_H_
#define COMPRESS_SERVER_CORE_DATA_ROOTS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace compress::server {

// Immutable once created; thread-safe.
class DataRoots {
 public:
  // No roots: every path is allowed (compressd without --data_root).
  DataRoots() = default;

  // The roots named by the values of --data_root, each one directory or several separated by
  // commas, in order. INVALID_ARGUMENT naming --data_root for an empty value or an empty entry
  // (`--data_root=`, `--data_root=,`, `/a,,/b`, a trailing comma): the flag was given to restrict
  // paths, and reading it as no root would leave them unrestricted.
  static absl::StatusOr<std::vector<std::string>> SplitFlagValues(
      const std::vector<std::string>& values);

  // Each root must be an existing directory; it is resolved (symbolic links followed) once here.
  // INVALID_ARGUMENT naming --data_root and the root otherwise.
  static absl::StatusOr<DataRoots> Create(const std::vector<std::string>& roots);

  // OK when there are no roots, or when `path` resolves under one of them. INVALID_ARGUMENT
  // naming `field` (e.g. "spec.dataset.path") otherwise.
  absl::Status Check(absl::string_view field, const std::string& path) const;

  bool empty() const { return roots_.empty(); }
  // The resolved roots.
  const std::vector<std::string>& roots() const { return roots_; }

 private:
  std::vector<std::string> roots_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_DATA_ROOTS_H_
