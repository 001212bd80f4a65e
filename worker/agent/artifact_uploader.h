// ArtifactUploader: verifies an artifact the executor announced and uploads it with
// WorkerService.UploadArtifact (a header message, then data chunks).
#ifndef COMPRESS_WORKER_AGENT_ARTIFACT_UPLOADER_H_
#define COMPRESS_WORKER_AGENT_ARTIFACT_UPLOADER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "compress/v1/worker_service.grpc.pb.h"
#include "worker/agent/rpc_retry.h"

namespace compress::worker {

// Thread-compatible: one upload at a time per object.
class ArtifactUploader {
 public:
  struct Options {
    // Bytes per data message.
    size_t chunk_bytes = 1 << 20;
    // Deadline of one upload call: this much plus one second per MiB.
    absl::Duration rpc_timeout = absl::Seconds(30);
    // Transient failures (server away) are retried with backoff for this long. A try the server
    // cancelled (IsCancelledByServer: its idle timeout) is retried too, and opens this window
    // afresh, at most kMaxServerCancels times.
    absl::Duration retry_for = absl::Minutes(5);
    absl::Duration initial_backoff = absl::Milliseconds(200);
    absl::Duration max_backoff = absl::Seconds(5);
  };

  // What the executor's `artifact` event announced.
  struct Announced {
    std::string name;
    std::string path;
    std::string sha256;
    int64_t size_bytes = 0;
  };

  // `stub` is not owned and must outlive the uploader. `should_stop` (called from the uploading
  // thread and from a watcher thread of each call) is polled between tries and while a call runs:
  // once it is true, the call is cancelled and Upload() returns CANCELLED within moments.
  ArtifactUploader(compress::v1::WorkerService::StubInterface* stub, AttemptKey key,
                   const Options& options, std::function<bool()> should_stop);

  // Checks that the file's sha256 and size are what was announced (DATA_LOSS naming the file
  // if not; NOT_FOUND if it is missing), then uploads it, restarting the upload after transient
  // failures and after the server cancelled it. A file whose size changes while it is uploaded
  // ends the upload with DATA_LOSS naming the file, its size when verified and now (never
  // retried: this side cancels the call, and that CANCELLED is not the server's). Other failures
  // are returned as the server gave them (ABORTED: the attempt is gone); CANCELLED once
  // `should_stop` said so, at once; UNAVAILABLE after the server cancelled more than
  // kMaxServerCancels tries.
  absl::Status Upload(const Announced& artifact);

 private:
  // One try. `*cancelled_here` says whether this side cancelled the call (a stop, or a file that
  // changed), so that a CANCELLED from the server can be told from it.
  grpc::Status UploadOnce(const Announced& artifact, bool* cancelled_here);

  compress::v1::WorkerService::StubInterface* const stub_;
  const AttemptKey key_;
  const Options options_;
  const std::function<bool()> should_stop_;
};

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_ARTIFACT_UPLOADER_H_
