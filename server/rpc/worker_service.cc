#include "server/rpc/worker_service.h"

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/core/executor_events.h"
#include "server/rpc/chunk_stream_reactor.h"
#include "server/rpc/failed_stream.h"
#include "server/rpc/proto_convert.h"
#include "server/rpc/status_util.h"
#include "server/rpc/unary_call.h"
#include "server/rpc/upload_reactor.h"

namespace compress::server {
namespace {

absl::Status RequireWorkerId(const std::string& worker_id, absl::string_view prefix = "") {
  if (worker_id.empty())
    return absl::InvalidArgumentError(absl::StrCat(prefix, "worker_id: required"));
  return absl::OkStatus();
}

// The job id of an attempt-scoped request, with the worker id checked. `prefix` leads the field
// names in messages ("header." for UploadArtifact's header).
absl::StatusOr<std::string> AttemptJob(const std::string& worker_id, const std::string& job,
                                       int attempt, absl::string_view prefix = "") {
  if (absl::Status s = RequireWorkerId(worker_id, prefix); !s.ok()) return s;
  if (attempt <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "attempt: must be positive, got ", attempt));
  }
  return ParseJobName(absl::StrCat(prefix, "job"), job);
}

// Who makes an attempt-scoped request (HeartbeatRequest, ReportEventsRequest,
// UploadArtifactRequest.Header, CompleteAttemptRequest): its worker and lease.
template <typename Request>
LeaseHolder HolderOf(const Request& request) {
  return LeaseHolder{request.worker_id(), request.lease_id()};
}

// LeaseJob's long poll. The scheduler calls back exactly once unless CancelWait withdraws the
// waiter; the reactor lives until OnDone, the pool task and that callback (or its withdrawal)
// have all released it.
class LeaseReactor : public grpc::ServerUnaryReactor {
 public:
  LeaseReactor(grpc::CallbackServerContext* context, Scheduler* scheduler, ThreadPool* pool,
               const v1::LeaseJobRequest* request, v1::LeaseJobResponse* response,
               absl::Time deadline)
      : context_(context), scheduler_(scheduler), response_(response) {
    std::string device =
        request->device().name().empty() ? "unspecified" : request->device().name();
    worker_id_ = request->worker_id();
    pool->Schedule([this, device, deadline] {
      int64_t id = scheduler_->WaitForLease(
          worker_id_, device, deadline,
          [this](absl::StatusOr<std::optional<Lease>> lease) { OnLease(std::move(lease)); });
      bool cancelled = false;
      {
        absl::MutexLock lock(&mu_);
        waiter_id_ = id;
        cancelled = cancelled_;
      }
      if (cancelled) Withdraw(id);
      Unref();
    });
  }

  void OnCancel() override {
    int64_t id = 0;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      id = waiter_id_;
    }
    if (id != 0) Withdraw(id);
  }

  // A lease answered but not delivered (the worker cancelled its long poll, as an agent that is
  // stopping does, or its connection broke, after OnLease saw the call alive): nobody holds it,
  // so it is given back rather than left to expire and cost the job an attempt. IsCancelled()
  // here says the call ended before its status reached the client, which then saw no lease.
  void OnDone() override {
    std::optional<SentLease> sent;
    {
      absl::MutexLock lock(&mu_);
      sent = std::move(sent_);
    }
    if (sent.has_value() && context_->IsCancelled()) {
      (void)scheduler_->ReturnLease(sent->job_id, sent->attempt,
                                    LeaseHolder{worker_id_, sent->lease_id});
    }
    Unref();
  }

 private:
  void Withdraw(int64_t waiter_id) {
    if (!scheduler_->CancelWait(waiter_id)) return;  // the callback ran or will run
    if (Claim()) Finish(grpc::Status::CANCELLED);
    Unref();  // the callback's reference: it will never run
  }

  void OnLease(absl::StatusOr<std::optional<Lease>> lease) {
    if (lease.ok() && lease->has_value() && context_->IsCancelled()) {
      // Nobody would receive this lease: give it back rather than let it expire and cost the
      // job an attempt.
      const Lease& l = **lease;
      (void)scheduler_->ReturnLease(l.job_id, l.attempt, LeaseHolder{worker_id_, l.lease_id});
      if (Claim()) Finish(grpc::Status::CANCELLED);
    } else if (Claim()) {
      if (lease.ok() && lease->has_value()) {
        const Lease& l = **lease;
        v1::Lease* out = response_->mutable_lease();
        out->set_job(JobName(l.job_id));
        out->set_attempt(l.attempt);
        out->set_spec_json(l.spec_json);
        out->set_lease_seconds(static_cast<int32_t>(absl::ToInt64Seconds(l.lease_duration)));
        out->set_last_event_sequence(l.last_event_sequence);
        out->set_lease_id(l.lease_id);
        absl::MutexLock lock(&mu_);
        sent_ = SentLease{l.job_id, l.attempt, l.lease_id};
      }
      Finish(ToGrpcStatus(lease.status()));
    }
    Unref();
  }

  bool Claim() {
    absl::MutexLock lock(&mu_);
    if (finished_) return false;
    finished_ = true;
    return true;
  }

  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  grpc::CallbackServerContext* const context_;
  Scheduler* const scheduler_;
  v1::LeaseJobResponse* const response_;
  std::string worker_id_;  // set in the constructor
  // OnDone, the pool task, and the scheduler's callback.
  std::atomic<int> refs_{3};
  absl::Mutex mu_;
  int64_t waiter_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // The lease answered, until OnDone.
  struct SentLease {
    std::string job_id;
    int attempt = 0;
    std::string lease_id;
  };
  std::optional<SentLease> sent_ ABSL_GUARDED_BY(mu_);
};

// UploadArtifact: a header, then data chunks; the attempt is checked at the start and again
// when the file is put in place and recorded.
class ArtifactUploadReactor : public UploadReactor<v1::UploadArtifactRequest> {
 public:
  ArtifactUploadReactor(grpc::CallbackServerContext* context, ThreadPool* pool,
                        Scheduler* scheduler, ArtifactStore* artifacts, Metrics* metrics,
                        v1::Artifact* response)
      : UploadReactor(context, pool),
        scheduler_(scheduler),
        artifacts_(artifacts),
        metrics_(metrics),
        response_(response) {}

 private:
  absl::Status HandleMessage(const v1::UploadArtifactRequest& request) override {
    ++messages_;
    if (file_ == nullptr) {
      if (!request.has_header()) {
        return absl::InvalidArgumentError("header: the first message must be the header");
      }
      header_ = request.header();
      absl::StatusOr<std::string> job_id =
          AttemptJob(header_.worker_id(), header_.job(), header_.attempt(), "header.");
      if (!job_id.ok()) return job_id.status();
      job_id_ = *std::move(job_id);
      if (absl::Status s =
              ArtifactStore::ValidateName("header.artifact_name", header_.artifact_name());
          !s.ok()) {
        return s;
      }
      if (!header_.sha256().empty()) {
        if (absl::Status s = ArtifactStore::ValidateSha256("header.sha256", header_.sha256());
            !s.ok()) {
          return s;
        }
      }
      if (header_.size_bytes() < 0) {
        return absl::InvalidArgumentError("header.size_bytes: must not be negative");
      }
      if (absl::Status s = scheduler_->CheckAttempt(job_id_, header_.attempt(), HolderOf(header_));
          !s.ok()) {
        return s;
      }
      absl::StatusOr<std::unique_ptr<PendingFile>> file =
          artifacts_->BeginArtifact(job_id_, header_.artifact_name());
      if (!file.ok()) return file.status();
      file_ = *std::move(file);
      return absl::OkStatus();
    }
    if (request.has_header()) {
      return absl::InvalidArgumentError(
          absl::StrCat("header: sent again in message ", messages_,
                       " of the upload; only the first message carries the header, later ones "
                       "carry data only"));
    }
    if (metrics_ != nullptr)
      metrics_->ArtifactBytesReceived(static_cast<int64_t>(request.data().size()));
    return file_->Append(request.data());
  }

  absl::Status Complete() override {
    if (file_ == nullptr) return absl::InvalidArgumentError("header: required");
    int64_t expected_size =
        header_.size_bytes() > 0 || !header_.sha256().empty() ? header_.size_bytes() : -1;
    absl::StatusOr<Artifact> artifact = file_->Finish(header_.sha256(), expected_size);
    if (!artifact.ok()) return artifact.status();
    // The file replaces an earlier one of the same name only once the attempt is known to be
    // current, in the same step that records it: an attempt fenced off meanwhile leaves the
    // current attempt's file alone (ABORTED, its file discarded).
    if (absl::Status s = scheduler_->RecordArtifact(
            job_id_, header_.attempt(), HolderOf(header_), *artifact,
            [this] { return file_->Place(); }, [this] { return file_->Unplace(); });
        !s.ok()) {
      return s;
    }
    // Drops the file replaced, which was kept in case the record could not be written.
    if (absl::Status s = file_->Settle(); !s.ok()) return s;
    response_->set_name(artifact->name);
    response_->set_size_bytes(artifact->size_bytes);
    response_->set_sha256(artifact->sha256);
    return absl::OkStatus();
  }

  Scheduler* const scheduler_;
  ArtifactStore* const artifacts_;
  Metrics* const metrics_;  // may be nullptr
  v1::Artifact* const response_;
  v1::UploadArtifactRequest::Header header_;
  std::string job_id_;
  std::unique_ptr<PendingFile> file_;
  // Messages received so far, counted from 1.
  int64_t messages_ = 0;
};

}  // namespace

WorkerServiceImpl::WorkerServiceImpl(Scheduler* scheduler, ArtifactStore* artifacts,
                                     ThreadPool* pool, const Options& options)
    : scheduler_(scheduler), artifacts_(artifacts), pool_(pool), options_(options) {}

absl::Status WorkerServiceImpl::Authorize(grpc::CallbackServerContext* context) const {
  return AuthorizeCall(options_.authenticator, *context, Permission::kWorker).status();
}

grpc::ServerUnaryReactor* WorkerServiceImpl::LeaseJob(grpc::CallbackServerContext* context,
                                                      const v1::LeaseJobRequest* request,
                                                      v1::LeaseJobResponse* response) {
  if (absl::Status denied = Authorize(context); !denied.ok()) return FinishUnary(context, denied);
  absl::Status invalid = RequireWorkerId(request->worker_id());
  if (invalid.ok() && request->wait_seconds() < 0) {
    invalid = absl::InvalidArgumentError("wait_seconds: must not be negative");
  }
  if (!invalid.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(invalid));
    return reactor;
  }
  // Answer (with no lease) a little before the client's own deadline, so that it hears "no job"
  // rather than DEADLINE_EXCEEDED, and no job is handed to a call that is about to end.
  absl::Time deadline =
      absl::Now() + absl::Seconds(std::min(request->wait_seconds(), options_.max_wait_seconds));
  if (context->deadline() < absl::ToChronoTime(deadline + options_.deadline_margin)) {
    deadline = absl::FromChrono(context->deadline()) - options_.deadline_margin;
  }
  return new LeaseReactor(context, scheduler_, pool_, request, response, deadline);
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Heartbeat(grpc::CallbackServerContext* context,
                                                       const v1::HeartbeatRequest* request,
                                                       v1::HeartbeatResponse* response) {
  if (absl::Status denied = Authorize(context); !denied.ok()) return FinishUnary(context, denied);
  return RunUnaryOnPool(context, pool_, [this, request, response]() -> absl::Status {
    absl::StatusOr<std::string> job_id =
        AttemptJob(request->worker_id(), request->job(), request->attempt());
    if (!job_id.ok()) return job_id.status();
    absl::StatusOr<bool> cancel =
        scheduler_->Heartbeat(*job_id, request->attempt(), HolderOf(*request));
    if (!cancel.ok()) return cancel.status();
    response->set_cancel_requested(*cancel);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* WorkerServiceImpl::ReportEvents(grpc::CallbackServerContext* context,
                                                          const v1::ReportEventsRequest* request,
                                                          v1::ReportEventsResponse* response) {
  if (absl::Status denied = Authorize(context); !denied.ok()) return FinishUnary(context, denied);
  return RunUnaryOnPool(context, pool_, [this, request, response]() -> absl::Status {
    absl::StatusOr<std::string> job_id =
        AttemptJob(request->worker_id(), request->job(), request->attempt());
    if (!job_id.ok()) return job_id.status();
    std::vector<std::string> lines(request->event_json().begin(), request->event_json().end());
    absl::StatusOr<bool> cancel = scheduler_->ReportEvents(
        *job_id, request->attempt(), HolderOf(*request), lines, request->first_line());
    if (!cancel.ok()) return cancel.status();
    response->set_cancel_requested(*cancel);
    return absl::OkStatus();
  });
}

grpc::ServerReadReactor<v1::UploadArtifactRequest>* WorkerServiceImpl::UploadArtifact(
    grpc::CallbackServerContext* context, v1::Artifact* response) {
  if (absl::Status denied = Authorize(context); !denied.ok()) {
    return new FailedStream<grpc::ServerReadReactor<v1::UploadArtifactRequest>>(denied);
  }
  absl::StatusOr<FileStreamLimit::Slot> slot = AcquireFileStream(
      options_.file_streams, "UploadArtifact", FileStreamLimit::Party::kWorker, context);
  if (!slot.ok()) {
    return new FailedStream<grpc::ServerReadReactor<v1::UploadArtifactRequest>>(slot.status());
  }
  auto* reactor =
      new ArtifactUploadReactor(context, pool_, scheduler_, artifacts_, options_.metrics, response);
  reactor->Start(*std::move(slot));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::CompleteAttempt(
    grpc::CallbackServerContext* context, const v1::CompleteAttemptRequest* request,
    v1::CompleteAttemptResponse* response) {
  if (absl::Status denied = Authorize(context); !denied.ok()) return FinishUnary(context, denied);
  return RunUnaryOnPool(context, pool_, [this, request]() -> absl::Status {
    absl::StatusOr<std::string> job_id =
        AttemptJob(request->worker_id(), request->job(), request->attempt());
    if (!job_id.ok()) return job_id.status();
    AttemptResult result;
    switch (request->outcome()) {
      case v1::ATTEMPT_SUCCEEDED:
        result.outcome = AttemptResult::Outcome::kSucceeded;
        break;
      case v1::ATTEMPT_FAILED:
        result.outcome = AttemptResult::Outcome::kFailed;
        break;
      case v1::ATTEMPT_CANCELLED:
        result.outcome = AttemptResult::Outcome::kCancelled;
        break;
      default:
        return absl::InvalidArgumentError("outcome: required");
    }
    result.error_code = request->error_code();
    result.error_message = request->error_message();
    result.exit_status = request->exit_status();
    result.stderr_tail = request->stderr_tail();
    result.retryable = request->retryable();
    result.stopping = request->stopping();
    result.report_json = KeptReport(request->report_json(), options_.max_report_json_bytes);
    return scheduler_->CompleteAttempt(*job_id, request->attempt(), HolderOf(*request), result);
  });
}

grpc::ServerWriteReactor<v1::ReadArtifactResponse>* WorkerServiceImpl::ReadBlob(
    grpc::CallbackServerContext* context, const v1::ReadBlobRequest* request) {
  if (absl::Status denied = Authorize(context); !denied.ok()) {
    return new FailedStream<grpc::ServerWriteReactor<v1::ReadArtifactResponse>>(denied);
  }
  if (request->offset() < 0) {
    auto* reactor = new FailedStream<grpc::ServerWriteReactor<v1::ReadArtifactResponse>>(
        absl::InvalidArgumentError("offset: must not be negative"));
    return reactor;
  }
  ChunkSource source;
  source.open = [this, sha = request->sha256()]() -> absl::StatusOr<ChunkFile> {
    absl::StatusOr<std::unique_ptr<StoredFile>> file = artifacts_->OpenBlob(sha);
    if (!file.ok()) return file.status();
    // Blobs are stored by content: the name is the sha256 of whatever file is there.
    ChunkFile opened{Artifact{sha, (*file)->size(), sha}, *std::move(file)};
    return opened;
  };
  absl::StatusOr<FileStreamLimit::Slot> slot = AcquireFileStream(
      options_.file_streams, "ReadBlob", FileStreamLimit::Party::kWorker, context);
  if (!slot.ok()) {
    return new FailedStream<grpc::ServerWriteReactor<v1::ReadArtifactResponse>>(slot.status());
  }
  return new ChunkStreamReactor(pool_, *std::move(slot), std::move(source), request->offset(),
                                options_.chunk_bytes);
}

}  // namespace compress::server
