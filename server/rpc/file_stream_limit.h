// FileStreamLimit: how many streaming calls that hold a file open (ReadArtifact, ReadBlob,
// UploadArtifact, UploadBlob) may run at once, so that many clients cannot use up compressd's file
// descriptors (which its store, its log and new connections need too).
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

  // `max` calls at once (at least 1). `metrics` (may be nullptr; not owned, must outlive this)
  // shows the calls running and those refused.
  explicit FileStreamLimit(int max, Metrics* metrics = nullptr);

  // A slot for `call` (a method name, for the message), or RESOURCE_EXHAUSTED when `max` calls hold
  // one. Never waits: the client retries later.
  absl::StatusOr<Slot> Acquire(absl::string_view call);

  int max() const { return max_; }
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

// limit->Acquire(call), or an empty slot when `limit` is nullptr (no limit).
absl::StatusOr<FileStreamLimit::Slot> AcquireFileStream(FileStreamLimit* limit,
                                                        absl::string_view call);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_FILE_STREAM_LIMIT_H_
