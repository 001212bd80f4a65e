// RunUnaryOnPool: the shape of every unary method: the work runs on the thread pool, its status
// finishes the call.
#ifndef COMPRESS_SERVER_RPC_UNARY_CALL_H_
#define COMPRESS_SERVER_RPC_UNARY_CALL_H_

#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/status/status.h"
#include "server/rpc/status_util.h"
#include "server/rpc/thread_pool.h"

namespace compress::server {

// `work` returns an absl::Status and fills the response it captured; the request and response
// stay valid until Finish.
template <typename Work>
grpc::ServerUnaryReactor* RunUnaryOnPool(grpc::CallbackServerContext* context, ThreadPool* pool,
                                         Work work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  pool->Schedule([reactor, work = std::move(work)]() mutable {
    absl::Status status = work();
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_UNARY_CALL_H_
