// CompressionServiceImpl: compress.v1.CompressionService on gRPC's callback API.
//
// This layer only translates: it authorizes and validates requests, calls the core (Scheduler,
// JobStore, ArtifactStore) on the thread pool, and turns results into messages and absl::Status
// into grpc::Status. Every method first authorizes its caller (authenticator.h); a caller that
// is not an admin sees and touches only its tenant's jobs and blobs, and another tenant's job is
// NOT_FOUND, as if it did not exist.
#ifndef COMPRESS_SERVER_RPC_COMPRESSION_SERVICE_H_
#define COMPRESS_SERVER_RPC_COMPRESSION_SERVICE_H_

#include <cstdint>

#include "compress/v1/compression_service.grpc.pb.h"
#include "server/core/artifact_store.h"
#include "server/core/data_roots.h"
#include "server/core/metrics.h"
#include "server/core/scheduler.h"
#include "server/rpc/authenticator.h"
#include "server/rpc/file_stream_limit.h"
#include "server/rpc/thread_pool.h"

namespace compress::server {

class CompressionServiceImpl final : public v1::CompressionService::CallbackService {
 public:
  struct Options {
    // Chunks of ReadArtifact: the default, and the most a client may ask for (kept under gRPC's
    // default 4 MiB message limit).
    int64_t default_chunk_bytes = 1 << 20;
    int64_t max_chunk_bytes = 3 << 20;
    // Counts the bytes ReadArtifact sends; may be nullptr. Not owned; must outlive the service.
    Metrics* metrics = nullptr;
    // Checks every call's bearer token and gives the caller's tenant; nullptr = no
    // authentication (every caller sees every tenant). Not owned; must outlive the service.
    const Authenticator* authenticator = nullptr;
    // Caps the calls that hold a file open (reads and uploads of artifacts and blobs); nullptr =
    // no cap. Not owned; must outlive the service.
    FileStreamLimit* file_streams = nullptr;
    // Where paths in job specs must lie; nullptr = anywhere. Not owned; must outlive the service.
    const DataRoots* data_roots = nullptr;
    // UploadBlob ends RESOURCE_EXHAUSTED once a blob would exceed this many bytes; 0 = no limit.
    int64_t max_blob_bytes = 0;
    // A ListJobs response ends before the job that would take it over this many bytes
    // (serialized, its page token included), and its page token continues with that job; a
    // response holds one job at least, whatever its size. 0 = page_size alone bounds a response.
    // The default stays under gRPC's default 4 MiB message limit.
    int64_t max_list_response_bytes = (4 << 20) - 4096;
  };

  // None is owned; all must outlive the service.
  CompressionServiceImpl(Scheduler* scheduler, ArtifactStore* artifacts, ThreadPool* pool,
                         const Options& options);

  grpc::ServerUnaryReactor* CreateJob(grpc::CallbackServerContext* context,
                                      const v1::CreateJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* DeleteJob(grpc::CallbackServerContext* context,
                                      const v1::DeleteJobRequest* request,
                                      google::protobuf::Empty* response) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext* context,
                                                   const v1::WatchJobRequest* request) override;
  grpc::ServerWriteReactor<v1::ReadArtifactResponse>* ReadArtifact(
      grpc::CallbackServerContext* context, const v1::ReadArtifactRequest* request) override;
  grpc::ServerReadReactor<v1::UploadBlobRequest>* UploadBlob(grpc::CallbackServerContext* context,
                                                             v1::Blob* response) override;

 private:
  // The job `id` when `caller` may see it; NOT_FOUND otherwise.
  absl::StatusOr<Job> VisibleJob(const Caller& caller, const std::string& id) const;

  Scheduler* const scheduler_;
  ArtifactStore* const artifacts_;
  ThreadPool* const pool_;
  const Options options_;
  // Used when Options::data_roots is nullptr: no roots.
  const DataRoots no_data_roots_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_COMPRESSION_SERVICE_H_
