#include "client/dial.h"

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "client/local_file.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"

namespace compress::client {
namespace {

// Adds the bearer token to the initial metadata of every call.
class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* value) : value_(value) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *value_});
    }
    methods->Proceed();
  }

 private:
  const std::string* const value_;  // owned by the factory
};

class BearerTokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token)
      : value_(absl::StrCat("Bearer ", token)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new BearerTokenInterceptor(&value_);
  }

 private:
  const std::string value_;
};

absl::StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> text = ReadLocalFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat(flag, ": ", text.status().message()));
  }
  return text;
}

// The offset of the first byte of `text` that gRPC refuses in a metadata value, or npos.
size_t FirstNonPrintable(absl::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c > 0x7e) return i;
  }
  return absl::string_view::npos;
}

absl::Status NonPrintableError(absl::string_view source, unsigned char byte, size_t offset) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: byte 0x%02x at offset %d is not printable ASCII; a token may hold only characters "
      "0x20-0x7e",
      source, byte, offset));
}

}  // namespace

absl::StatusOr<std::string> CleanToken(absl::string_view source, absl::string_view raw) {
  constexpr absl::string_view kByteOrderMark = "\xEF\xBB\xBF";
  size_t begin = 0;
  size_t end = raw.size();
  auto skip_space = [&] {
    while (begin < end && absl::ascii_isspace(static_cast<unsigned char>(raw[begin]))) ++begin;
  };
  skip_space();
  if (absl::StartsWith(raw.substr(begin), kByteOrderMark)) {
    begin += kByteOrderMark.size();
    skip_space();
  }
  while (end > begin && absl::ascii_isspace(static_cast<unsigned char>(raw[end - 1]))) --end;
  absl::string_view token = raw.substr(begin, end - begin);
  if (size_t bad = FirstNonPrintable(token); bad != absl::string_view::npos) {
    return NonPrintableError(source, static_cast<unsigned char>(token[bad]), begin + bad);
  }
  return std::string(token);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Dial(const std::string& target,
                                                    const ChannelSecurity& security,
                                                    grpc::ChannelArguments args) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (security.UsesTls()) {
    if (security.tls_cert.empty() != security.tls_key.empty()) {
      return absl::InvalidArgumentError("--tls_cert and --tls_key: give both or neither");
    }
    grpc::SslCredentialsOptions ssl;
    if (!security.tls_ca.empty()) {
      absl::StatusOr<std::string> ca = ReadFile("--tls_ca", security.tls_ca);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *std::move(ca);
    }
    if (!security.tls_cert.empty()) {
      absl::StatusOr<std::string> cert = ReadFile("--tls_cert", security.tls_cert);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadFile("--tls_key", security.tls_key);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *std::move(cert);
      ssl.pem_private_key = *std::move(key);
    }
    credentials = grpc::SslCredentials(ssl);
    if (!security.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(security.tls_server_name);
    }
  }
  if (security.token.empty()) return grpc::CreateCustomChannel(target, credentials, args);
  if (size_t bad = FirstNonPrintable(security.token); bad != absl::string_view::npos) {
    return NonPrintableError("token", static_cast<unsigned char>(security.token[bad]), bad);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<BearerTokenInterceptorFactory>(security.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, args,
                                                                 std::move(factories));
}

void SetKeepalive(grpc::ChannelArguments* args, absl::Duration time, absl::Duration timeout) {
  args->SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(absl::ToInt64Milliseconds(time)));
  args->SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  args->SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args->SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(flag, path);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::string> token = CleanToken(absl::StrCat(flag, ": ", path), *text);
  if (token.ok() && token->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is empty"));
  }
  if (absl::StrContains(absl::StripAsciiWhitespace(*text), '\n')) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", path, " must hold one token on one line"));
  }
  return token;
}

}  // namespace compress::client
