// The one mapping from absl::Status to grpc::Status.
#ifndef COMPRESS_SERVER_RPC_STATUS_UTIL_H_
#define COMPRESS_SERVER_RPC_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace compress::server {

// Same code (the canonical codes share their numbers) and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_STATUS_UTIL_H_
