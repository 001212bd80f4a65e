// ChunkStreamReactor: streams a stored file (an artifact or a blob) in chunks from an offset.
#ifndef COMPRESS_SERVER_RPC_CHUNK_STREAM_REACTOR_H_
#define COMPRESS_SERVER_RPC_CHUNK_STREAM_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "compress/v1/compression_service.pb.h"
#include "server/core/artifact_store.h"
#include "server/core/job.h"
#include "server/rpc/file_stream_limit.h"
#include "server/rpc/thread_pool.h"

namespace compress::server {

// A file opened for a read, with what the last message says of it.
struct ChunkFile {
  // Its name, size and sha256: those of `file` (the size is `file`'s).
  Artifact description;
  std::unique_ptr<StoredFile> file;
};

// Where the bytes come from.
struct ChunkSource {
  // Opens the file, once, on the thread pool (NOT_FOUND, ... when it is not there). Every chunk is
  // read from the file it opened, so that a file replaced meanwhile is not mixed with its
  // successor.
  std::function<absl::StatusOr<ChunkFile>()> open;
  // Called with the number of data bytes of each message once it was written; may be empty.
  std::function<void(int64_t bytes)> sent;
};

// Each chunk is read on the pool, then written; one chunk is in flight at a time. The last
// message carries the whole file's size and sha256; an offset at the end of the file gives one
// message with no data and both. Deletes itself in OnDone.
class ChunkStreamReactor : public grpc::ServerWriteReactor<v1::ReadArtifactResponse> {
 public:
  // `pool` must outlive the call. `slot` is held until the call is over.
  ChunkStreamReactor(ThreadPool* pool, FileStreamLimit::Slot slot, ChunkSource source,
                     int64_t offset, int64_t chunk_size);

  void OnWriteDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  // Runs on the pool: reads the next chunk and starts its write, or finishes the call.
  void Next();

  // Given back last, once the file is closed.
  FileStreamLimit::Slot slot_;
  // Constant after construction.
  ThreadPool* const pool_;
  const ChunkSource source_;
  const int64_t chunk_size_;
  // Only touched by the single task or write in flight, one after the other.
  ChunkFile file_;  // file_.file is null until opened
  int64_t offset_;
  bool last_ = false;
  v1::ReadArtifactResponse message_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_CHUNK_STREAM_REACTOR_H_
