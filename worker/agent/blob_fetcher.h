// Fetches an uploaded blob (a teacher checkpoint, content-addressed by sha256) from the server
// into the executor's work directory, where compress-run looks for it: DIR/blobs/<sha256>
// (docs/executor-contract.md). The download goes to a ".part" file, resumes from its length
// after a transient failure, and is renamed into place only once its sha256 matches. Fetches of
// one blob into one directory take turns (an flock on DIR/blobs/<sha256>.lock): two attempts of a
// job on two devices of one agent never write the same part file, and the second finds the blob
// in place.
#ifndef COMPRESS_WORKER_AGENT_BLOB_FETCHER_H_
#define COMPRESS_WORKER_AGENT_BLOB_FETCHER_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "compress/v1/worker_service.grpc.pb.h"

namespace compress::worker {

struct BlobFetchOptions {
  // Transient errors (UNAVAILABLE, ...) are retried, with backoff, this long after the last
  // progress. A read the server cancelled (IsCancelledByServer: its idle timeout) is resumed too,
  // and opens this window afresh, at most kMaxServerCancels times.
  absl::Duration retry_for = absl::Minutes(2);
  // Deadline of one ReadBlob call.
  absl::Duration call_timeout = absl::Minutes(30);
  // Polled (from the calling thread and a helper thread) while the fetch waits or downloads;
  // when it returns true the fetch ends soon with CANCELLED. None: never.
  std::function<bool()> should_stop;
};

// Makes `work_dir`/blobs/`sha256` hold the blob. A file already there with the right digest is
// kept. NOT_FOUND when the server has no such blob; DATA_LOSS when the bytes do not hash to
// `sha256`; UNAVAILABLE after retry_for without progress, or when the server cancelled more
// than kMaxServerCancels reads in a row that brought nothing; INTERNAL for local file errors;
// CANCELLED when should_stop said so (at once). Thread-safe; concurrent fetches of one blob into one
// directory are safe (the later one waits for the earlier and then reuses its file).
absl::Status FetchBlob(compress::v1::WorkerService::StubInterface* stub,
                       const std::string& worker_id, const std::string& sha256,
                       const std::string& work_dir, const BlobFetchOptions& options = {});

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_BLOB_FETCHER_H_
