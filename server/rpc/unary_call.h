// RunUnaryOnPool: the shape of every unary method: the work runs on the thread pool, its status
// finishes the call. RunUnaryOnPoolAsync: the same for work that finishes the call later.
#ifndef COMPRESS_SERVER_RPC_UNARY_CALL_H_
#define COMPRESS_SERVER_RPC_UNARY_CALL_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <utility>

#include "absl/status/status.h"
#include "server/rpc/status_util.h"
#include "server/rpc/thread_pool.h"

namespace compress::server {

// RunUnaryOnPool for work that ends later, elsewhere: `work` gets a `finish` to call exactly once
// with the call's status (from any thread); the response must be filled before. A call whose
// deadline passed (or that was cancelled) while it waited for a pool thread ends
// DEADLINE_EXCEEDED (CANCELLED) without running `work`.
using FinishCall = std::function<void(const absl::Status&)>;
template <typename Work>
grpc::ServerUnaryReactor* RunUnaryOnPoolAsync(grpc::CallbackServerContext* context,
                                              ThreadPool* pool, Work work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  pool->Schedule([context, reactor, work = std::move(work)]() mutable {
    if (context->deadline() <= std::chrono::system_clock::now()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                   "the deadline passed before the call was served"));
      return;
    }
    if (context->IsCancelled()) {
      reactor->Finish(grpc::Status::CANCELLED);
      return;
    }
    work(FinishCall(
        [reactor](const absl::Status& status) { reactor->Finish(ToGrpcStatus(status)); }));
  });
  return reactor;
}

// `work` returns an absl::Status and fills the response it captured; the request and response
// stay valid until Finish.
template <typename Work>
grpc::ServerUnaryReactor* RunUnaryOnPool(grpc::CallbackServerContext* context, ThreadPool* pool,
                                         Work work) {
  return RunUnaryOnPoolAsync(
      context, pool,
      [work = std::move(work)](const FinishCall& finish) mutable { finish(work()); });
}

// A unary call that ends at once with `status` (a request refused before any work started).
inline grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                             const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_UNARY_CALL_H_
