#include "server/rpc/file_stream_limit.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/core/metrics.h"

namespace compress::server {

FileStreamLimit::Slot& FileStreamLimit::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    Release();
    limit_ = other.limit_;
    other.limit_ = nullptr;
  }
  return *this;
}

void FileStreamLimit::Slot::Release() {
  if (limit_ == nullptr) return;
  limit_->Release();
  limit_ = nullptr;
}

FileStreamLimit::FileStreamLimit(int max, Metrics* metrics)
    : max_(std::max(1, max)), metrics_(metrics) {
  if (metrics_ != nullptr) metrics_->FileStreamsAllowed(max_);
}

absl::StatusOr<FileStreamLimit::Slot> FileStreamLimit::Acquire(absl::string_view call,
                                                               Party party) {
  const int places = party == Party::kWorker ? max_ : client_max();
  int current = in_use_.load(std::memory_order_relaxed);
  do {
    if (current >= places) {
      if (metrics_ != nullptr) metrics_->FileStreamRefused();
      if (places == max_) {
        return absl::ResourceExhaustedError(absl::StrCat(
            call, ": compressd is serving ", current,
            " file transfers (reads and uploads of artifacts and blobs) at once, its limit "
            "(--max_file_streams=", max_, "); retry when one has finished"));
      }
      return absl::ResourceExhaustedError(absl::StrCat(
          call, ": compressd is serving ", current,
          " file transfers (reads and uploads of artifacts and blobs) at once; clients may take ",
          places, " of its ", max_, " (--max_file_streams; the rest are kept for workers); retry "
          "when one has finished"));
    }
  } while (!in_use_.compare_exchange_weak(current, current + 1, std::memory_order_relaxed));
  if (metrics_ != nullptr) metrics_->FileStreamOpened();
  return Slot(this);
}

void FileStreamLimit::Release() {
  in_use_.fetch_sub(1, std::memory_order_relaxed);
  if (metrics_ != nullptr) metrics_->FileStreamClosed();
}

absl::StatusOr<FileStreamLimit::Slot> AcquireFileStream(FileStreamLimit* limit,
                                                        absl::string_view call,
                                                        FileStreamLimit::Party party) {
  if (limit == nullptr) return FileStreamLimit::Slot();
  return limit->Acquire(call, party);
}

int FileStreamLimit::DefaultMax(long long open_files) {
  long long half = (open_files - 128) / 2;
  return static_cast<int>(std::clamp<long long>(half, 16, 4096));
}

}  // namespace compress::server
