#include "server/rpc/compression_service.h"

#include <google/protobuf/io/coded_stream.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/rpc/chunk_stream_reactor.h"
#include "server/rpc/failed_stream.h"
#include "server/rpc/proto_convert.h"
#include "server/rpc/request_validation.h"
#include "server/rpc/status_util.h"
#include "server/rpc/unary_call.h"
#include "server/rpc/upload_reactor.h"
#include "server/rpc/watch_job_reactor.h"

namespace compress::server {
namespace {

// UploadBlob: the first message may state the sha256 and size, which Complete() verifies; later
// messages carry data only (a sha256 or size in one is INVALID_ARGUMENT, not ignored). Once stored,
// the blob is recorded as the caller's tenant's. A blob growing past `max_bytes` (when > 0) ends
// the call RESOURCE_EXHAUSTED and is discarded.
class BlobUploadReactor : public UploadReactor<v1::UploadBlobRequest> {
 public:
  BlobUploadReactor(grpc::CallbackServerContext* context, ThreadPool* pool,
                    ArtifactStore* artifacts, JobStore* store, std::string tenant,
                    int64_t max_bytes, v1::Blob* response)
      : UploadReactor(context, pool),
        artifacts_(artifacts),
        store_(store),
        tenant_(std::move(tenant)),
        max_bytes_(max_bytes),
        response_(response) {}

 private:
  absl::Status HandleMessage(const v1::UploadBlobRequest& request) override {
    ++messages_;
    if (messages_ > 1) {
      // A client that states them late expects them checked: refused rather than dropped.
      const char* late = !request.sha256().empty()   ? "sha256"
                         : request.size_bytes() != 0 ? "size_bytes"
                                                     : nullptr;
      if (late != nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(late, ": set in message ", messages_,
                         " of the upload; only the first message may carry sha256 and "
                         "size_bytes, later ones carry data only"));
      }
    }
    if (file_ == nullptr) {
      if (!request.sha256().empty()) {
        if (absl::Status s = ArtifactStore::ValidateSha256("sha256", request.sha256()); !s.ok()) {
          return s;
        }
        expected_sha256_ = request.sha256();
      }
      if (request.size_bytes() < 0) {
        return absl::InvalidArgumentError("size_bytes: must not be negative");
      }
      if (request.size_bytes() > 0) expected_size_ = request.size_bytes();
      if (max_bytes_ > 0 && expected_size_ > max_bytes_) {
        return TooLarge(expected_size_);
      }
      absl::StatusOr<std::unique_ptr<PendingFile>> file = artifacts_->BeginBlob();
      if (!file.ok()) return file.status();
      file_ = *std::move(file);
    }
    if (max_bytes_ > 0 &&
        file_->size() + static_cast<int64_t>(request.data().size()) > max_bytes_) {
      return TooLarge(file_->size() + static_cast<int64_t>(request.data().size()));
    }
    return file_->Append(request.data());
  }

  absl::Status TooLarge(int64_t size) const {
    return absl::ResourceExhaustedError(absl::StrCat("blob of ", size,
                                                     " bytes or more exceeds the limit of ",
                                                     max_bytes_, " bytes (--max_blob_bytes)"));
  }

  absl::Status Complete() override {
    if (file_ == nullptr) return absl::InvalidArgumentError("data: the upload sent no message");
    absl::StatusOr<Artifact> blob = file_->Commit(expected_sha256_, expected_size_);
    if (!blob.ok()) return blob.status();
    if (absl::Status s = store_->AddBlobOwner(tenant_, blob->sha256); !s.ok()) return s;
    response_->set_sha256(blob->sha256);
    response_->set_size_bytes(blob->size_bytes);
    return absl::OkStatus();
  }

  ArtifactStore* const artifacts_;
  JobStore* const store_;
  const std::string tenant_;
  const int64_t max_bytes_;
  v1::Blob* const response_;
  std::unique_ptr<PendingFile> file_;
  std::string expected_sha256_;
  int64_t expected_size_ = -1;
  // Messages received so far, counted from 1.
  int64_t messages_ = 0;
};

// The bytes a length-delimited field of `size` bytes takes in its message (field numbers 1 to
// 15: a one-byte tag).
int64_t FieldBytes(size_t size) {
  return static_cast<int64_t>(1 + google::protobuf::io::CodedOutputStream::VarintSize64(size) +
                              size);
}

// Adds the jobs of `page` to `response` in order while the response stays within `max_bytes`
// (when > 0), counting the page token it carries when it ends there; the first job is added
// whatever its size. The page token continues right after the last job added, so that no job is
// skipped or repeated across pages.
void FillListJobsResponse(const JobPage& page, const std::string& filter, int64_t max_bytes,
                          v1::ListJobsResponse* response) {
  int64_t bytes = 0;
  for (size_t i = 0; i < page.jobs.size(); ++i) {
    const Job& job = page.jobs[i];
    v1::Job* message = response->add_jobs();
    JobToProto(job, message);
    const int64_t job_bytes = FieldBytes(message->ByteSizeLong());
    // Ending with this job, the response carries a token to continue after it, unless no job
    // follows.
    const bool more = i + 1 < page.jobs.size() || page.next_cursor > 0;
    const int64_t token_bytes =
        more ? FieldBytes(EncodePageToken(job.creation_order, filter).size()) : 0;
    if (i > 0 && max_bytes > 0 && bytes + job_bytes + token_bytes > max_bytes) {
      response->mutable_jobs()->RemoveLast();
      response->set_next_page_token(EncodePageToken(page.jobs[i - 1].creation_order, filter));
      return;
    }
    bytes += job_bytes;
  }
  if (page.next_cursor > 0) {
    response->set_next_page_token(EncodePageToken(page.next_cursor, filter));
  }
}

}  // namespace

CompressionServiceImpl::CompressionServiceImpl(Scheduler* scheduler, ArtifactStore* artifacts,
                                               ThreadPool* pool, const Options& options)
    : scheduler_(scheduler), artifacts_(artifacts), pool_(pool), options_(options) {}

absl::StatusOr<Job> CompressionServiceImpl::VisibleJob(const Caller& caller,
                                                       const std::string& id) const {
  absl::StatusOr<Job> job = scheduler_->store().GetJob(id);
  if (!job.ok()) return job.status();
  if (absl::Status s = caller.CheckVisible(*job); !s.ok()) return s;
  return job;
}

grpc::ServerUnaryReactor* CompressionServiceImpl::CreateJob(grpc::CallbackServerContext* context,
                                                            const v1::CreateJobRequest* request,
                                                            v1::Job* response) {
  absl::StatusOr<Caller> authorized =
      AuthorizeCall(options_.authenticator, *context, Permission::kWriteJobs);
  if (!authorized.ok()) return FinishUnary(context, authorized.status());
  Caller caller = *std::move(authorized);
  // The job is written by the scheduler's group commit: this pool thread validates and queues the
  // call, and whichever thread writes the batch answers it.
  return RunUnaryOnPoolAsync(
      context, pool_, [this, context, request, response, caller](FinishCall finish) {
        absl::StatusOr<ValidCreateJob> valid = ValidateCreateJobRequest(
            *request, options_.data_roots != nullptr ? *options_.data_roots : no_data_roots_);
        if (!valid.ok()) return finish(valid.status());
        if (!valid->teacher_blob_sha256.empty() && !caller.all_tenants) {
          absl::StatusOr<bool> owner =
              scheduler_->store().IsBlobOwner(caller.tenant, valid->teacher_blob_sha256);
          if (!owner.ok()) return finish(owner.status());
          if (!*owner) {
            return finish(absl::NotFoundError(
                absl::StrCat("spec.teacher.blob_sha256: no blob ", valid->teacher_blob_sha256,
                             " was uploaded by tenant '", caller.tenant, "'")));
          }
        }
        valid->job.tenant = caller.tenant;
        const auto deadline = context->deadline();
        scheduler_->CreateJobAsync(
            std::move(valid->job),
            [request, response, finish](absl::StatusOr<CreatedJob> created) {
              // A new job's spec is the request's; an earlier job of the same request_id keeps
              // its own.
              if (created.ok()) {
                JobToProto(created->job, response, created->created ? &request->spec() : nullptr);
              }
              finish(created.status());
            },
            deadline == std::chrono::system_clock::time_point::max() ? absl::InfiniteFuture()
                                                                     : absl::FromChrono(deadline));
      });
}

grpc::ServerUnaryReactor* CompressionServiceImpl::GetJob(grpc::CallbackServerContext* context,
                                                         const v1::GetJobRequest* request,
                                                         v1::Job* response) {
  absl::StatusOr<Caller> authorized =
      AuthorizeCall(options_.authenticator, *context, Permission::kReadJobs);
  if (!authorized.ok()) return FinishUnary(context, authorized.status());
  Caller caller = *std::move(authorized);
  return RunUnaryOnPool(context, pool_, [this, request, response, caller]() -> absl::Status {
    absl::StatusOr<std::string> id = ParseJobName("name", request->name());
    if (!id.ok()) return id.status();
    absl::StatusOr<Job> job = VisibleJob(caller, *id);
    if (!job.ok()) return job.status();
    JobToProto(*job, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* CompressionServiceImpl::ListJobs(grpc::CallbackServerContext* context,
                                                           const v1::ListJobsRequest* request,
                                                           v1::ListJobsResponse* response) {
  absl::StatusOr<Caller> authorized =
      AuthorizeCall(options_.authenticator, *context, Permission::kReadJobs);
  if (!authorized.ok()) return FinishUnary(context, authorized.status());
  Caller caller = *std::move(authorized);
  return RunUnaryOnPool(context, pool_, [this, request, response, caller]() -> absl::Status {
    absl::StatusOr<ListJobsQuery> query = ValidateListJobsRequest(*request);
    if (!query.ok()) return query.status();
    query->filter.tenant = caller.Scope();
    // The store stops reading once the jobs' text reaches the response's bound (it stands for
    // their size in the message), so a page of large jobs is not read whole.
    absl::StatusOr<JobPage> page = scheduler_->store().ListJobs(
        query->filter, query->page_size, query->after_cursor, options_.max_list_response_bytes);
    if (!page.ok()) return page.status();
    FillListJobsResponse(*page, request->filter(), options_.max_list_response_bytes, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* CompressionServiceImpl::CancelJob(grpc::CallbackServerContext* context,
                                                            const v1::CancelJobRequest* request,
                                                            v1::Job* response) {
  absl::StatusOr<Caller> authorized =
      AuthorizeCall(options_.authenticator, *context, Permission::kWriteJobs);
  if (!authorized.ok()) return FinishUnary(context, authorized.status());
  Caller caller = *std::move(authorized);
  return RunUnaryOnPool(context, pool_, [this, request, response, caller]() -> absl::Status {
    absl::StatusOr<std::string> id = ParseJobName("name", request->name());
    if (!id.ok()) return id.status();
    // A job's tenant never changes, so the check stays true for the cancellation.
    if (absl::StatusOr<Job> visible = VisibleJob(caller, *id); !visible.ok()) {
      return visible.status();
    }
    absl::StatusOr<Job> job = scheduler_->CancelJob(*id);
    if (!job.ok()) return job.status();
    JobToProto(*job, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* CompressionServiceImpl::DeleteJob(grpc::CallbackServerContext* context,
                                                            const v1::DeleteJobRequest* request,
                                                            google::protobuf::Empty* response) {
  absl::StatusOr<Caller> authorized =
      AuthorizeCall(options_.authenticator, *context, Permission::kWriteJobs);
  if (!authorized.ok()) return FinishUnary(context, authorized.status());
  Caller caller = *std::move(authorized);
  return RunUnaryOnPool(context, pool_, [this, request, caller]() -> absl::Status {
    absl::StatusOr<std::string> id = ParseJobName("name", request->name());
    if (!id.ok()) return id.status();
    if (absl::StatusOr<Job> visible = VisibleJob(caller, *id); !visible.ok()) {
      return visible.status();
    }
    absl::StatusOr<Job> job = scheduler_->DeleteJob(*id);
    if (!job.ok()) return job.status();
    return artifacts_->RemoveJob(*id);
  });
}

grpc::ServerWriteReactor<v1::JobEvent>* CompressionServiceImpl::WatchJob(
    grpc::CallbackServerContext* context, const v1::WatchJobRequest* request) {
  absl::StatusOr<Caller> caller =
      AuthorizeCall(options_.authenticator, *context, Permission::kReadJobs);
  if (!caller.ok()) {
    return new FailedStream<grpc::ServerWriteReactor<v1::JobEvent>>(caller.status());
  }
  absl::StatusOr<std::string> id = ParseJobName("name", request->name());
  if (!id.ok()) return new FailedStream<grpc::ServerWriteReactor<v1::JobEvent>>(id.status());
  if (request->after_sequence() < 0) {
    return new FailedStream<grpc::ServerWriteReactor<v1::JobEvent>>(
        absl::InvalidArgumentError("after_sequence: must not be negative"));
  }
  return new WatchJobReactor(scheduler_, pool_, *std::move(id), request->after_sequence(),
                             caller->Scope());
}

grpc::ServerWriteReactor<v1::ReadArtifactResponse>* CompressionServiceImpl::ReadArtifact(
    grpc::CallbackServerContext* context, const v1::ReadArtifactRequest* request) {
  using Failed = FailedStream<grpc::ServerWriteReactor<v1::ReadArtifactResponse>>;
  absl::StatusOr<Caller> caller =
      AuthorizeCall(options_.authenticator, *context, Permission::kReadJobs);
  if (!caller.ok()) return new Failed(caller.status());
  absl::StatusOr<std::pair<std::string, std::string>> name =
      ParseArtifactName("name", request->name());
  if (!name.ok()) return new Failed(name.status());
  if (request->offset() < 0) {
    return new Failed(absl::InvalidArgumentError("offset: must not be negative"));
  }
  if (request->chunk_size() < 0) {
    return new Failed(absl::InvalidArgumentError("chunk_size: must not be negative"));
  }
  int64_t chunk = request->chunk_size() == 0
                      ? options_.default_chunk_bytes
                      : std::min<int64_t>(request->chunk_size(), options_.max_chunk_bytes);
  auto [job_id, artifact_name] = *std::move(name);
  ChunkSource source;
  source.open = [this, job_id = job_id, artifact_name = artifact_name,
                 caller = *caller]() -> absl::StatusOr<ChunkFile> {
    // The record is read and the file opened under the scheduler's lock, under which an upload
    // replaces the file and records it: the two belong to the same upload.
    ChunkFile opened;
    absl::Status status = scheduler_->InspectJob(job_id, [&](const Job& job) -> absl::Status {
      if (absl::Status s = caller.CheckVisible(job); !s.ok()) return s;
      auto artifact = std::find_if(job.artifacts.begin(), job.artifacts.end(),
                                   [&](const Artifact& a) { return a.name == artifact_name; });
      if (artifact == job.artifacts.end()) {
        return absl::NotFoundError(
            absl::StrCat("job ", job_id, " has no artifact '", artifact_name, "'"));
      }
      absl::StatusOr<std::unique_ptr<StoredFile>> file =
          artifacts_->OpenArtifact(job_id, artifact_name);
      if (!file.ok()) return file.status();
      if ((*file)->size() != artifact->size_bytes) {
        // Only when an upload's record could not be written and its file could not be put
        // back either (Scheduler::RecordArtifact).
        return absl::UnavailableError(
            absl::StrCat("artifact ", artifact_name, " of job ", job_id, " on disk (",
                         (*file)->size(), " bytes) is not the one recorded (", artifact->size_bytes,
                         " bytes): an upload replacing it did not finish; retry once it has"));
      }
      opened.description = *artifact;
      opened.file = *std::move(file);
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    return opened;
  };
  if (options_.metrics != nullptr) {
    source.sent = [metrics = options_.metrics](int64_t bytes) {
      metrics->ArtifactBytesSent(bytes);
    };
  }
  absl::StatusOr<FileStreamLimit::Slot> slot = AcquireFileStream(
      options_.file_streams, "ReadArtifact", FileStreamLimit::Party::kClient, context);
  if (!slot.ok()) {
    return new FailedStream<grpc::ServerWriteReactor<v1::ReadArtifactResponse>>(slot.status());
  }
  return new ChunkStreamReactor(pool_, *std::move(slot), std::move(source), request->offset(),
                                chunk);
}

grpc::ServerReadReactor<v1::UploadBlobRequest>* CompressionServiceImpl::UploadBlob(
    grpc::CallbackServerContext* context, v1::Blob* response) {
  absl::StatusOr<Caller> caller =
      AuthorizeCall(options_.authenticator, *context, Permission::kWriteJobs);
  if (!caller.ok()) {
    return new FailedStream<grpc::ServerReadReactor<v1::UploadBlobRequest>>(caller.status());
  }
  absl::StatusOr<FileStreamLimit::Slot> slot = AcquireFileStream(
      options_.file_streams, "UploadBlob", FileStreamLimit::Party::kClient, context);
  if (!slot.ok()) {
    return new FailedStream<grpc::ServerReadReactor<v1::UploadBlobRequest>>(slot.status());
  }
  auto* reactor = new BlobUploadReactor(context, pool_, artifacts_, &scheduler_->store(),
                                        caller->tenant, options_.max_blob_bytes, response);
  reactor->Start(*std::move(slot));
  return reactor;
}

}  // namespace compress::server
