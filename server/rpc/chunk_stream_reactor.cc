#include "server/rpc/chunk_stream_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/rpc/status_util.h"

namespace compress::server {

ChunkStreamReactor::ChunkStreamReactor(ThreadPool* pool, FileStreamLimit::Slot slot,
                                       ChunkSource source, int64_t offset, int64_t chunk_size)
    : slot_(std::move(slot)),
      pool_(pool),
      source_(std::move(source)),
      chunk_size_(chunk_size),
      offset_(offset) {
  pool_->Schedule([this] { Next(); });
}

void ChunkStreamReactor::Next() {
  if (file_.file == nullptr) {
    absl::StatusOr<ChunkFile> file = source_.open();
    if (!file.ok()) {
      Finish(ToGrpcStatus(file.status()));
      return;
    }
    file_ = *std::move(file);
    if (offset_ > file_.description.size_bytes) {
      Finish(ToGrpcStatus(absl::OutOfRangeError(
          absl::StrCat("offset: ", offset_, " is past the end of ", file_.description.name, " (",
                       file_.description.size_bytes, " bytes)"))));
      return;
    }
  }
  absl::StatusOr<std::string> data = file_.file->Read(offset_, chunk_size_);
  if (!data.ok()) {
    Finish(ToGrpcStatus(data.status()));
    return;
  }
  message_.Clear();
  message_.set_offset(offset_);
  offset_ += static_cast<int64_t>(data->size());
  if (offset_ >= file_.description.size_bytes) {
    last_ = true;
    message_.set_size_bytes(file_.description.size_bytes);
    message_.set_sha256(file_.description.sha256);
  } else if (data->empty()) {
    // Stored files are never written in place: the disk lost part of it.
    Finish(ToGrpcStatus(
        absl::DataLossError(absl::StrCat(file_.description.name, " ended at ", offset_, " bytes, ",
                                         file_.description.size_bytes, " were recorded"))));
    return;
  }
  message_.set_data(*std::move(data));
  StartWrite(&message_);
}

void ChunkStreamReactor::OnWriteDone(bool ok) {
  if (ok) slot_.Progress();
  if (ok && source_.sent) source_.sent(static_cast<int64_t>(message_.data().size()));
  if (!ok) {
    Finish(grpc::Status::CANCELLED);
  } else if (last_) {
    Finish(grpc::Status::OK);
  } else {
    pool_->Schedule([this] { Next(); });
  }
}

}  // namespace compress::server
