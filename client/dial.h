// Dial: a channel to compressd with the caller's transport security (TLS, optionally with a
// client certificate) and bearer token, shared by compressctl and compress-worker.
//
// The token travels as `authorization: Bearer TOKEN` metadata on every call, added by a client
// interceptor, so it works on TLS and (for loopback tests) on plaintext channels alike.
#ifndef COMPRESS_CLIENT_DIAL_H_
#define COMPRESS_CLIENT_DIAL_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/channel_arguments.h"

namespace compress::client {

struct ChannelSecurity {
  // Use TLS. Implied by any of the tls_* files below.
  bool tls = false;
  // PEM file of the CAs that sign the server's certificate; empty = the system's roots.
  std::string tls_ca;
  // PEM files of a client certificate and its key, for servers that require one (mutual TLS).
  std::string tls_cert;
  std::string tls_key;
  // The name the server's certificate must carry, when it differs from the dialled host (tests,
  // or dialling by IP address).
  std::string tls_server_name;
  // The bearer token; empty = none.
  std::string token;

  bool UsesTls() const {
    return tls || !tls_ca.empty() || !tls_cert.empty() || !tls_key.empty() ||
           !tls_server_name.empty();
  }
};

// A channel to `target` with `security` and `args`. An error naming the flag when a file cannot
// be read (the code its errno maps to, and why), INVALID_ARGUMENT when only one of tls_cert and
// tls_key is given;
// INVALID_ARGUMENT when the token holds a byte gRPC refuses in metadata (see CleanToken).
absl::StatusOr<std::shared_ptr<grpc::Channel>> Dial(const std::string& target,
                                                    const ChannelSecurity& security,
                                                    grpc::ChannelArguments args);

// Makes the channel ping compressd after `time` without any frame from it, and drop the
// connection when the answer has not come within `timeout`, so that a call on a connection to a
// server that vanished without closing it (a machine that lost power) fails UNAVAILABLE (and is
// retried where the caller retries) instead of waiting for TCP's hours. compressd accepts pings
// every 10 s or more (server/rpc/keepalive.h).
void SetKeepalive(grpc::ChannelArguments* args, absl::Duration time = absl::Seconds(30),
                  absl::Duration timeout = absl::Seconds(10));

// The token in `raw`, as it came from `source` (a flag, an environment variable or a file; named
// in errors): without surrounding whitespace (the "\r\n" of a file saved on Windows) and a
// leading UTF-8 byte order mark. gRPC accepts only printable ASCII (0x20-0x7e) in metadata and
// aborts a call with any other byte, so such a byte left in the token is INVALID_ARGUMENT naming
// `source` and the byte's offset in `raw`. Empty when `raw` holds nothing else.
absl::StatusOr<std::string> CleanToken(absl::string_view source, absl::string_view raw);

// The token in `path`, cleaned as by CleanToken. When unreadable, the code its errno maps to
// (NOT_FOUND, FAILED_PRECONDITION for a directory, ...) and why; INVALID_ARGUMENT when empty,
// holding more than one line or a byte that is not printable ASCII.
absl::StatusOr<std::string> ReadTokenFile(const std::string& flag, const std::string& path);

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_DIAL_H_
