// FakeCompressionService: an in-process CompressionService for the CLI's tests. It serves one
// job with canned events and artifacts, and can break or cancel streams to exercise resumption.
#ifndef COMPRESS_TESTS_CLIENT_FAKE_COMPRESSION_SERVICE_H_
#define COMPRESS_TESTS_CLIENT_FAKE_COMPRESSION_SERVICE_H_

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "grpcpp/server_context.h"
#include "worker/events/sha256.h"

namespace compress::client::testing {

// Thread-safe.
class FakeCompressionService final : public compress::v1::CompressionService::Service {
 public:
  FakeCompressionService() { job_.set_name("jobs/j1"); }

  void SetJob(const compress::v1::Job& job) {
    absl::MutexLock lock(&mu_);
    job_ = job;
  }
  void AddEvent(const compress::v1::JobEvent& event) {
    absl::MutexLock lock(&mu_);
    events_.push_back(event);
    job_.set_last_event_sequence(event.sequence());
  }
  void AddArtifact(const std::string& name, const std::string& data) {
    absl::MutexLock lock(&mu_);
    artifact_data_[name] = data;
    compress::v1::Artifact* artifact = job_.add_artifacts();
    artifact->set_name(name);
    artifact->set_size_bytes(static_cast<int64_t>(data.size()));
    artifact->set_sha256(Sha256Hex(data));
  }
  // Serve other bytes than the artifact's metadata says (a corrupt store).
  void CorruptArtifact(const std::string& name, const std::string& data) {
    absl::MutexLock lock(&mu_);
    artifact_data_[name] = data;
  }
  // Each WatchJob / ReadArtifact stream sends at most this many messages, then fails with
  // UNAVAILABLE (0 = no limit).
  void BreakStreamsAfter(int messages) {
    absl::MutexLock lock(&mu_);
    break_after_ = messages;
  }

  // While set, GetJob and WatchJob fail UNAVAILABLE at once, as while compressd restarts.
  void SetUnavailable(bool unavailable) {
    absl::MutexLock lock(&mu_);
    unavailable_ = unavailable;
  }
  // While set, a WatchJob stream stays open after its events until the client's deadline passes
  // or the fake becomes unavailable, as compressd's does for a job with nothing new.
  void HoldWatchStreams(bool hold) {
    absl::MutexLock lock(&mu_);
    hold_watches_ = hold;
  }

  // The next `calls` ReadArtifact streams are cancelled by the server, as compressd's idle watch
  // cancels a transfer that stood still (the client sees plain CANCELLED): each after `chunks`
  // messages and `stall` more.
  void CancelReads(int calls, int chunks, absl::Duration stall = absl::ZeroDuration()) {
    absl::MutexLock lock(&mu_);
    read_cancels_left_ = calls;
    read_cancel_after_ = chunks;
    read_cancel_stall_ = stall;
  }

  std::vector<int64_t> watch_offsets() const {
    absl::MutexLock lock(&mu_);
    return watch_offsets_;
  }
  std::vector<int64_t> read_offsets() const {
    absl::MutexLock lock(&mu_);
    return read_offsets_;
  }
  compress::v1::CreateJobRequest last_create() const {
    absl::MutexLock lock(&mu_);
    return last_create_;
  }

  grpc::Status CreateJob(grpc::ServerContext*, const compress::v1::CreateJobRequest* request,
                         compress::v1::Job* response) override {
    absl::MutexLock lock(&mu_);
    last_create_ = *request;
    *response = job_;
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext*, const compress::v1::GetJobRequest* request,
                      compress::v1::Job* response) override {
    absl::MutexLock lock(&mu_);
    if (unavailable_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake unavailable");
    if (request->name() != job_.name()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, request->name() + " not found");
    }
    *response = job_;
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext* context, const compress::v1::WatchJobRequest* request,
                        grpc::ServerWriter<compress::v1::JobEvent>* writer) override {
    std::vector<compress::v1::JobEvent> events;
    int break_after;
    bool hold;
    {
      absl::MutexLock lock(&mu_);
      if (unavailable_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake unavailable");
      if (request->name() != job_.name()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND, request->name() + " not found");
      }
      watch_offsets_.push_back(request->after_sequence());
      events = events_;
      break_after = break_after_;
      hold = hold_watches_;
    }
    int sent = 0;
    for (const compress::v1::JobEvent& event : events) {
      if (event.sequence() <= request->after_sequence()) continue;
      if (break_after > 0 && sent == break_after) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream broken by the fake");
      }
      writer->Write(event);
      ++sent;
    }
    while (hold && !context->IsCancelled()) {
      absl::SleepFor(absl::Milliseconds(10));
      absl::MutexLock lock(&mu_);
      if (unavailable_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake unavailable");
    }
    return grpc::Status::OK;
  }

  grpc::Status ReadArtifact(
      grpc::ServerContext* context, const compress::v1::ReadArtifactRequest* request,
      grpc::ServerWriter<compress::v1::ReadArtifactResponse>* writer) override {
    std::string data;
    int break_after;
    int cancel_after = -1;  // messages sent before the server cancels the call; -1: never
    absl::Duration stall;
    {
      absl::MutexLock lock(&mu_);
      std::string prefix = job_.name() + "/artifacts/";
      if (request->name().rfind(prefix, 0) != 0 ||
          artifact_data_.count(request->name().substr(prefix.size())) == 0) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND, request->name() + " not found");
      }
      data = artifact_data_[request->name().substr(prefix.size())];
      read_offsets_.push_back(request->offset());
      break_after = break_after_;
      if (read_cancels_left_ > 0) {
        --read_cancels_left_;
        cancel_after = read_cancel_after_;
        stall = read_cancel_stall_;
      }
    }
    size_t chunk = request->chunk_size() > 0 ? static_cast<size_t>(request->chunk_size()) : 1024;
    int sent = 0;
    for (size_t offset = static_cast<size_t>(request->offset()); offset < data.size();
         offset += chunk) {
      if (break_after > 0 && sent == break_after) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream broken by the fake");
      }
      if (sent == cancel_after) {
        absl::SleepFor(stall);
        context->TryCancel();
        return grpc::Status::CANCELLED;
      }
      compress::v1::ReadArtifactResponse response;
      response.set_offset(static_cast<int64_t>(offset));
      response.set_data(data.substr(offset, chunk));
      if (offset + chunk >= data.size()) {
        response.set_size_bytes(static_cast<int64_t>(data.size()));
        response.set_sha256(Sha256Hex(data));
      }
      writer->Write(response);
      ++sent;
    }
    return grpc::Status::OK;
  }

 private:
  mutable absl::Mutex mu_;
  compress::v1::Job job_ ABSL_GUARDED_BY(mu_);
  std::vector<compress::v1::JobEvent> events_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> artifact_data_ ABSL_GUARDED_BY(mu_);
  int break_after_ ABSL_GUARDED_BY(mu_) = 0;
  bool unavailable_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_watches_ ABSL_GUARDED_BY(mu_) = false;
  int read_cancels_left_ ABSL_GUARDED_BY(mu_) = 0;
  int read_cancel_after_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration read_cancel_stall_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> watch_offsets_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> read_offsets_ ABSL_GUARDED_BY(mu_);
  compress::v1::CreateJobRequest last_create_ ABSL_GUARDED_BY(mu_);
};

}  // namespace compress::client::testing

#endif  // COMPRESS_TESTS_CLIENT_FAKE_COMPRESSION_SERVICE_H_
