// compressctl download: resumable, verified artifact downloads.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/command_env.h"
#include "client/commands.h"
#include "client/job_names.h"
#include "client/output.h"
#include "client/retry_schedule.h"
#include "client/server_cancels.h"
#include "nlohmann/json.hpp"
#include "worker/events/sha256.h"

namespace compress::client {
namespace {

namespace fs = std::filesystem;

absl::Status FromGrpc(const grpc::Status& status, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

// CANCELLED is the server's doing: compressctl cancels a read only where it stops reading (a
// chunk out of place, a failed write), and returns that error instead. compressd cancels a
// transfer that moved nothing for its --file_stream_idle_timeout (a client that stood still: a
// laptop asleep, a full pipe), and the calls still open when its shutdown grace has passed.
bool IsTransient(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::CANCELLED ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         status.error_code() == grpc::StatusCode::INTERNAL ||
         status.error_code() == grpc::StatusCode::UNKNOWN ||
         status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

struct Downloaded {
  std::string path;
  int64_t resumed_from = 0;
  bool already_present = false;
};

// A local file operation that failed with `error` (an errno value): the code that errno maps to
// (NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED for a full disk, FAILED_PRECONDITION for a
// path through a file, ...) and the OS's reason. Never DATA_LOSS, whose exit code means a sha256
// mismatch.
absl::Status LocalError(int error, absl::string_view what) {
  return absl::ErrnoToStatus(error, what);
}
absl::Status LocalError(const std::error_code& error, absl::string_view what) {
  return absl::ErrnoToStatus(error.value(), what);
}

// Closes the descriptor it holds.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes it now; the error close(2) reports (a write that failed late) or 0.
  int Close() {
    const int result = ::close(fd_);
    fd_ = -1;
    return result == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

// Feeds the first `size` bytes of `path` (the whole file when size < 0) to `hasher`; returns the
// number of bytes read.
absl::StatusOr<int64_t> HashFile(const fs::path& path, int64_t size, Sha256* hasher) {
  FileDescriptor file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.get() < 0) return LocalError(errno, absl::StrCat("cannot read ", path.string()));
  std::string buffer(1 << 20, '\0');
  int64_t done = 0;
  while (size < 0 || done < size) {
    const size_t want = size < 0
                            ? buffer.size()
                            : static_cast<size_t>(std::min<int64_t>(size - done, buffer.size()));
    const ssize_t n = ::read(file.get(), buffer.data(), want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return LocalError(errno, absl::StrCat("cannot read ", path.string()));
    if (n == 0) break;
    hasher->Update(buffer.data(), static_cast<size_t>(n));
    done += n;
  }
  return done;
}

absl::Status WriteAll(int fd, absl::string_view data, const fs::path& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return LocalError(errno, absl::StrCat("cannot write ", path.string()));
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// The partial file of `artifact` in its folder: NAME.<the first 16 hex digits of its sha256>.part,
// so that the bytes of another artifact of the same name (another job's model.safetensors) are
// never resumed as this one's. NAME.part when the server gave no sha256 of 64 hex digits (the
// download then fails its check anyway).
std::string PartFileName(const compress::v1::Artifact& artifact) {
  const std::string& sha256 = artifact.sha256();
  const bool hex = sha256.size() == 64 && std::all_of(sha256.begin(), sha256.end(), [](char c) {
                     return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                   });
  return hex ? absl::StrCat(artifact.name(), ".", sha256.substr(0, 16), ".part")
             : absl::StrCat(artifact.name(), ".part");
}

// What FillPartFile left in the partial file.
struct Filled {
  // Of the whole partial file.
  FileDigest digest;
  // The sha256 the server sent with the last chunk; the artifact's when it sent none.
  std::string sent_sha256;
};

bool Matches(const Filled& filled, const compress::v1::Artifact& artifact) {
  return filled.digest.sha256 == artifact.sha256() && filled.sent_sha256 == artifact.sha256() &&
         filled.digest.size_bytes == artifact.size_bytes();
}

// Reads the artifact into `part_path` with ReadArtifact from the partial file's size (from empty
// when `from_start`), reopening reads that broke off, until it has the artifact's size. Sets
// `*resumed_from` to the size it started at.
absl::StatusOr<Filled> FillPartFile(const CommandEnv& env, const std::string& job_name,
                                    const compress::v1::Artifact& artifact,
                                    const fs::path& part_path, int chunk_size, bool from_start,
                                    int64_t* resumed_from) {
  // Created when missing, so that a 0-byte artifact has its file too.
  const int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (from_start ? O_TRUNC : 0);
  FileDescriptor part(::open(part_path.c_str(), flags, 0644));
  if (part.get() < 0) return LocalError(errno, absl::StrCat("cannot write ", part_path.string()));
  struct stat part_stat;
  if (::fstat(part.get(), &part_stat) != 0) {
    return LocalError(errno, absl::StrCat("cannot read the size of ", part_path.string()));
  }
  int64_t offset = static_cast<int64_t>(part_stat.st_size);
  if (offset > artifact.size_bytes()) {
    return absl::DataLossError(absl::StrCat(part_path.string(), " holds ", offset,
                                            " bytes, more than the artifact's ",
                                            artifact.size_bytes()));
  }
  *resumed_from = offset;
  // The file is hashed as it is written, after the part an earlier run left.
  Sha256 hasher;
  if (offset > 0) {
    absl::StatusOr<int64_t> read = HashFile(part_path, offset, &hasher);
    if (!read.ok()) return read.status();
    if (*read != offset) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot resume ", part_path.string(), ": it shrank to ", *read, " bytes while read"));
    }
  }
  Filled filled;
  filled.sent_sha256 = artifact.sha256();
  RetrySchedule retry(env.retry_for);
  int server_cancels = 0;
  std::string resource = ArtifactResourceName(job_name, artifact.name());
  while (offset < artifact.size_bytes()) {
    auto context = env.NewContext();
    compress::v1::ReadArtifactRequest request;
    request.set_name(resource);
    request.set_offset(offset);
    request.set_chunk_size(chunk_size);
    auto reader = env.stub->ReadArtifact(context.get(), request);
    compress::v1::ReadArtifactResponse chunk;
    bool progressed = false;
    absl::Status broken;
    while (reader->Read(&chunk)) {
      if (chunk.offset() != offset) {
        broken = absl::InternalError(absl::StrCat("ReadArtifact ", resource, ": chunk at offset ",
                                                  chunk.offset(), ", expected ", offset));
        context->TryCancel();
        break;
      }
      broken = WriteAll(part.get(), chunk.data(), part_path);
      if (!broken.ok()) {
        context->TryCancel();
        break;
      }
      hasher.Update(chunk.data());
      offset += static_cast<int64_t>(chunk.data().size());
      progressed = progressed || !chunk.data().empty();
      if (!chunk.sha256().empty()) filled.sent_sha256 = chunk.sha256();
    }
    grpc::Status status = reader->Finish();
    if (!broken.ok()) return broken;
    if (status.ok()) {
      if (offset < artifact.size_bytes() && !progressed) {
        return absl::DataLossError(absl::StrCat("ReadArtifact ", resource, " ended at ", offset,
                                                " of ", artifact.size_bytes(), " bytes"));
      }
      continue;
    }
    if (!IsTransient(status)) return FromGrpc(status, absl::StrCat("ReadArtifact ", resource));
    // A read the server cancelled stood still for its idle timeout, longer than --retry_for may
    // be: it opens the window afresh, as progress does, a few times.
    bool afresh = progressed;
    if (status.error_code() == grpc::StatusCode::CANCELLED && server_cancels < kMaxServerCancels) {
      ++server_cancels;
      afresh = true;
    }
    if (afresh) retry.Progressed();
    if (!retry.WaitForNextTry()) {
      return FromGrpc(status, absl::StrCat("ReadArtifact ", resource, ": gave up after ",
                                           absl::FormatDuration(env.retry_for)));
    }
  }
  if (int error = part.Close(); error != 0) {
    return LocalError(error, absl::StrCat("cannot write ", part_path.string()));
  }
  filled.digest = FileDigest{hasher.HexDigest(), offset};
  return filled;
}

// Downloads one artifact to <dir>/<name> through its partial file (PartFileName), which a later
// run resumes.
absl::StatusOr<Downloaded> DownloadOne(const CommandEnv& env, const std::string& job_name,
                                       const compress::v1::Artifact& artifact,
                                       const std::string& dir, int chunk_size) {
  Downloaded result;
  fs::path final_path = fs::path(dir) / artifact.name();
  fs::path part_path = fs::path(dir) / PartFileName(artifact);
  result.path = final_path.string();
  std::error_code ec;
  const fs::file_status final_status = fs::status(final_path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return LocalError(ec, absl::StrCat("cannot read ", final_path.string()));
  }
  if (fs::is_directory(final_status)) {
    return LocalError(EISDIR, absl::StrCat("cannot write ", final_path.string()));
  }
  if (fs::exists(final_status)) {
    Sha256 present;
    absl::StatusOr<int64_t> size = HashFile(final_path, -1, &present);
    if (!size.ok()) return size.status();
    const std::string sha256 = present.HexDigest();
    if (sha256 == artifact.sha256() && *size == artifact.size_bytes()) {
      result.already_present = true;
      return result;
    }
    return absl::DataLossError(
        absl::StrCat(final_path.string(), " exists with other contents (sha256 ", sha256,
                     ", expected ", artifact.sha256(), "); it was left as it is"));
  }
  // The partial file's size is where the download resumes; only a regular file has one (a
  // device or a pipe under that name would be resumed at a made-up offset, or block).
  const fs::file_status part_status = fs::status(part_path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return LocalError(ec, absl::StrCat("cannot read the size of ", part_path.string()));
  }
  if (fs::exists(part_status) && !fs::is_regular_file(part_status)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot resume ", part_path.string(), ": not a regular file, so its size is unknown"));
  }
  // Bytes an earlier run left that are not the artifact's (more of them than it has, or a whole
  // that fails the check: a damaged disk, a file copied in) are dropped once and the artifact is
  // read again from the start, so that such a file cannot make every later run fail.
  bool from_start = false;
  if (fs::is_regular_file(part_status)) {
    const uintmax_t kept = fs::file_size(part_path, ec);
    if (ec) return LocalError(ec, absl::StrCat("cannot read the size of ", part_path.string()));
    if (kept > static_cast<uintmax_t>(artifact.size_bytes())) {
      *env.err << "compressctl: download " << artifact.name() << ": " << part_path.string()
               << " holds " << kept << " bytes, more than the artifact's " << artifact.size_bytes()
               << "; downloading it again from the start\n";
      from_start = true;
    }
  }
  absl::StatusOr<Filled> filled = FillPartFile(env, job_name, artifact, part_path, chunk_size,
                                               from_start, &result.resumed_from);
  if (filled.ok() && !Matches(*filled, artifact) && result.resumed_from > 0) {
    *env.err << "compressctl: download " << artifact.name() << ": " << part_path.string()
             << " (resumed at " << result.resumed_from << " bytes) has sha256 "
             << filled->digest.sha256 << ", expected " << artifact.sha256()
             << "; downloading it again from the start\n";
    filled = FillPartFile(env, job_name, artifact, part_path, chunk_size, /*from_start=*/true,
                          &result.resumed_from);
  }
  if (!filled.ok()) return filled.status();
  if (!Matches(*filled, artifact)) {
    return absl::DataLossError(absl::StrCat(
        artifact.name(), ": downloaded ", filled->digest.size_bytes, " bytes with sha256 ",
        filled->digest.sha256, ", expected ", artifact.size_bytes(), " bytes with sha256 ",
        artifact.sha256(), "; the partial file is kept at ", part_path.string(),
        " and the next run downloads the artifact again from the start"));
  }
  fs::rename(part_path, final_path, ec);
  if (ec) {
    return LocalError(
        ec, absl::StrCat("cannot rename ", part_path.string(), " to ", final_path.string()));
  }
  return result;
}

}  // namespace

int Download(const CommandEnv& env, const DownloadArgs& args) {
  absl::StatusOr<std::string> name = JobName(args.job);
  if (!name.ok()) return ReportError(env, "download", name.status());
  compress::v1::GetJobRequest get;
  get.set_name(*name);
  compress::v1::Job job;
  // Retried like the transfers: a download started while the server restarts waits for it.
  RetrySchedule retry(env.retry_for);
  while (true) {
    auto context = env.NewContext();
    grpc::Status status = env.stub->GetJob(context.get(), get, &job);
    if (status.ok()) break;
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) {
      return ReportError(env, "download", FromGrpc(status, *name));
    }
    if (!retry.WaitForNextTry()) {
      return ReportError(env, "download",
                         FromGrpc(status, absl::StrCat(*name, ": gave up after ",
                                                       absl::FormatDuration(env.retry_for))));
    }
  }

  std::vector<compress::v1::Artifact> wanted;
  std::vector<std::string> names;
  for (const compress::v1::Artifact& artifact : job.artifacts()) {
    names.push_back(artifact.name());
    if (args.artifact.empty() || artifact.name() == args.artifact) wanted.push_back(artifact);
  }
  if (wanted.empty()) {
    absl::Status missing =
        args.artifact.empty()
            ? absl::FailedPreconditionError(
                  absl::StrCat(*name, " has no artifacts (state ", StateName(job.state()), ")"))
            : absl::NotFoundError(absl::StrCat(*name, " has no artifact ", args.artifact,
                                               " (it has: ", absl::StrJoin(names, ", "), ")"));
    return ReportError(env, "download", missing);
  }
  std::error_code ec;
  fs::create_directories(args.output_dir, ec);
  if (ec) {
    return ReportError(env, "download",
                       LocalError(ec, absl::StrCat("cannot create ", args.output_dir)));
  }

  int exit_code = kExitOk;
  for (const compress::v1::Artifact& artifact : wanted) {
    absl::StatusOr<Downloaded> done =
        DownloadOne(env, *name, artifact, args.output_dir, args.chunk_size);
    if (!done.ok()) {
      int code = ReportError(env, absl::StrCat("download ", artifact.name()), done.status());
      if (exit_code == kExitOk || code == kExitDataLoss) exit_code = code;
      continue;
    }
    if (env.output == OutputFormat::kJson) {
      nlohmann::json line = {{"name", artifact.name()},
                             {"path", done->path},
                             {"size_bytes", artifact.size_bytes()},
                             {"sha256", artifact.sha256()},
                             {"resumed_from", done->resumed_from},
                             {"already_present", done->already_present}};
      *env.out << line.dump() << "\n";
    } else {
      *env.out << (done->already_present ? "present    " : "downloaded ") << done->path << " ("
               << HumanBytes(artifact.size_bytes()) << ", sha256 " << artifact.sha256()
               << (done->resumed_from > 0 ? absl::StrCat(", resumed at ", done->resumed_from)
                                          : std::string())
               << ", verified)\n";
    }
  }
  return exit_code;
}

}  // namespace compress::client
