// ArtifactStore: artifacts of jobs and uploaded blobs, as files on local disk.
//
// Layout under the root directory:
//   artifacts/<job_id>/<name>   artifacts of a job (a model checkpoint, its config, a report)
//   blobs/<sha256>              content-addressed uploads (teacher checkpoints)
//   tmp/                        files being written; emptied when the store opens
// Every file is written to tmp/, checked against its expected sha256 and size, fsync'ed and
// renamed into place, and the rename fsync'ed, so a reader never sees a partial file, a crash
// leaves only debris in tmp/, and a file is on the disk once Place returns. Names are validated so that no request can address a file outside the store.
#ifndef COMPRESS_SERVER_CORE_ARTIFACT_STORE_H_
#define COMPRESS_SERVER_CORE_ARTIFACT_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/core/job.h"
#include "worker/events/sha256.h"

namespace compress::server {

// A file being written. Not thread-safe. Destroying it before Commit discards the file.
class PendingFile {
 public:
  ~PendingFile();
  PendingFile(const PendingFile&) = delete;
  PendingFile& operator=(const PendingFile&) = delete;

  absl::Status Append(absl::string_view data);
  int64_t size() const { return size_; }

  // Finish, then Publish. Returns what was stored.
  absl::StatusOr<Artifact> Commit(const std::string& expected_sha256, int64_t expected_size);
  // Checks the file against `expected_sha256` and `expected_size` (each skipped when empty /
  // negative; DATA_LOSS on a mismatch) and syncs it, still under its temporary name. Returns what
  // Publish will store.
  absl::StatusOr<Artifact> Finish(const std::string& expected_sha256, int64_t expected_size);
  // Place, then Settle.
  absl::Status Publish();
  // Moves the finished file to its final path (for a blob: blobs/<its sha256>), replacing any
  // file there (a reader that opened that one keeps reading it), and syncs the directory, so
  // that once it returns OK a power loss keeps the new file: a record of it may be written then.
  // When the sync fails, the final path has its earlier file back (or none). The replaced file
  // is kept (a hard link under the store's tmp/) until Settle, so that Unplace can put it back.
  absl::Status Place();
  // Undoes Place: the replaced file is back at the final path, or, when there was none, the
  // placed file is removed. For a record that could not be written after its file was placed.
  absl::Status Unplace();
  // Drops the replaced file, once the record of the placed one is written.
  absl::Status Settle();

 private:
  friend class ArtifactStore;
  PendingFile(int fd, std::string temp_path, std::string final_path, std::string blob_dir,
              std::string name)
      : fd_(fd),
        temp_path_(std::move(temp_path)),
        final_path_(std::move(final_path)),
        blob_dir_(std::move(blob_dir)),
        name_(std::move(name)) {}

  // The path Place moves the file to.
  std::string FinalPath() const;

  int fd_;
  const std::string temp_path_;
  // Empty for a blob: its path is known once its digest is.
  const std::string final_path_;
  const std::string blob_dir_;
  const std::string name_;
  Sha256 hasher_;
  int64_t size_ = 0;
  // Set by Finish.
  std::optional<Artifact> finished_;
  bool committed_ = false;
  // Set by Place while it keeps the file it replaced; cleared by Unplace and Settle.
  std::string replaced_path_;
};

// A stored file open for reading. It keeps reading the file it opened, as it was, when an upload
// replaces it (renames another file over it) or its job is deleted. Not thread-safe.
class StoredFile {
 public:
  ~StoredFile();
  StoredFile(const StoredFile&) = delete;
  StoredFile& operator=(const StoredFile&) = delete;

  // The size when it was opened (stored files are never written in place).
  int64_t size() const { return size_; }
  // Up to `max_bytes` from `offset`; fewer (possibly none) at the end of the file. OUT_OF_RANGE
  // when offset is past the end.
  absl::StatusOr<std::string> Read(int64_t offset, int64_t max_bytes) const;

 private:
  friend class ArtifactStore;
  StoredFile(int fd, std::string path, std::string what, int64_t size)
      : fd_(fd), path_(std::move(path)), what_(std::move(what)), size_(size) {}

  const int fd_;
  const std::string path_;
  // "artifact NAME of job ID" or "blob SHA", for messages.
  const std::string what_;
  const int64_t size_;
};

// Thread-safe: files are written under unique temporary names and renamed atomically.
class ArtifactStore {
 public:
  struct Options {
    // The root directory (data_dir of compressd); created when missing.
    std::string root;
  };

  static absl::StatusOr<std::unique_ptr<ArtifactStore>> Open(const Options& options);

  // OK when `name` is 1-128 characters of [A-Za-z0-9._-], does not start with '.', and holds no
  // "..": so it can never name a path outside its directory. INVALID_ARGUMENT naming `field`.
  static absl::Status ValidateName(absl::string_view field, absl::string_view name);
  // OK for 64 lowercase hex digits.
  static absl::Status ValidateSha256(absl::string_view field, absl::string_view sha256);

  // Starts writing artifact `name` of job `job_id`; creates the job's directory and syncs
  // artifacts/, so that the directory is on the disk before a file placed in it.
  absl::StatusOr<std::unique_ptr<PendingFile>> BeginArtifact(const std::string& job_id,
                                                             const std::string& name);
  // Starts writing a blob; its name is its sha256, known at Commit.
  absl::StatusOr<std::unique_ptr<PendingFile>> BeginBlob();

  // Size of a stored file. NOT_FOUND naming it when absent.
  absl::StatusOr<int64_t> ArtifactSize(const std::string& job_id, const std::string& name);
  absl::StatusOr<int64_t> BlobSize(const std::string& sha256);

  // Opens a stored file for reading. NOT_FOUND naming it when absent.
  absl::StatusOr<std::unique_ptr<StoredFile>> OpenArtifact(const std::string& job_id,
                                                           const std::string& name);
  absl::StatusOr<std::unique_ptr<StoredFile>> OpenBlob(const std::string& sha256);

  // Removes every artifact of the job (nothing to do when it has none).
  absl::Status RemoveJob(const std::string& job_id);

  // Tells whether a job exists (an error when that cannot be known).
  using JobExists = std::function<absl::StatusOr<bool>(const std::string& job_id)>;
  // Removes artifacts/<id>/ of every job for which `job_exists` is false: what a deletion left
  // when removing its files failed or a crash came between the job's record and its files.
  // Appends each id removed to `removed`. A directory whose check fails is kept; every one is
  // tried, and the result is the first error. For compressd's start, before it serves: an
  // upload meanwhile could be for a job whose record is being written.
  absl::Status RemoveJobsWithout(const JobExists& job_exists, std::vector<std::string>* removed);

 private:
  explicit ArtifactStore(std::string root) : root_(std::move(root)) {}

  absl::StatusOr<std::unique_ptr<PendingFile>> Begin(std::string final_path, std::string name);
  absl::StatusOr<std::unique_ptr<StoredFile>> Open(std::string path, std::string what);
  absl::StatusOr<std::string> ArtifactPath(const std::string& job_id, const std::string& name);

  // Constant after construction.
  const std::string root_;
  std::atomic<int64_t> next_temp_{0};
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_ARTIFACT_STORE_H_
