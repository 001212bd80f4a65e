// The check of a gRPC address given on a command line (compressd's listening addresses, the
// address compressctl and compress-worker dial), shared so that every program accepts the same
// forms and names the flag the same way.
#ifndef COMPRESS_WORKER_EVENTS_GRPC_ADDRESS_H_
#define COMPRESS_WORKER_EVENTS_GRPC_ADDRESS_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace compress {

// Checks `address`, the value of the flag `flag` (e.g. "--server"): HOST:PORT or [IPV6]:PORT,
// PORT a decimal number in [0, 65535] (0 for a listening address: the kernel picks a free port),
// also after gRPC's "dns:" or "dns://AUTHORITY/" prefix; with `allow_unix_socket`, unix:PATH and
// unix-abstract:NAME (gRPC's Unix domain sockets) too. INVALID_ARGUMENT naming the flag and the
// address otherwise: gRPC would use the port modulo 65536, or port 443 when none is given.
absl::Status CheckGrpcAddress(absl::string_view flag, absl::string_view address,
                              bool allow_unix_socket);

}  // namespace compress

#endif  // COMPRESS_WORKER_EVENTS_GRPC_ADDRESS_H_
