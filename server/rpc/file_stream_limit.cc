#include "server/rpc/file_stream_limit.h"

#include <grpcpp/server_context.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/core/metrics.h"

namespace compress::server {

FileStreamLimit::Slot& FileStreamLimit::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    Release();
    limit_ = other.limit_;
    id_ = other.id_;
    other.limit_ = nullptr;
  }
  return *this;
}

void FileStreamLimit::Slot::Progress() {
  if (limit_ != nullptr) limit_->Progress(id_);
}

void FileStreamLimit::Slot::Release() {
  if (limit_ == nullptr) return;
  limit_->Release(id_);
  limit_ = nullptr;
}

FileStreamLimit::FileStreamLimit(const Options& options)
    : max_(std::max(1, options.max)),
      idle_timeout_(options.idle_timeout),
      metrics_(options.metrics) {
  if (metrics_ != nullptr) metrics_->FileStreamsAllowed(max_);
  if (idle_timeout_ != absl::InfiniteDuration())
    idle_watch_ = std::thread([this] { CancelIdle(); });
}

FileStreamLimit::~FileStreamLimit() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (idle_watch_.joinable()) idle_watch_.join();
}

absl::StatusOr<FileStreamLimit::Slot> FileStreamLimit::Acquire(absl::string_view call, Party party,
                                                               grpc::ServerContextBase* context) {
  const int places = party == Party::kWorker ? max_ : client_max();
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    const int current = static_cast<int>(transfers_.size());
    if (current >= places) {
      if (metrics_ != nullptr) metrics_->FileStreamRefused();
      if (places == max_) {
        return absl::ResourceExhaustedError(absl::StrCat(
            call, ": compressd is serving ", current,
            " file transfers (reads and uploads of artifacts and blobs) at once, its limit "
            "(--max_file_streams=",
            max_, "); retry when one has finished"));
      }
      return absl::ResourceExhaustedError(absl::StrCat(
          call, ": compressd is serving ", current,
          " file transfers (reads and uploads of artifacts and blobs) at once; clients may take ",
          places, " of its ", max_,
          " (--max_file_streams; the rest are kept for workers); retry when one has finished"));
    }
    id = next_id_++;
    transfers_[id] = Transfer{std::string(call), context, std::chrono::steady_clock::now()};
  }
  if (metrics_ != nullptr) metrics_->FileStreamOpened();
  return Slot(this, id);
}

int FileStreamLimit::in_use() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(transfers_.size());
}

void FileStreamLimit::Progress(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = transfers_.find(id);
  if (it != transfers_.end()) it->second.last_progress = std::chrono::steady_clock::now();
}

void FileStreamLimit::Release(uint64_t id) {
  {
    absl::MutexLock lock(&mu_);
    auto it = transfers_.find(id);
    if (it != transfers_.end() && it->second.pinned) {
      if (std::this_thread::get_id() == idle_watch_id_) {
        it->second.released = true;  // erased by CancelIdle once TryCancel has returned
        it = transfers_.end();
      } else {
        Transfer* transfer = &it->second;
        mu_.Await(absl::Condition(
            +[](Transfer* t) { return !t->pinned; }, transfer));
      }
    }
    if (it != transfers_.end()) transfers_.erase(it);
  }
  if (metrics_ != nullptr) metrics_->FileStreamClosed();
}

void FileStreamLimit::CancelIdle() {
  const absl::Duration period =
      std::clamp(idle_timeout_ / 4, absl::Milliseconds(10), absl::Seconds(5));
  const auto timeout = absl::ToChronoNanoseconds(idle_timeout_);
  absl::MutexLock lock(&mu_);
  idle_watch_id_ = std::this_thread::get_id();
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), period)) {
    std::vector<std::string> cancelled;
    // One transfer at a time, chosen afresh under mu_: while it is released for TryCancel, other
    // transfers may end (and be erased) or move again.
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      auto it = std::find_if(transfers_.begin(), transfers_.end(), [&](const auto& entry) {
        const Transfer& t = entry.second;
        return !t.cancelled && t.context != nullptr && now - t.last_progress > timeout;
      });
      if (it == transfers_.end()) break;
      const uint64_t id = it->first;
      Transfer& transfer = it->second;
      transfer.cancelled = true;
      transfer.pinned = true;
      grpc::ServerContextBase* context = transfer.context;
      cancelled.push_back(transfer.call);
      // TryCancel may run the call's callbacks, which release its slot, on this thread: mu_ is
      // not held across it. A release on another thread waits until the transfer is unpinned.
      mu_.Unlock();
      context->TryCancel();
      mu_.Lock();
      it = transfers_.find(id);  // a pinned transfer is erased only here
      if (it != transfers_.end()) {
        it->second.pinned = false;
        if (it->second.released) transfers_.erase(it);
      }
    }
    if (cancelled.empty()) continue;
    mu_.Unlock();
    for (const std::string& call : cancelled) {
      std::fprintf(stderr,
                   "compressd: %s moved nothing for %s (--file_stream_idle_timeout): cancelled\n",
                   call.c_str(), absl::FormatDuration(idle_timeout_).c_str());
      if (metrics_ != nullptr) metrics_->FileStreamIdleCancelled();
    }
    mu_.Lock();
  }
}

absl::StatusOr<FileStreamLimit::Slot> AcquireFileStream(FileStreamLimit* limit,
                                                        absl::string_view call,
                                                        FileStreamLimit::Party party,
                                                        grpc::ServerContextBase* context) {
  if (limit == nullptr) return FileStreamLimit::Slot();
  return limit->Acquire(call, party, context);
}

int FileStreamLimit::DefaultMax(long long open_files) {
  long long half = (open_files - 128) / 2;
  return static_cast<int>(std::clamp<long long>(half, 16, 4096));
}

}  // namespace compress::server
