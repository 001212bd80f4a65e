#include "server/rpc/security_config.h"

#include <grpcpp/security/server_credentials.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace compress::server {
namespace {

absl::StatusOr<std::string> ReadPem(absl::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(flag, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  std::string pem = text.str();
  if (!absl::StrContains(pem, "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is not a PEM file"));
  }
  return pem;
}

}  // namespace

bool IsLoopbackHost(absl::string_view host) {
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost" || host == "::1") return true;
  std::vector<absl::string_view> octets = absl::StrSplit(host, '.');
  if (octets.size() != 4) return false;
  for (absl::string_view octet : octets) {
    int value = 0;
    if (!absl::SimpleAtoi(octet, &value) || value < 0 || value > 255) return false;
  }
  return octets[0] == "127";
}

std::string HostOfAddress(absl::string_view address) {
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return std::string(address);
  return std::string(address.substr(0, colon));
}

absl::Status CheckSecurityConfig(const SecurityConfig& config) {
  if (config.tls_cert.empty() != config.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key: give both or neither");
  }
  if (!config.tls_client_ca.empty() && !config.tls()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca: mutual TLS needs --tls_cert and --tls_key too");
  }
  if (config.insecure && !config.token_file.empty()) {
    return absl::InvalidArgumentError(
        "--insecure and --token_file: --insecure turns authentication off; give one of them");
  }
  if (!config.insecure && config.token_file.empty()) {
    return absl::InvalidArgumentError(
        "no authentication configured: give --token_file (with --tls_cert/--tls_key), or "
        "--insecure to run without authentication");
  }
  const std::string host = HostOfAddress(config.address);
  if (!IsLoopbackHost(host) && !config.allow_remote) {
    if (config.insecure) {
      return absl::FailedPreconditionError(
          absl::StrCat("--insecure: refusing to serve without authentication on ", config.address,
                       ", which is not a loopback address; listen on 127.0.0.1, or add "
                       "--insecure_allow_remote"));
    }
    if (!config.tls()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--token_file without --tls_cert/--tls_key: refusing to accept bearer tokens in "
          "plaintext on ",
          config.address,
          ", which is not a loopback address; add TLS, or --insecure_allow_remote"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const SecurityConfig& config) {
  if (!config.tls()) return grpc::InsecureServerCredentials();
  absl::StatusOr<std::string> cert = ReadPem("--tls_cert", config.tls_cert);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("--tls_key", config.tls_key);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(
      config.tls_client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                   : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!config.tls_client_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("--tls_client_ca", config.tls_client_ca);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
  }
  options.pem_key_cert_pairs.push_back({*std::move(key), *std::move(cert)});
  return grpc::SslServerCredentials(options);
}

}  // namespace compress::server
