// FakeWorkerService: an in-process WorkerService for the agent's tests. It hands out queued
// leases, records every call, and can be told to fail calls, to cancel transfers as compressd's
// idle watch does, or to request cancellation.
#ifndef COMPRESS_TESTS_AGENT_FAKE_WORKER_SERVICE_H_
#define COMPRESS_TESTS_AGENT_FAKE_WORKER_SERVICE_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "compress/v1/worker_service.grpc.pb.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace compress::worker::testing {

// Thread-safe.
class FakeWorkerService final : public compress::v1::WorkerService::Service {
 public:
  // One ReportEvents call as received, whether it was answered OK or failed.
  struct ReportCall {
    int64_t first_line = 0;
    int lines = 0;
    bool ok = false;
  };
  // How one call about an attempt (Heartbeat, ReportEvents, UploadArtifact's header,
  // CompleteAttempt) named it.
  struct AttemptCall {
    std::string method;  // "Heartbeat", ...
    std::string worker_id;
    std::string job;
    int attempt = 0;
    std::string lease_id;
  };

  // Starts a server for the fake on `address` ("127.0.0.1:0" picks a port). Returns nullptr if
  // the port cannot be bound. `max_receive_bytes` > 0 limits the size of a request (gRPC answers
  // a larger one RESOURCE_EXHAUSTED, as compressd --max_message_bytes does).
  static std::unique_ptr<grpc::Server> Serve(FakeWorkerService* service, const std::string& address,
                                             int* port, int max_receive_bytes = 0) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), port);
    if (max_receive_bytes > 0) builder.SetMaxReceiveMessageSize(max_receive_bytes);
    builder.RegisterService(service);
    return builder.BuildAndStart();
  }

  void AddLease(const compress::v1::Lease& lease) {
    absl::MutexLock lock(&mu_);
    leases_.push_back(lease);
  }
  void SetCancelRequested(bool value) {
    absl::MutexLock lock(&mu_);
    cancel_requested_ = value;
  }
  // The next `n` ReportEvents calls fail with `code` (UNAVAILABLE by default).
  void FailReportEvents(int n, grpc::StatusCode code = grpc::StatusCode::UNAVAILABLE) {
    absl::MutexLock lock(&mu_);
    report_failures_left_ = n;
    report_failure_code_ = code;
  }
  // ReportEvents waits `delay` before it answers (from now on).
  void SetReportEventsDelay(absl::Duration delay) {
    absl::MutexLock lock(&mu_);
    report_delay_ = delay;
  }
  // ReadBlob serves `data` under its sha256 `sha256`, in chunks of `chunk_bytes`, waiting
  // `chunk_delay` before each chunk.
  void AddBlob(const std::string& sha256, std::string data, int chunk_bytes = 64 << 10,
               absl::Duration chunk_delay = absl::ZeroDuration()) {
    absl::MutexLock lock(&mu_);
    blobs_[sha256] = {std::move(data), chunk_bytes, chunk_delay};
  }
  // UploadArtifact answers `code` (after the header) from now on; OK restores uploads.
  void SetUploadError(grpc::StatusCode code) {
    absl::MutexLock lock(&mu_);
    upload_error_ = code;
  }
  // UploadArtifact waits `delay` after each data message it reads.
  void SetUploadChunkDelay(absl::Duration delay) {
    absl::MutexLock lock(&mu_);
    upload_chunk_delay_ = delay;
  }
  // The next `calls` UploadArtifact calls are cancelled by the server, as compressd's idle watch
  // cancels a transfer that stood still (the agent sees plain CANCELLED): each after its first
  // data message and `stall` more.
  void CancelUploads(int calls, absl::Duration stall = absl::ZeroDuration()) {
    absl::MutexLock lock(&mu_);
    upload_cancels_left_ = calls;
    cancel_stall_ = stall;
  }
  // The next `calls` ReadBlob calls are cancelled by the server in the same way, each after it
  // sent `chunks` chunks and waited `stall`.
  void CancelReadBlobs(int calls, int chunks, absl::Duration stall = absl::ZeroDuration()) {
    absl::MutexLock lock(&mu_);
    read_blob_cancels_left_ = calls;
    read_blob_cancel_after_ = chunks;
    cancel_stall_ = stall;
  }
  // `hook` runs each time an UploadArtifact header arrives, before the call reads any data (a
  // test changes the file being uploaded with it).
  void OnUploadHeader(std::function<void()> hook) {
    absl::MutexLock lock(&mu_);
    upload_header_hook_ = std::move(hook);
  }
  // The job's cancellation is requested as soon as an UploadArtifact header arrives.
  void CancelWhenUploadStarts() {
    absl::MutexLock lock(&mu_);
    cancel_on_upload_ = true;
  }
  // Heartbeats answer with `code` from now on.
  void SetHeartbeatError(grpc::StatusCode code) {
    absl::MutexLock lock(&mu_);
    heartbeat_error_ = code;
  }

  std::vector<std::string> events() const {
    absl::MutexLock lock(&mu_);
    return events_;
  }
  std::map<std::string, std::string> artifacts() const {
    absl::MutexLock lock(&mu_);
    return artifacts_;
  }
  std::vector<compress::v1::CompleteAttemptRequest> completions() const {
    absl::MutexLock lock(&mu_);
    return completions_;
  }
  int heartbeats() const {
    absl::MutexLock lock(&mu_);
    return heartbeats_;
  }
  int lease_calls() const {
    absl::MutexLock lock(&mu_);
    return lease_calls_;
  }
  int failed_report_calls() const {
    absl::MutexLock lock(&mu_);
    return failed_report_calls_;
  }
  std::vector<ReportCall> report_calls() const {
    absl::MutexLock lock(&mu_);
    return report_calls_;
  }
  int upload_calls() const {
    absl::MutexLock lock(&mu_);
    return upload_calls_;
  }
  int read_blob_calls() const {
    absl::MutexLock lock(&mu_);
    return read_blob_calls_;
  }
  // Every call about an attempt, in the order received.
  std::vector<AttemptCall> attempt_calls() const {
    absl::MutexLock lock(&mu_);
    return attempt_calls_;
  }
  // Waits until `n` attempts were completed; false on timeout.
  bool WaitForCompletions(size_t n, absl::Duration timeout) const {
    absl::MutexLock lock(&mu_);
    auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return completions_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }

  grpc::Status LeaseJob(grpc::ServerContext* context, const compress::v1::LeaseJobRequest* request,
                        compress::v1::LeaseJobResponse* response) override {
    absl::MutexLock lock(&mu_);
    ++lease_calls_;
    last_device_ = request->device();
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !leases_.empty(); };
    absl::Time deadline = absl::Now() + absl::Seconds(std::min(request->wait_seconds(), 2));
    while (!ready() && absl::Now() < deadline && !context->IsCancelled()) {
      mu_.AwaitWithDeadline(absl::Condition(&ready),
                            std::min(deadline, absl::Now() + absl::Milliseconds(100)));
    }
    if (!leases_.empty()) {
      *response->mutable_lease() = leases_.front();
      leases_.pop_front();
    }
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext*, const compress::v1::HeartbeatRequest* request,
                         compress::v1::HeartbeatResponse* response) override {
    absl::MutexLock lock(&mu_);
    RecordAttemptCall("Heartbeat", *request);
    ++heartbeats_;
    if (heartbeat_error_ != grpc::StatusCode::OK) {
      return grpc::Status(heartbeat_error_, "refused by the fake");
    }
    response->set_cancel_requested(cancel_requested_);
    return grpc::Status::OK;
  }

  grpc::Status ReportEvents(grpc::ServerContext*, const compress::v1::ReportEventsRequest* request,
                            compress::v1::ReportEventsResponse* response) override {
    absl::Duration delay;
    {
      absl::MutexLock lock(&mu_);
      delay = report_delay_;
    }
    absl::SleepFor(delay);
    absl::MutexLock lock(&mu_);
    RecordAttemptCall("ReportEvents", *request);
    ReportCall call{request->first_line(), request->event_json_size(), false};
    if (report_failures_left_ > 0) {
      --report_failures_left_;
      ++failed_report_calls_;
      report_calls_.push_back(call);
      return grpc::Status(report_failure_code_, "the fake is unavailable");
    }
    call.ok = true;
    report_calls_.push_back(call);
    for (const std::string& line : request->event_json()) events_.push_back(line);
    response->set_cancel_requested(cancel_requested_);
    return grpc::Status::OK;
  }

  grpc::Status UploadArtifact(grpc::ServerContext* context,
                              grpc::ServerReader<compress::v1::UploadArtifactRequest>* reader,
                              compress::v1::Artifact* response) override {
    compress::v1::UploadArtifactRequest message;
    std::string name;
    std::string data;
    compress::v1::UploadArtifactRequest::Header header;
    bool first = true;
    absl::Duration chunk_delay;
    bool cancel = false;
    absl::Duration stall;
    while (reader->Read(&message)) {
      if (first) {
        if (!message.has_header()) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "header first");
        }
        header = message.header();
        first = false;
        std::function<void()> hook;
        {
          absl::MutexLock lock(&mu_);
          hook = upload_header_hook_;
        }
        if (hook) hook();
        absl::MutexLock lock(&mu_);
        RecordAttemptCall("UploadArtifact", header);
        ++upload_calls_;
        if (cancel_on_upload_) cancel_requested_ = true;
        if (upload_error_ != grpc::StatusCode::OK) {
          return grpc::Status(upload_error_, "upload refused by the fake");
        }
        chunk_delay = upload_chunk_delay_;
        if (upload_cancels_left_ > 0) {
          --upload_cancels_left_;
          cancel = true;
          stall = cancel_stall_;
        }
        continue;
      }
      if (cancel) {
        absl::SleepFor(stall);
        context->TryCancel();
        return grpc::Status::CANCELLED;
      }
      data += message.data();
      absl::SleepFor(chunk_delay);
    }
    // As compressd: a stream the client cancelled is not its end.
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
    if (static_cast<int64_t>(data.size()) != header.size_bytes()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "size mismatch");
    }
    absl::MutexLock lock(&mu_);
    artifacts_[header.artifact_name()] = data;
    artifact_sha256_[header.artifact_name()] = header.sha256();
    response->set_name(header.artifact_name());
    response->set_size_bytes(header.size_bytes());
    response->set_sha256(header.sha256());
    return grpc::Status::OK;
  }

  grpc::Status CompleteAttempt(grpc::ServerContext*,
                               const compress::v1::CompleteAttemptRequest* request,
                               compress::v1::CompleteAttemptResponse*) override {
    absl::MutexLock lock(&mu_);
    RecordAttemptCall("CompleteAttempt", *request);
    completions_.push_back(*request);
    return grpc::Status::OK;
  }

  grpc::Status ReadBlob(grpc::ServerContext* context, const compress::v1::ReadBlobRequest* request,
                        grpc::ServerWriter<compress::v1::ReadArtifactResponse>* writer) override {
    Blob blob;
    int cancel_after = -1;  // chunks sent before the server cancels the call; -1: never
    absl::Duration stall;
    {
      absl::MutexLock lock(&mu_);
      ++read_blob_calls_;
      auto it = blobs_.find(request->sha256());
      if (it == blobs_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such blob");
      blob = it->second;
      if (read_blob_cancels_left_ > 0) {
        --read_blob_cancels_left_;
        cancel_after = read_blob_cancel_after_;
        stall = cancel_stall_;
      }
    }
    const int64_t size = static_cast<int64_t>(blob.data.size());
    if (request->offset() > size) return grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "offset");
    int sent = 0;
    for (int64_t offset = request->offset(); offset < size; offset += blob.chunk_bytes) {
      if (context->IsCancelled()) return grpc::Status::CANCELLED;
      if (sent++ == cancel_after) {
        absl::SleepFor(stall);
        context->TryCancel();
        return grpc::Status::CANCELLED;
      }
      absl::SleepFor(blob.chunk_delay);
      compress::v1::ReadArtifactResponse chunk;
      chunk.set_offset(offset);
      if (offset + blob.chunk_bytes >= size) chunk.set_size_bytes(size);
      chunk.set_data(blob.data.substr(offset, blob.chunk_bytes));
      if (!writer->Write(chunk)) return grpc::Status::CANCELLED;
    }
    return grpc::Status::OK;
  }

  std::string artifact_sha256(const std::string& name) const {
    absl::MutexLock lock(&mu_);
    auto it = artifact_sha256_.find(name);
    return it == artifact_sha256_.end() ? "" : it->second;
  }
  compress::v1::Device last_device() const {
    absl::MutexLock lock(&mu_);
    return last_device_;
  }

 private:
  struct Blob {
    std::string data;
    int chunk_bytes = 64 << 10;
    absl::Duration chunk_delay;
  };

  template <typename Request>
  void RecordAttemptCall(const char* method, const Request& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    attempt_calls_.push_back(AttemptCall{method, request.worker_id(), request.job(),
                                         request.attempt(), request.lease_id()});
  }

  mutable absl::Mutex mu_;
  std::deque<compress::v1::Lease> leases_ ABSL_GUARDED_BY(mu_);
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;
  int report_failures_left_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::StatusCode report_failure_code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::UNAVAILABLE;
  int failed_report_calls_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration report_delay_ ABSL_GUARDED_BY(mu_);
  std::vector<ReportCall> report_calls_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Blob> blobs_ ABSL_GUARDED_BY(mu_);
  int read_blob_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<AttemptCall> attempt_calls_ ABSL_GUARDED_BY(mu_);
  grpc::StatusCode heartbeat_error_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
  grpc::StatusCode upload_error_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
  absl::Duration upload_chunk_delay_ ABSL_GUARDED_BY(mu_);
  bool cancel_on_upload_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> upload_header_hook_ ABSL_GUARDED_BY(mu_);
  int upload_cancels_left_ ABSL_GUARDED_BY(mu_) = 0;
  int read_blob_cancels_left_ ABSL_GUARDED_BY(mu_) = 0;
  int read_blob_cancel_after_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration cancel_stall_ ABSL_GUARDED_BY(mu_);
  int upload_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> events_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> artifacts_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> artifact_sha256_ ABSL_GUARDED_BY(mu_);
  std::vector<compress::v1::CompleteAttemptRequest> completions_ ABSL_GUARDED_BY(mu_);
  int heartbeats_ ABSL_GUARDED_BY(mu_) = 0;
  int lease_calls_ ABSL_GUARDED_BY(mu_) = 0;
  compress::v1::Device last_device_ ABSL_GUARDED_BY(mu_);
};

}  // namespace compress::worker::testing

#endif  // COMPRESS_TESTS_AGENT_FAKE_WORKER_SERVICE_H_
