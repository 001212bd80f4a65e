// TLS of compressd's port through real gRPC on loopback, with a CA, a server and a client
// certificate made by openssl for each run, dialled with compressctl's and compress-worker's
// Dial; and the rule deciding which security flags may listen where.
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/dial.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/rpc/security_config.h"
#include "tests/common/test_dir.h"
#include "tests/server/rpc/secure_server.h"

namespace compress::server {
namespace {

using ::testing::HasSubstr;

TEST(SecurityConfigTest, LoopbackHosts) {
  for (const char* host : {"127.0.0.1", "127.1.2.3", "localhost", "[::1]", "::1"}) {
    EXPECT_TRUE(IsLoopbackHost(host)) << host;
  }
  for (const char* host :
       {"0.0.0.0", "", "[::]", "10.0.0.1", "128.0.0.1", "compressd", "127.0.0"}) {
    EXPECT_FALSE(IsLoopbackHost(host)) << host;
  }
  EXPECT_EQ(HostOfAddress("[::1]:50051"), "[::1]");
  EXPECT_EQ(HostOfAddress("0.0.0.0:0"), "0.0.0.0");
}

TEST(SecurityConfigTest, TheRule) {
  SecurityConfig config;
  config.address = "127.0.0.1:50051";
  EXPECT_EQ(CheckSecurityConfig(config).code(), absl::StatusCode::kInvalidArgument)
      << "neither tokens nor --insecure";
  config.insecure = true;
  EXPECT_TRUE(CheckSecurityConfig(config).ok());
  config.address = "0.0.0.0:50051";
  absl::Status remote = CheckSecurityConfig(config);
  EXPECT_EQ(remote.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(remote.message(), HasSubstr("--insecure_allow_remote"));
  config.allow_remote = true;
  EXPECT_TRUE(CheckSecurityConfig(config).ok());

  config = SecurityConfig{};
  config.address = "0.0.0.0:50051";
  config.token_file = "tokens";
  EXPECT_EQ(CheckSecurityConfig(config).code(), absl::StatusCode::kFailedPrecondition)
      << "tokens in plaintext on the network";
  config.tls_cert = "cert.pem";
  EXPECT_EQ(CheckSecurityConfig(config).code(), absl::StatusCode::kInvalidArgument)
      << "cert without key";
  config.tls_key = "key.pem";
  EXPECT_TRUE(CheckSecurityConfig(config).ok());
  config.insecure = true;
  EXPECT_EQ(CheckSecurityConfig(config).code(), absl::StatusCode::kInvalidArgument);

  config = SecurityConfig{};
  config.address = "127.0.0.1:1";
  config.token_file = "tokens";
  EXPECT_TRUE(CheckSecurityConfig(config).ok()) << "tokens in plaintext on loopback";
  config.tls_client_ca = "ca.pem";
  EXPECT_EQ(CheckSecurityConfig(config).code(), absl::StatusCode::kInvalidArgument);
}

// TLS with a CA, a server certificate for "compressd.test" and a client certificate, made by
// openssl for the test suite.
class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TestDir();
    const std::string script =
        absl::StrCat("set -e; cd '", dir_->path(), "'; exec >openssl.log 2>&1; ",
                     "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 "
                     "-subj /CN=compressd-test-ca; ",
                     "printf 'subjectAltName=DNS:compressd.test\\n' >server.ext; ",
                     "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
                     "-subj /CN=compressd.test; ",
                     "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                     "-out server.pem -days 1 -extfile server.ext; ",
                     "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
                     "-subj /CN=compressd-test-client; ",
                     "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                     "-out client.pem -days 1");
    ok_ = std::system(script.c_str()) == 0;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(ok_) << "openssl failed; see " << dir_->File("openssl.log");
    std::ofstream(data_.File("tokens")) << TokenFileText();
  }

  void Start(bool mutual) {
    SecurityConfig config;
    config.address = "127.0.0.1:0";
    config.token_file = data_.File("tokens");
    config.tls_cert = dir_->File("server.pem");
    config.tls_key = dir_->File("server.key");
    if (mutual) config.tls_client_ca = dir_->File("ca.pem");
    ASSERT_TRUE(CheckSecurityConfig(config).ok());
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
        MakeServerCredentials(config);
    ASSERT_TRUE(credentials.ok()) << credentials.status();
    SecureServer::Options options;
    options.credentials = *credentials;
    options.token_file = config.token_file;
    server_ = std::make_unique<SecureServer>(data_, options);
  }

  // ListJobs through a channel made by compressctl's and compress-worker's Dial.
  grpc::Status ListThrough(const client::ChannelSecurity& security) {
    grpc::ChannelArguments args;
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        client::Dial(server_->address(), security, args);
    EXPECT_TRUE(channel.ok()) << channel.status();
    if (!channel.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "dial");
    auto stub = v1::CompressionService::NewStub(*channel);
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ListJobsRequest request;
    v1::ListJobsResponse response;
    return stub->ListJobs(context.get(), request, &response);
  }

  static client::ChannelSecurity Verified() {
    client::ChannelSecurity security;
    security.tls_ca = dir_->File("ca.pem");
    security.tls_server_name = "compressd.test";
    security.token = kAlphaViewer;
    return security;
  }

  static TestDir* dir_;
  static bool ok_;
  TestDir data_;
  std::unique_ptr<SecureServer> server_;
};

TestDir* TlsTest::dir_ = nullptr;
bool TlsTest::ok_ = false;

TEST_F(TlsTest, VerifiedClientWithTokenConnects) {
  Start(/*mutual=*/false);
  grpc::Status status = ListThrough(Verified());
  EXPECT_TRUE(status.ok()) << status.error_message();
  client::ChannelSecurity no_token = Verified();
  no_token.token.clear();
  EXPECT_EQ(ListThrough(no_token).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(TlsTest, PlaintextClientOrUnknownCaFails) {
  Start(/*mutual=*/false);
  client::ChannelSecurity plain;
  plain.token = kAlphaViewer;
  EXPECT_EQ(ListThrough(plain).error_code(), grpc::StatusCode::UNAVAILABLE);
  client::ChannelSecurity wrong_ca = Verified();
  wrong_ca.tls_ca = dir_->File("client.pem");  // not the CA that signed the server
  EXPECT_EQ(ListThrough(wrong_ca).error_code(), grpc::StatusCode::UNAVAILABLE);
  client::ChannelSecurity wrong_name = Verified();
  wrong_name.tls_server_name = "elsewhere.test";
  EXPECT_EQ(ListThrough(wrong_name).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, MutualTlsNeedsAClientCertificate) {
  Start(/*mutual=*/true);
  EXPECT_EQ(ListThrough(Verified()).error_code(), grpc::StatusCode::UNAVAILABLE);
  client::ChannelSecurity with_cert = Verified();
  with_cert.tls_cert = dir_->File("client.pem");
  with_cert.tls_key = dir_->File("client.key");
  grpc::Status status = ListThrough(with_cert);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(TlsTest, MissingOrNonPemFilesAreReported) {
  SecurityConfig config;
  config.tls_cert = data_.File("absent.pem");
  config.tls_key = dir_->File("server.key");
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> missing = MakeServerCredentials(config);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("--tls_cert"));
  config.tls_cert = data_.File("tokens");
  EXPECT_EQ(MakeServerCredentials(config).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace compress::server
