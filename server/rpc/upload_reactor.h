// UploadReactor: the plumbing of client-streaming uploads (UploadBlob, UploadArtifact).
#ifndef COMPRESS_SERVER_RPC_UPLOAD_REACTOR_H_
#define COMPRESS_SERVER_RPC_UPLOAD_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/status/status.h"
#include "server/rpc/file_stream_limit.h"
#include "server/rpc/status_util.h"
#include "server/rpc/thread_pool.h"

namespace compress::server {

// Reads the request stream one message at a time; each message is handled on the thread pool
// (file writes), and the next read starts only once it was, so messages are handled in order and
// gRPC's threads never wait on the disk. When the client half-closes, Complete() runs on the pool
// and its status ends the call; the first error ends it at once. A cancelled call ends
// CANCELLED without Complete(). Deletes itself in OnDone; subclasses discard unfinished work in
// their destructors.
template <typename Request>
class UploadReactor : public grpc::ServerReadReactor<Request> {
 public:
  UploadReactor(grpc::CallbackServerContext* context, ThreadPool* pool)
      : context_(context), pool_(pool) {}

  // Starts the first read, holding `slot` until the call is over. Called by the service once the
  // object is fully built.
  void Start(FileStreamLimit::Slot slot) {
    slot_ = std::move(slot);
    this->StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    // A message, or the client's half-close: Complete() (the file's fsync) gets a whole idle
    // timeout of its own.
    slot_.Progress();
    if (!ok) {
      if (context_->IsCancelled()) {
        this->Finish(grpc::Status::CANCELLED);
        return;
      }
      pool_->Schedule([this] { this->Finish(ToGrpcStatus(Complete())); });
      return;
    }
    pool_->Schedule([this] {
      if (absl::Status status = HandleMessage(request_); !status.ok()) {
        this->Finish(ToGrpcStatus(status));
        return;
      }
      this->StartRead(&request_);
    });
  }

  void OnDone() override { delete this; }

 protected:
  // Run on the pool, one at a time.
  virtual absl::Status HandleMessage(const Request& request) = 0;
  virtual absl::Status Complete() = 0;

 private:
  grpc::CallbackServerContext* const context_;
  ThreadPool* const pool_;
  Request request_;
  // A base member, so given back after the subclass's file is closed.
  FileStreamLimit::Slot slot_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_UPLOAD_REACTOR_H_
