// SecurityConfig: how compressd's gRPC port is protected (TLS, bearer tokens), and the rule
// that decides which combinations may listen where.
//
// The rule (docs/server.md, "Security"): compressd authenticates with a token file
// (--token_file) unless it is started with --insecure; it never runs unauthenticated by
// accident. A port that is not on loopback needs both tokens and TLS, unless
// --insecure_allow_remote says plaintext or unauthenticated access from the network is wanted.
// One port serves both CompressionService and WorkerService, so the same TLS settings (and, with
// --tls_client_ca, the same client-certificate requirement) apply to clients and workers.
#ifndef COMPRESS_SERVER_RPC_SECURITY_CONFIG_H_
#define COMPRESS_SERVER_RPC_SECURITY_CONFIG_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace compress::server {

struct SecurityConfig {
  // host:port the gRPC services listen on.
  std::string address;
  // No bearer tokens: every caller may do everything (--insecure).
  bool insecure = false;
  // Allows a non-loopback address without tokens or without TLS (--insecure_allow_remote).
  bool allow_remote = false;
  // The token file (--token_file); empty = none.
  std::string token_file;
  // PEM files of the server's certificate chain and private key (--tls_cert, --tls_key); both
  // empty = plaintext.
  std::string tls_cert;
  std::string tls_key;
  // PEM file of the CAs that sign client certificates (--tls_client_ca); set = mutual TLS:
  // every client must present a certificate they signed.
  std::string tls_client_ca;

  bool tls() const { return !tls_cert.empty(); }
};

// True for "localhost", 127.0.0.0/8 and ::1 (with or without brackets).
bool IsLoopbackHost(absl::string_view host);
// The host part of "host:port" or "[v6]:port".
std::string HostOfAddress(absl::string_view address);

// Applies the rule above. INVALID_ARGUMENT (naming the flag) for contradictory or incomplete
// flags; FAILED_PRECONDITION when the combination may not listen on `address`.
absl::Status CheckSecurityConfig(const SecurityConfig& config);

// The credentials of the listening port: TLS from the PEM files, or plaintext. NOT_FOUND /
// INVALID_ARGUMENT naming the flag when a file cannot be read or is not PEM.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const SecurityConfig& config);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_SECURITY_CONFIG_H_
