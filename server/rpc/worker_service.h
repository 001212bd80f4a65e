// WorkerServiceImpl: compress.v1.WorkerService (the protocol of worker agents) on gRPC's
// callback API.
#ifndef COMPRESS_SERVER_RPC_WORKER_SERVICE_H_
#define COMPRESS_SERVER_RPC_WORKER_SERVICE_H_

#include <cstdint>

#include "absl/time/time.h"
#include "compress/v1/worker_service.grpc.pb.h"
#include "server/core/artifact_store.h"
#include "server/core/executor_events.h"
#include "server/core/metrics.h"
#include "server/core/scheduler.h"
#include "server/rpc/authenticator.h"
#include "server/rpc/file_stream_limit.h"
#include "server/rpc/thread_pool.h"

namespace compress::server {

class WorkerServiceImpl final : public v1::WorkerService::CallbackService {
 public:
  struct Options {
    // The longest LeaseJob long-poll (the proto says at most 30 seconds).
    int max_wait_seconds = 30;
    // A long poll ends this long before the client's deadline.
    absl::Duration deadline_margin = absl::Milliseconds(500);
    // Chunk size of ReadBlob.
    int64_t chunk_bytes = 1 << 20;
    // The largest CompleteAttempt report_json kept in a job's record (a note in its place beyond).
    size_t max_report_json_bytes = kMaxReportJsonBytes;
    // Counts the bytes UploadArtifact receives; may be nullptr. Not owned; must outlive the
    // service.
    Metrics* metrics = nullptr;
    // Checks every call's bearer token (role worker or admin); nullptr = no authentication.
    // Not owned; must outlive the service.
    const Authenticator* authenticator = nullptr;
    // Caps the calls that hold a file open (reads and uploads of artifacts and blobs); nullptr =
    // no cap. Not owned; must outlive the service.
    FileStreamLimit* file_streams = nullptr;
  };

  // None is owned; all must outlive the service.
  WorkerServiceImpl(Scheduler* scheduler, ArtifactStore* artifacts, ThreadPool* pool,
                    const Options& options);

  grpc::ServerUnaryReactor* LeaseJob(grpc::CallbackServerContext* context,
                                     const v1::LeaseJobRequest* request,
                                     v1::LeaseJobResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* ReportEvents(grpc::CallbackServerContext* context,
                                         const v1::ReportEventsRequest* request,
                                         v1::ReportEventsResponse* response) override;
  grpc::ServerReadReactor<v1::UploadArtifactRequest>* UploadArtifact(
      grpc::CallbackServerContext* context, v1::Artifact* response) override;
  grpc::ServerUnaryReactor* CompleteAttempt(grpc::CallbackServerContext* context,
                                            const v1::CompleteAttemptRequest* request,
                                            v1::CompleteAttemptResponse* response) override;
  grpc::ServerWriteReactor<v1::ReadArtifactResponse>* ReadBlob(
      grpc::CallbackServerContext* context, const v1::ReadBlobRequest* request) override;

 private:
  // The call's authorization: OK when it may use the worker service.
  absl::Status Authorize(grpc::CallbackServerContext* context) const;

  Scheduler* const scheduler_;
  ArtifactStore* const artifacts_;
  ThreadPool* const pool_;
  const Options options_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_WORKER_SERVICE_H_
