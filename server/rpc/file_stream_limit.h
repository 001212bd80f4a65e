// FileStreamLimit: how many streaming calls that hold a file open (ReadArtifact, ReadBlob,
// UploadArtifact, UploadBlob) may run at once, so that many clients cannot use up compressd's file
// descriptors (which its store, its log and new connections need too). A quarter of the places are
// kept for workers (UploadArtifact, ReadBlob), so that a crowd of downloads does not hold up the
// jobs' own uploads. A transfer that makes no progress (a chunk written or read) for the idle
// timeout is cancelled, so that stalled clients cannot hold the places for ever.
#ifndef COMPRESS_SERVER_RPC_FILE_STREAM_LIMIT_H_
#define COMPRESS_SERVER_RPC_FILE_STREAM_LIMIT_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace grpc {
class ServerContextBase;
}  // namespace grpc

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
    Slot(Slot&& other) noexcept : limit_(other.limit_), id_(other.id_) { other.limit_ = nullptr; }
    Slot& operator=(Slot&& other) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { Release(); }

    // The call moved a chunk: its idle time starts over.
    void Progress();

   private:
    friend class FileStreamLimit;
    Slot(FileStreamLimit* limit, uint64_t id) : limit_(limit), id_(id) {}
    void Release();

    FileStreamLimit* limit_ = nullptr;
    uint64_t id_ = 0;
  };

  // Whose call asks: workers may take every place, clients all but max / 4 (rounded down, so
  // none are kept below 4 places).
  enum class Party { kClient, kWorker };

  struct Options {
    // Calls at once (at least 1).
    int max = 1;
    // A call with no progress for this long is cancelled (its context's TryCancel); infinite =
    // never.
    absl::Duration idle_timeout = absl::InfiniteDuration();
    // Shows the calls running, refused and cancelled; may be nullptr. Not owned; must outlive
    // this.
    Metrics* metrics = nullptr;
  };

  explicit FileStreamLimit(const Options& options);
  explicit FileStreamLimit(int max) : FileStreamLimit(Options{max}) {}
  ~FileStreamLimit();
  FileStreamLimit(const FileStreamLimit&) = delete;
  FileStreamLimit& operator=(const FileStreamLimit&) = delete;

  // A slot for `call` (a method name, for the messages), or RESOURCE_EXHAUSTED when the places
  // `party` may take are all held. Never waits: the caller retries later. `context` (may be
  // nullptr) is cancelled when the call stays idle too long; it must stay valid while the slot
  // is held.
  absl::StatusOr<Slot> Acquire(absl::string_view call, Party party,
                               grpc::ServerContextBase* context = nullptr);

  int max() const { return max_; }
  // The places clients may take: max() less those kept for workers.
  int client_max() const { return max_ - max_ / 4; }
  int in_use() const;

  // The default of compressd's --max_file_streams for a process that may have `open_files` file
  // descriptors (RLIMIT_NOFILE): (open_files - 128) / 2, keeping 128 and one per transfer for the
  // store, logs and sockets; at least 16 and at most 4096.
  static int DefaultMax(long long open_files);

 private:
  struct Transfer {
    std::string call;
    grpc::ServerContextBase* context = nullptr;
    // Monotonic: a step of the system clock neither cancels every transfer nor none.
    std::chrono::steady_clock::time_point last_progress;
    bool cancelled = false;
    // Being cancelled by the idle watch, outside mu_: the slot's release waits (the context must
    // outlive TryCancel), or, when the release runs inside TryCancel on the watch's own thread, is
    // left to the watch (`released`).
    bool pinned = false;
    bool released = false;
  };

  void Release(uint64_t id);
  void Progress(uint64_t id);
  // Cancels the transfers idle for longer than the timeout, until the limit is destroyed.
  void CancelIdle();

  const int max_;
  const absl::Duration idle_timeout_;
  Metrics* const metrics_;
  mutable absl::Mutex mu_;
  std::map<uint64_t, Transfer> transfers_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The idle watch's thread, set by that thread itself (Release compares it with its own).
  std::thread::id idle_watch_id_ ABSL_GUARDED_BY(mu_);
  std::thread idle_watch_;  // runs while idle_timeout_ is finite
};

// limit->Acquire(call, party, context), or an empty slot when `limit` is nullptr (no limit).
absl::StatusOr<FileStreamLimit::Slot> AcquireFileStream(FileStreamLimit* limit,
                                                        absl::string_view call,
                                                        FileStreamLimit::Party party,
                                                        grpc::ServerContextBase* context = nullptr);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_FILE_STREAM_LIMIT_H_
