// Server keepalive: compressd pings every connection that has been quiet for a while and closes
// those that do not answer, so that the calls of a client (or worker) that vanished without
// closing its connection (a machine that lost power) end within a minute or two, giving back
// their watches, file transfers and long polls, instead of after TCP's own hours.
#ifndef COMPRESS_SERVER_RPC_KEEPALIVE_H_
#define COMPRESS_SERVER_RPC_KEEPALIVE_H_

#include <grpcpp/server_builder.h>

#include "absl/time/time.h"

namespace compress::server {

struct Keepalive {
  // A ping after this long without any frame from the peer.
  absl::Duration time = absl::Seconds(60);
  // The connection is closed when the ping's answer has not come within this long.
  absl::Duration timeout = absl::Seconds(20);
};

// Sets `keepalive` on `builder`; also lets clients ping every 10 s or more, with or without
// calls (compressctl and compress-worker ping every 30 s: client/dial.h).
void ApplyKeepalive(const Keepalive& keepalive, grpc::ServerBuilder* builder);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_KEEPALIVE_H_
