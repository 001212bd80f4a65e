#include "worker/agent/blob_fetcher.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/grpcpp.h"
#include "worker/agent/rpc_retry.h"
#include "worker/events/sha256.h"

namespace compress::worker {
namespace {

namespace fs = std::filesystem;

// Unlike the attempt's calls (rpc_retry.h), a read of a blob is retried on ABORTED too: it names
// no attempt.
bool IsTransientRead(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
      return true;
    default:
      return false;
  }
}

// How often a fetch waiting for another, or downloading, asks should_stop.
constexpr absl::Duration kStopPoll = absl::Milliseconds(100);

// An exclusive flock on a file, held until destruction. flock locks belong to an open file
// description, so two fetches in one process exclude each other as two processes do.
class FileLock {
 public:
  // Takes the lock on `path` (created if absent), waiting while another holds it; CANCELLED when
  // `should_stop` says so meanwhile.
  static absl::StatusOr<std::unique_ptr<FileLock>> Acquire(
      const fs::path& path, const std::function<bool()>& should_stop) {
    // O_CLOEXEC: an executor started meanwhile must not inherit, and so hold, the lock.
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return absl::InternalError(
          absl::StrCat("cannot open ", path.string(), ": ", strerror(errno)));
    }
    auto lock = std::unique_ptr<FileLock>(new FileLock(fd));
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) {
        return absl::InternalError(
            absl::StrCat("cannot lock ", path.string(), ": ", strerror(errno)));
      }
      if (should_stop && should_stop()) {
        return absl::CancelledError(absl::StrCat("stopped while waiting for ", path.string()));
      }
      absl::SleepFor(kStopPoll);
    }
    return lock;
  }
  ~FileLock() { close(fd_); }  // releases the lock
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  const int fd_;
};

// Whether `path` holds a file hashing to `sha256`.
bool HasBlob(const fs::path& path, const std::string& sha256) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return false;
  absl::StatusOr<FileDigest> digest = Sha256File(path.string());
  return digest.ok() && digest->sha256 == sha256;
}

}  // namespace

absl::Status FetchBlob(compress::v1::WorkerService::StubInterface* stub,
                       const std::string& worker_id, const std::string& sha256,
                       const std::string& work_dir, const BlobFetchOptions& options) {
  if (sha256.size() != 64 || !std::all_of(sha256.begin(), sha256.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      })) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.teacher.blob_sha256: \"", sha256, "\" is not 64 lowercase hex digits"));
  }
  const fs::path dir = fs::path(work_dir) / "blobs";
  const fs::path final_path = dir / sha256;
  const fs::path part_path = dir / (sha256 + ".part");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  if (HasBlob(final_path, sha256)) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<FileLock>> lock =
      FileLock::Acquire(dir / (sha256 + ".lock"), options.should_stop);
  if (!lock.ok()) return lock.status();
  // Another fetch may have brought the blob while this one waited.
  if (HasBlob(final_path, sha256)) return absl::OkStatus();
  fs::remove(final_path, ec);
  auto stopped = [&options] { return options.should_stop && options.should_stop(); };
  const std::string what = absl::StrCat("ReadBlob ", sha256);
  // The part file's length, where the next read starts (what is on disk, not what was sent: a
  // write the file system refused at close leaves no gap).
  auto part_size = [&part_path]() -> int64_t {
    std::error_code error;
    const uintmax_t size = fs::file_size(part_path, error);
    return error ? 0 : static_cast<int64_t>(size);
  };
  // A part file that does not hash to the blob (a corrupted or foreign part file resumed) is
  // fetched again once from the start; a second mismatch is the blob's own.
  for (int pass = 1;; ++pass) {
    int64_t offset = part_size();
    absl::Duration backoff = absl::Milliseconds(200);
    absl::Time give_up = absl::Now() + options.retry_for;
    int server_cancels = 0;
    while (true) {
      offset = part_size();
      std::ofstream out(part_path, std::ios::binary | std::ios::app);
      if (!out) return absl::InternalError(absl::StrCat("cannot write ", part_path.string()));
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           absl::ToChronoMilliseconds(options.call_timeout));
      compress::v1::ReadBlobRequest request;
      request.set_worker_id(worker_id);
      request.set_sha256(sha256);
      request.set_offset(offset);
      std::unique_ptr<grpc::ClientReaderInterface<compress::v1::ReadArtifactResponse>> reader =
          stub->ReadBlob(&context, request);
      // Ends the call early when the fetch is to stop, also while no chunk arrives.
      absl::Notification call_over;
      std::atomic<bool> stop_cancelled{false};
      std::thread watcher;
      if (options.should_stop) {
        watcher = std::thread([&] {
          while (!call_over.WaitForNotificationWithTimeout(kStopPoll)) {
            if (options.should_stop()) {
              stop_cancelled = true;
              context.TryCancel();
              return;
            }
          }
        });
      }
      compress::v1::ReadArtifactResponse chunk;
      bool progressed = false;
      int64_t size = -1;
      absl::Status broken;
      while (reader->Read(&chunk)) {
        if (chunk.offset() != offset) {
          broken = absl::InternalError(
              absl::StrCat(what, ": chunk at offset ", chunk.offset(), ", expected ", offset));
          context.TryCancel();
          break;
        }
        out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
        if (!out) {
          broken = absl::InternalError(absl::StrCat("cannot write ", part_path.string()));
          context.TryCancel();
          break;
        }
        offset += static_cast<int64_t>(chunk.data().size());
        progressed = progressed || !chunk.data().empty();
        if (chunk.size_bytes() > 0) size = chunk.size_bytes();
      }
      grpc::Status status = reader->Finish();
      call_over.Notify();
      if (watcher.joinable()) watcher.join();
      out.close();
      if (stopped()) return absl::CancelledError(absl::StrCat(what, ": stopped"));
      if (!broken.ok()) return broken;
      if (out.fail()) {
        return absl::InternalError(absl::StrCat("cannot write ", part_path.string(),
                                                " (closing it failed: a full disk?)"));
      }
      const bool cancelled_here = stop_cancelled;
      if (status.ok()) {
        if (size < 0 || offset >= size) break;
        if (!progressed) {
          return absl::DataLossError(
              absl::StrCat(what, ": ended at ", offset, " of ", size, " bytes"));
        }
        continue;
      }
      if (status.error_code() == grpc::StatusCode::OUT_OF_RANGE && offset > 0) {
        // The part file is longer than the blob: start over.
        fs::remove(part_path, ec);
        offset = 0;
        continue;
      }
      // A read that brought bytes did not stand still: the server's cancels are counted anew (a
      // restart of compressd during a long fetch is not a stall).
      if (progressed) server_cancels = 0;
      if (IsCancelledByServer(status, cancelled_here) && server_cancels < kMaxServerCancels) {
        // The server gave up on a read that stood still (its idle timeout): resumed at the part
        // file's length, in a window of its own.
        ++server_cancels;
        give_up = std::max(give_up, absl::Now() + options.retry_for);
      } else if (!IsTransientRead(status)) {
        return TransferFailure(status, cancelled_here, what);
      }
      if (progressed) {
        give_up = absl::Now() + options.retry_for;
        backoff = absl::Milliseconds(200);
      }
      if (absl::Now() + backoff > give_up) {
        return TransferFailure(status, cancelled_here, absl::StrCat(what, ": gave up"));
      }
      for (absl::Time wake = absl::Now() + backoff; absl::Now() < wake;) {
        if (stopped()) return absl::CancelledError(absl::StrCat(what, ": stopped"));
        absl::SleepFor(std::min(kStopPoll, wake - absl::Now()));
      }
      backoff = std::min(backoff * 2, absl::Seconds(5));
    }
    absl::StatusOr<FileDigest> digest = Sha256File(part_path.string());
    if (!digest.ok()) return digest.status();
    if (digest->sha256 == sha256) break;
    fs::remove(part_path, ec);
    if (pass == 1) continue;
    return absl::DataLossError(absl::StrCat(what, ": the downloaded ", digest->size_bytes,
                                            " bytes hash to ", digest->sha256, ", twice"));
  }
  fs::rename(part_path, final_path, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", part_path.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace compress::worker
