#include "server/core/artifact_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/events/durable_file.h"

namespace compress::server {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxNameLength = 128;

absl::Status ErrnoError(int error, absl::string_view what, absl::string_view path) {
  std::string message =
      absl::StrCat("artifact store: ", what, " ", path, ": ", std::strerror(error));
  switch (error) {
    case ENOENT:
      return absl::NotFoundError(message);
    case ENOSPC:
    case EDQUOT:
    case EFBIG:   // past a file size limit: no room, as a full disk
    case EMFILE:  // out of file descriptors (every open read holds one)
    case ENFILE:
      return absl::ResourceExhaustedError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<int64_t> FileSize(const std::string& path, absl::string_view what) {
  std::error_code ec;
  uintmax_t size = fs::file_size(path, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) {
      return absl::NotFoundError(absl::StrCat(what, " not found"));
    }
    return ErrnoError(ec.value(), "stat", path);
  }
  return static_cast<int64_t>(size);
}

// Opens `path` for reading, with its size from the open file.
absl::StatusOr<std::tuple<int, int64_t>> OpenForReading(const std::string& path,
                                                        absl::string_view what) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(what, " not found"));
    return ErrnoError(errno, "open", path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int error = errno;
    ::close(fd);
    return ErrnoError(error, "stat", path);
  }
  return std::make_tuple(fd, static_cast<int64_t>(st.st_size));
}

}  // namespace

PendingFile::~PendingFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
  if (!replaced_path_.empty()) ::unlink(replaced_path_.c_str());
}

absl::Status PendingFile::Append(absl::string_view data) {
  if (committed_ || fd_ < 0) return absl::FailedPreconditionError("file already committed");
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "write", temp_path_);
    done += static_cast<size_t>(n);
  }
  hasher_.Update(data);
  size_ += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

absl::StatusOr<Artifact> PendingFile::Commit(const std::string& expected_sha256,
                                             int64_t expected_size) {
  absl::StatusOr<Artifact> artifact = Finish(expected_sha256, expected_size);
  if (!artifact.ok()) return artifact.status();
  if (absl::Status s = Publish(); !s.ok()) return s;
  return artifact;
}

absl::StatusOr<Artifact> PendingFile::Finish(const std::string& expected_sha256,
                                             int64_t expected_size) {
  if (committed_ || fd_ < 0) return absl::FailedPreconditionError("file already finished");
  Artifact artifact{name_, size_, hasher_.HexDigest()};
  if (expected_size >= 0 && expected_size != size_) {
    return absl::DataLossError(absl::StrCat("size_bytes: ", name_, " announced ", expected_size,
                                            " bytes, received ", size_));
  }
  if (!expected_sha256.empty() && expected_sha256 != artifact.sha256) {
    return absl::DataLossError(absl::StrCat("sha256: ", name_, " announced ", expected_sha256,
                                            ", received data hashes to ", artifact.sha256));
  }
  if (::fsync(fd_) != 0) return ErrnoError(errno, "fsync", temp_path_);
  ::close(fd_);
  fd_ = -1;
  if (final_path_.empty()) artifact.name = artifact.sha256;
  finished_ = artifact;
  return artifact;
}

absl::Status PendingFile::Publish() {
  if (absl::Status s = Place(); !s.ok()) return s;
  return Settle();
}

std::string PendingFile::FinalPath() const {
  return final_path_.empty() ? absl::StrCat(blob_dir_, "/", finished_->sha256) : final_path_;
}

absl::Status PendingFile::Place() {
  if (committed_) return absl::FailedPreconditionError("file already committed");
  if (!finished_.has_value()) return absl::FailedPreconditionError("file not finished");
  const std::string final_path = FinalPath();
  std::string replaced = absl::StrCat(temp_path_, ".replaced");
  if (::link(final_path.c_str(), replaced.c_str()) != 0) {
    if (errno != ENOENT) return ErrnoError(errno, "keep the file replaced at", final_path);
    replaced.clear();  // nothing to replace
  }
  if (::rename(temp_path_.c_str(), final_path.c_str()) != 0) {
    const int error = errno;
    if (!replaced.empty()) ::unlink(replaced.c_str());
    return ErrnoError(error, "rename to", final_path);
  }
  committed_ = true;
  replaced_path_ = std::move(replaced);
  // The rename reaches the disk before Place returns, so that the record written next describes
  // a file that a power loss keeps too. Callers hold the scheduler's lock here: a directory fsync
  // writes one directory block and a journal commit, usually a few milliseconds, far less than
  // the file's own fsync, which Finish does before any lock.
  if (absl::Status synced = SyncParentDirectory(final_path); !synced.ok()) {
    // Not recorded then: the final path gets its earlier file back.
    if (absl::Status undone = Unplace(); !undone.ok()) {
      return absl::Status(synced.code(), absl::StrCat(synced.message(),
                                                      "; and undoing the rename: ",
                                                      undone.message()));
    }
    return synced;
  }
  return absl::OkStatus();
}

absl::Status PendingFile::Unplace() {
  if (!committed_) return absl::FailedPreconditionError("file not placed");
  const std::string final_path = FinalPath();
  const bool restore = !replaced_path_.empty();
  const int rc =
      restore ? ::rename(replaced_path_.c_str(), final_path.c_str()) : ::unlink(final_path.c_str());
  const int error = errno;
  replaced_path_.clear();
  if (rc != 0) return ErrnoError(error, restore ? "restore the replaced" : "remove", final_path);
  return absl::OkStatus();
}

absl::Status PendingFile::Settle() {
  if (!committed_) return absl::FailedPreconditionError("file not placed");
  if (!replaced_path_.empty()) {
    ::unlink(replaced_path_.c_str());
    replaced_path_.clear();
  }
  return absl::OkStatus();
}

StoredFile::~StoredFile() { ::close(fd_); }

absl::StatusOr<std::string> StoredFile::Read(int64_t offset, int64_t max_bytes) const {
  if (offset < 0) return absl::InvalidArgumentError("offset: must not be negative");
  if (offset > size_) {
    return absl::OutOfRangeError(
        absl::StrCat("offset: ", offset, " is past the end of ", what_, " (", size_, " bytes)"));
  }
  int64_t want = std::min<int64_t>(max_bytes, size_ - offset);
  std::string data(static_cast<size_t>(want), '\0');
  int64_t done = 0;
  while (done < want) {
    ssize_t n = ::pread(fd_, data.data() + done, static_cast<size_t>(want - done), offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "read", path_);
    if (n == 0) break;
    done += n;
  }
  data.resize(static_cast<size_t>(done));
  return data;
}

absl::StatusOr<std::unique_ptr<ArtifactStore>> ArtifactStore::Open(const Options& options) {
  if (options.root.empty()) return absl::InvalidArgumentError("root: required");
  std::error_code ec;
  for (const char* dir : {"artifacts", "blobs", "tmp"}) {
    fs::create_directories(fs::path(options.root) / dir, ec);
    if (ec) return ErrnoError(ec.value(), "create directory", options.root + "/" + dir);
  }
  // Files left by writes a crash interrupted.
  for (const fs::directory_entry& entry :
       fs::directory_iterator(fs::path(options.root) / "tmp", ec)) {
    fs::remove(entry.path(), ec);
  }
  return std::unique_ptr<ArtifactStore>(new ArtifactStore(options.root));
}

absl::Status ArtifactStore::ValidateName(absl::string_view field, absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  if (name.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": at most ", kMaxNameLength, " characters, got ", name.size()));
  }
  if (name[0] == '.' || name.find("..") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must not start with '.' or contain '..', got '", name, "'"));
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": only letters, digits, '.', '_' and '-' are allowed, got '", name, "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ArtifactStore::ValidateSha256(absl::string_view field, absl::string_view sha256) {
  bool ok = sha256.size() == 64;
  for (char c : sha256) ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": expected 64 lowercase hex digits, got '", sha256, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ArtifactStore::ArtifactPath(const std::string& job_id,
                                                        const std::string& name) {
  if (absl::Status s = ValidateName("job", job_id); !s.ok()) return s;
  if (absl::Status s = ValidateName("artifact_name", name); !s.ok()) return s;
  return absl::StrCat(root_, "/artifacts/", job_id, "/", name);
}

absl::StatusOr<std::unique_ptr<PendingFile>> ArtifactStore::Begin(std::string final_path,
                                                                  std::string name) {
  std::string temp_path = absl::StrCat(root_, "/tmp/", ::getpid(), "-", next_temp_++, ".part");
  int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(errno, "create", temp_path);
  return std::unique_ptr<PendingFile>(new PendingFile(
      fd, std::move(temp_path), std::move(final_path), root_ + "/blobs", std::move(name)));
}

absl::StatusOr<std::unique_ptr<PendingFile>> ArtifactStore::BeginArtifact(const std::string& job_id,
                                                                          const std::string& name) {
  absl::StatusOr<std::string> path = ArtifactPath(job_id, name);
  if (!path.ok()) return path.status();
  std::error_code ec;
  std::string dir = absl::StrCat(root_, "/artifacts/", job_id);
  if (fs::create_directories(dir, ec); ec) return ErrnoError(ec.value(), "create directory", dir);
  // The job's directory must be on the disk before a file placed in it is recorded. Synced on
  // every upload, not only by the one that created it: that one may have failed to sync, or may
  // still be syncing while another upload of the job finishes. With nothing new in artifacts/,
  // the fsync only waits for the disk's cache flush; no lock is held here.
  if (absl::Status s = SyncPath(absl::StrCat(root_, "/artifacts")); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("artifact store: ", s.message()));
  }
  return Begin(*std::move(path), name);
}

absl::StatusOr<std::unique_ptr<PendingFile>> ArtifactStore::BeginBlob() {
  return Begin("", "blob");
}

absl::StatusOr<int64_t> ArtifactStore::ArtifactSize(const std::string& job_id,
                                                    const std::string& name) {
  absl::StatusOr<std::string> path = ArtifactPath(job_id, name);
  if (!path.ok()) return path.status();
  return FileSize(*path, absl::StrCat("artifact ", name, " of job ", job_id));
}

absl::StatusOr<int64_t> ArtifactStore::BlobSize(const std::string& sha256) {
  if (absl::Status s = ValidateSha256("sha256", sha256); !s.ok()) return s;
  return FileSize(absl::StrCat(root_, "/blobs/", sha256), absl::StrCat("blob ", sha256));
}

absl::StatusOr<std::unique_ptr<StoredFile>> ArtifactStore::Open(std::string path,
                                                                std::string what) {
  absl::StatusOr<std::tuple<int, int64_t>> opened = OpenForReading(path, what);
  if (!opened.ok()) return opened.status();
  auto [fd, size] = *opened;
  return std::unique_ptr<StoredFile>(new StoredFile(fd, std::move(path), std::move(what), size));
}

absl::StatusOr<std::unique_ptr<StoredFile>> ArtifactStore::OpenArtifact(const std::string& job_id,
                                                                        const std::string& name) {
  absl::StatusOr<std::string> path = ArtifactPath(job_id, name);
  if (!path.ok()) return path.status();
  return Open(*std::move(path), absl::StrCat("artifact ", name, " of job ", job_id));
}

absl::StatusOr<std::unique_ptr<StoredFile>> ArtifactStore::OpenBlob(const std::string& sha256) {
  if (absl::Status s = ValidateSha256("sha256", sha256); !s.ok()) return s;
  return Open(absl::StrCat(root_, "/blobs/", sha256), absl::StrCat("blob ", sha256));
}

absl::Status ArtifactStore::RemoveJob(const std::string& job_id) {
  if (absl::Status s = ValidateName("job", job_id); !s.ok()) return s;
  std::error_code ec;
  std::string dir = absl::StrCat(root_, "/artifacts/", job_id);
  fs::remove_all(dir, ec);
  if (ec) return ErrnoError(ec.value(), "remove", dir);
  return absl::OkStatus();
}

absl::Status ArtifactStore::RemoveJobsWithout(const JobExists& job_exists,
                                              std::vector<std::string>* removed) {
  const std::string artifacts = absl::StrCat(root_, "/artifacts");
  std::error_code ec;
  std::vector<std::string> job_ids;
  for (fs::directory_iterator it(artifacts, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    // Anything else is not the store's: left alone.
    if (it->is_directory() && ValidateName("job", name).ok()) job_ids.push_back(std::move(name));
  }
  if (ec) return ErrnoError(ec.value(), "list", artifacts);
  absl::Status first_error;
  for (const std::string& job_id : job_ids) {
    absl::StatusOr<bool> exists = job_exists(job_id);
    absl::Status s = exists.status();
    if (exists.ok() && !*exists) {
      s = RemoveJob(job_id);
      if (s.ok()) removed->push_back(job_id);
    }
    if (!s.ok() && first_error.ok()) first_error = s;
  }
  return first_error;
}

}  // namespace compress::server
