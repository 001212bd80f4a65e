// FailedStream: a streaming call that ends at once with an error (a request that failed
// validation before any work started).
#ifndef COMPRESS_SERVER_RPC_FAILED_STREAM_H_
#define COMPRESS_SERVER_RPC_FAILED_STREAM_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "server/rpc/status_util.h"

namespace compress::server {

// `Reactor` is a grpc::ServerWriteReactor<T> or grpc::ServerReadReactor<T>. Deletes itself.
template <typename Reactor>
class FailedStream : public Reactor {
 public:
  explicit FailedStream(const absl::Status& status) { this->Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_FAILED_STREAM_H_
