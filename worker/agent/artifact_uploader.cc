#include "worker/agent/artifact_uploader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/client_context.h"
#include "worker/events/sha256.h"

namespace compress::worker {
namespace {

// How often `should_stop` is polled while an upload call runs or a retry waits.
constexpr absl::Duration kStopPollInterval = absl::Milliseconds(100);

}  // namespace

ArtifactUploader::ArtifactUploader(compress::v1::WorkerService::StubInterface* stub, AttemptKey key,
                                   const Options& options, std::function<bool()> should_stop)
    : stub_(stub), key_(std::move(key)), options_(options), should_stop_(std::move(should_stop)) {}

absl::Status ArtifactUploader::Upload(const Announced& artifact) {
  absl::StatusOr<FileDigest> digest = Sha256File(artifact.path);
  if (!digest.ok()) return digest.status();
  if (digest->sha256 != artifact.sha256 || digest->size_bytes != artifact.size_bytes) {
    return absl::DataLossError(absl::StrCat(
        "artifact ", artifact.name, " (", artifact.path, ") has sha256 ", digest->sha256,
        " and size ", digest->size_bytes, " but the executor announced sha256 ", artifact.sha256,
        " and size ", artifact.size_bytes));
  }
  Backoff backoff(options_.initial_backoff, options_.max_backoff);
  absl::Time give_up = absl::Now() + options_.retry_for;
  auto stopped = [this, &artifact] {
    return absl::CancelledError(
        absl::StrCat("uploading artifact ", artifact.name, " of ", key_.job, ": stopped"));
  };
  int server_cancels = 0;
  while (true) {
    if (should_stop_()) return stopped();
    bool cancelled_here = false;
    grpc::Status status = UploadOnce(artifact, &cancelled_here);
    if (status.ok()) return absl::OkStatus();
    if (should_stop_()) return stopped();
    absl::Duration delay = backoff.Next();
    bool retry = IsTransient(status);
    if (IsCancelledByServer(status, cancelled_here) && server_cancels < kMaxServerCancels) {
      // The server gave up on a try that stood still (its idle timeout): a window of its own.
      ++server_cancels;
      give_up = std::max(give_up, absl::Now() + options_.retry_for);
      retry = true;
    }
    if (!retry || absl::Now() + delay > give_up) {
      return TransferFailure(status, cancelled_here,
                             absl::StrCat("uploading artifact ", artifact.name, " of ", key_.job));
    }
    for (absl::Time wake = absl::Now() + delay; absl::Now() < wake;) {
      if (should_stop_()) return stopped();
      absl::SleepFor(std::min(kStopPollInterval, wake - absl::Now()));
    }
  }
}

grpc::Status ArtifactUploader::UploadOnce(const Announced& artifact, bool* cancelled_here) {
  *cancelled_here = false;
  const int fd = open(artifact.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("cannot open ", artifact.path, ": ", std::strerror(errno)));
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { close(fd); }
  } closer{fd};
  grpc::ClientContext context;
  absl::Duration timeout =
      options_.rpc_timeout + absl::Seconds(static_cast<double>(artifact.size_bytes) / (1 << 20));
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  compress::v1::Artifact response;
  std::unique_ptr<grpc::ClientWriterInterface<compress::v1::UploadArtifactRequest>> writer =
      stub_->UploadArtifact(&context, &response);
  // A stop cancels the call wherever it blocks (a Write held by flow control, Finish): an
  // artifact of gigabytes must not hold up a cancelled or stopping attempt until it is sent.
  absl::Notification call_done;
  std::atomic<bool> stop_cancelled{false};
  std::thread stop_watch([this, &context, &call_done, &stop_cancelled] {
    while (!call_done.WaitForNotificationWithTimeout(kStopPollInterval)) {
      if (should_stop_()) {
        stop_cancelled = true;
        context.TryCancel();
        return;
      }
    }
  });

  compress::v1::UploadArtifactRequest header_message;
  compress::v1::UploadArtifactRequest::Header* header = header_message.mutable_header();
  key_.SetOn(*header);
  header->set_artifact_name(artifact.name);
  header->set_size_bytes(artifact.size_bytes);
  header->set_sha256(artifact.sha256);
  bool stream_ok = writer->Write(header_message);

  // Exactly the announced bytes are sent: never more, which the server would refuse. The file
  // was verified before this try; one that is shorter or longer now changed since (an executor
  // left behind still writing, a disk fault), and what is sent is not the artifact. Its size is
  // looked at again before the last chunk goes: an upload seen to have changed then lacks bytes,
  // so that no server can complete it, even one that takes this side's cancel for the end of
  // the stream. This side's status is the answer, not the CANCELLED its own cancel brings back.
  grpc::Status failure_here;
  auto changed = [&artifact, fd](int64_t could_read) {
    struct stat st;
    const bool stat_ok = fstat(fd, &st) == 0;
    if (stat_ok && st.st_size == artifact.size_bytes && could_read == artifact.size_bytes) {
      return grpc::Status::OK;
    }
    std::string message =
        absl::StrCat(artifact.path, " changed while it was uploaded: ", artifact.size_bytes,
                     " bytes when verified, ");
    if (stat_ok) {
      absl::StrAppend(&message, static_cast<int64_t>(st.st_size), " bytes now");
    } else {
      absl::StrAppend(&message, "size now unknown (", std::strerror(errno), ")");
    }
    if (could_read != artifact.size_bytes) {
      absl::StrAppend(&message, "; ", could_read, " bytes could be read");
    }
    return grpc::Status(grpc::StatusCode::DATA_LOSS, message);
  };
  std::vector<char> buffer(options_.chunk_bytes);
  int64_t sent = 0;
  bool checked = false;
  while (stream_ok && sent < artifact.size_bytes) {
    const size_t want =
        static_cast<size_t>(std::min<int64_t>(buffer.size(), artifact.size_bytes - sent));
    const ssize_t n = read(fd, buffer.data(), want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      failure_here = grpc::Status(grpc::StatusCode::INTERNAL,
                                  absl::StrCat("cannot read ", artifact.path, " after ", sent,
                                               " bytes: ", std::strerror(errno)));
      checked = true;
      break;
    }
    if (n == 0) break;  // shorter than verified: said below
    if (sent + n == artifact.size_bytes) {
      failure_here = changed(artifact.size_bytes);
      checked = true;
      if (!failure_here.ok()) break;
    }
    compress::v1::UploadArtifactRequest chunk;
    chunk.set_data(buffer.data(), static_cast<size_t>(n));
    stream_ok = writer->Write(chunk);
    sent += n;
  }
  if (stream_ok && !checked) failure_here = changed(sent);  // shorter, or an empty artifact
  if (!failure_here.ok()) context.TryCancel();
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  call_done.Notify();
  stop_watch.join();
  *cancelled_here = !failure_here.ok() || stop_cancelled;
  if (!failure_here.ok()) return failure_here;
  return status;
}

}  // namespace compress::worker
