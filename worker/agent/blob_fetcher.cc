#include "worker/agent/blob_fetcher.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "worker/events/sha256.h"

namespace compress::worker {
namespace {

namespace fs = std::filesystem;

bool IsTransient(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
      return true;
    default:
      return false;
  }
}

absl::Status FromGrpc(const grpc::Status& status, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

}  // namespace

absl::Status FetchBlob(compress::v1::WorkerService::StubInterface* stub,
                       const std::string& worker_id, const std::string& sha256,
                       const std::string& work_dir, const BlobFetchOptions& options) {
  if (sha256.size() != 64 || !std::all_of(sha256.begin(), sha256.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      })) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.teacher.blob_sha256: \"", sha256, "\" is not 64 lowercase hex digits"));
  }
  const fs::path dir = fs::path(work_dir) / "blobs";
  const fs::path final_path = dir / sha256;
  const fs::path part_path = dir / (sha256 + ".part");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  if (fs::exists(final_path, ec)) {
    absl::StatusOr<FileDigest> digest = Sha256File(final_path.string());
    if (digest.ok() && digest->sha256 == sha256) return absl::OkStatus();
    fs::remove(final_path, ec);
  }
  const std::string what = absl::StrCat("ReadBlob ", sha256);
  int64_t offset =
      fs::exists(part_path, ec) ? static_cast<int64_t>(fs::file_size(part_path, ec)) : 0;
  absl::Duration backoff = absl::Milliseconds(200);
  absl::Time give_up = absl::Now() + options.retry_for;
  while (true) {
    std::ofstream out(part_path, std::ios::binary | std::ios::app);
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", part_path.string()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoMilliseconds(options.call_timeout));
    compress::v1::ReadBlobRequest request;
    request.set_worker_id(worker_id);
    request.set_sha256(sha256);
    request.set_offset(offset);
    std::unique_ptr<grpc::ClientReaderInterface<compress::v1::ReadArtifactResponse>> reader =
        stub->ReadBlob(&context, request);
    compress::v1::ReadArtifactResponse chunk;
    bool progressed = false;
    int64_t size = -1;
    absl::Status broken;
    while (reader->Read(&chunk)) {
      if (chunk.offset() != offset) {
        broken = absl::InternalError(
            absl::StrCat(what, ": chunk at offset ", chunk.offset(), ", expected ", offset));
        context.TryCancel();
        break;
      }
      out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
      if (!out) {
        broken = absl::InternalError(absl::StrCat("cannot write ", part_path.string()));
        context.TryCancel();
        break;
      }
      offset += static_cast<int64_t>(chunk.data().size());
      progressed = progressed || !chunk.data().empty();
      if (chunk.size_bytes() > 0) size = chunk.size_bytes();
    }
    grpc::Status status = reader->Finish();
    out.close();
    if (!broken.ok()) return broken;
    if (status.ok()) {
      if (size < 0 || offset >= size) break;
      if (!progressed) {
        return absl::DataLossError(
            absl::StrCat(what, ": ended at ", offset, " of ", size, " bytes"));
      }
      continue;
    }
    if (status.error_code() == grpc::StatusCode::OUT_OF_RANGE && offset > 0) {
      // The part file is longer than the blob: start over.
      fs::remove(part_path, ec);
      offset = 0;
      continue;
    }
    if (!IsTransient(status)) return FromGrpc(status, what);
    if (progressed) {
      give_up = absl::Now() + options.retry_for;
      backoff = absl::Milliseconds(200);
    }
    if (absl::Now() + backoff > give_up) return FromGrpc(status, absl::StrCat(what, ": gave up"));
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
  absl::StatusOr<FileDigest> digest = Sha256File(part_path.string());
  if (!digest.ok()) return digest.status();
  if (digest->sha256 != sha256) {
    fs::remove(part_path, ec);
    return absl::DataLossError(absl::StrCat(what, ": the downloaded ", digest->size_bytes,
                                            " bytes hash to ", digest->sha256));
  }
  fs::rename(part_path, final_path, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", part_path.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace compress::worker
