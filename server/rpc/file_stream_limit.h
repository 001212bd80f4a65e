// FileStreamLimit: how many streaming calls that hold a file open (ReadArtifact, ReadBlob,
// UploadArtifact, UploadBlob) may run at once, so that many clients cannot use up compressd's file
// descriptors (which its store, its log and new connections need too). A quarter of the places are
// kept for workers (UploadArtifact, ReadBlob), so that a crowd of downloads does not hold up the
// jobs' own uploads.
#ifndef COMPRESS_SERVER_RPC_FILE_STREAM_LIMIT_H_
#define COMPRESS_SERVER_RPC_FILE_STREAM_LIMIT_H_

#include <atomic>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace compress::server {

class Metrics;

// Thread-safe.
class FileStreamLimit {
 public:
  // A place of one call; gives it back when destroyed. An empty Slot (default-built or moved
  // from) gives nothing back.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept : limit_(other.limit_) { other.limit_ = nullptr; }
    Slot& operator=(Slot&& other) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { Release(); }

   private:
    friend class FileStreamLimit;
    explicit Slot(FileStreamLimit* limit) : limit_(limit) {}
    void Release();

    FileStreamLimit* limit_ = nullptr;
  };

  // Whose call asks: workers may take every place, clients all but max / 4.
  enum class Party { kClient, kWorker };

  // `max` calls at once (at least 1). `metrics` (may be nullptr; not owned, must outlive this)
  // shows the calls running and those refused.
  explicit FileStreamLimit(int max, Metrics* metrics = nullptr);

  // A slot for `call` (a method name, for the message), or RESOURCE_EXHAUSTED when the places
  // `party` may take are all held. Never waits: the caller retries later.
  absl::StatusOr<Slot> Acquire(absl::string_view call, Party party);

  int max() const { return max_; }
  // The places clients may take: max() less those kept for workers.
  int client_max() const { return max_ - max_ / 4; }
  int in_use() const { return in_use_.load(std::memory_order_relaxed); }

  // The default of compressd's --max_file_streams for a process that may have `open_files` file
  // descriptors (RLIMIT_NOFILE): (open_files - 128) / 2, keeping 128 and one per transfer for the
  // store, logs and sockets; at least 16 and at most 4096.
  static int DefaultMax(long long open_files);

 private:
  void Release();

  const int max_;
  Metrics* const metrics_;
  std::atomic<int> in_use_{0};
};

// limit->Acquire(call, party), or an empty slot when `limit` is nullptr (no limit).
absl::StatusOr<FileStreamLimit::Slot> AcquireFileStream(FileStreamLimit* limit,
                                                        absl::string_view call,
                                                        FileStreamLimit::Party party);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_FILE_STREAM_LIMIT_H_
