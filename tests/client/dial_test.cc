// Dial: the bearer token reaches the server on every call; token files are read strictly.
#include "client/dial.h"

#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace compress::client {
namespace {

using ::testing::HasSubstr;

// Answers GetJob with a job whose name is the call's authorization metadata ("" when absent).
class EchoAuthorization final : public v1::CompressionService::CallbackService {
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* /*request*/,
                                   v1::Job* response) override {
    auto it = context->client_metadata().find("authorization");
    if (it != context->client_metadata().end()) {
      response->set_name(std::string(it->second.data(), it->second.size()));
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

class DialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    char dir[] = "/tmp/dial_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  std::string AuthorizationSeen(const ChannelSecurity& security) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        Dial(absl::StrCat("127.0.0.1:", port_), security, grpc::ChannelArguments());
    EXPECT_TRUE(channel.ok()) << channel.status();
    auto stub = v1::CompressionService::NewStub(*channel);
    std::string seen;
    for (int i = 0; i < 2; ++i) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      v1::GetJobRequest request;
      v1::Job job;
      grpc::Status status = stub->GetJob(&context, request, &job);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (i == 1) {
        EXPECT_EQ(job.name(), seen) << "every call carries the token";
      }
      seen = job.name();
    }
    return seen;
  }

  EchoAuthorization service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string dir_;
};

TEST_F(DialTest, SendsTheBearerTokenOnEveryCall) {
  ChannelSecurity security;
  security.token = "tok-0123456789abcdef";
  EXPECT_EQ(AuthorizationSeen(security), "Bearer tok-0123456789abcdef");
}

TEST_F(DialTest, NoTokenSendsNoAuthorization) {
  EXPECT_EQ(AuthorizationSeen(ChannelSecurity{}), "");
}

TEST_F(DialTest, TlsFlagsAreChecked) {
  ChannelSecurity half;
  half.tls_cert = dir_ + "/cert.pem";
  EXPECT_EQ(Dial("127.0.0.1:1", half, grpc::ChannelArguments()).status().code(),
            absl::StatusCode::kInvalidArgument);
  ChannelSecurity missing_ca;
  missing_ca.tls_ca = dir_ + "/absent.pem";
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      Dial("127.0.0.1:1", missing_ca, grpc::ChannelArguments());
  EXPECT_EQ(channel.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(channel.status().message(), HasSubstr("--tls_ca"));
}

TEST_F(DialTest, ReadTokenFileTrimsAndRefusesEmptyOrSeveralLines) {
  std::ofstream(dir_ + "/token") << "  tok-0123456789abcdef \n";
  EXPECT_EQ(*ReadTokenFile("--token_file", dir_ + "/token"), "tok-0123456789abcdef");
  std::ofstream(dir_ + "/empty") << "\n";
  EXPECT_EQ(ReadTokenFile("--token_file", dir_ + "/empty").status().code(),
            absl::StatusCode::kInvalidArgument);
  std::ofstream(dir_ + "/two") << "a\nb\n";
  EXPECT_EQ(ReadTokenFile("--token_file", dir_ + "/two").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadTokenFile("--token_file", dir_ + "/absent").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(DialTest, AFileThatCannotBeReadSaysWhy) {
  absl::StatusOr<std::string> missing = ReadTokenFile("--token_file", dir_ + "/absent");
  EXPECT_EQ(missing.status().message(),
            absl::StrCat("--token_file: cannot read ", dir_, "/absent: No such file or directory"));
  // A directory used to read as an empty file ("... is empty").
  absl::StatusOr<std::string> directory = ReadTokenFile("--token_file", dir_);
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(directory.status().message(),
            absl::StrCat("--token_file: cannot read ", dir_, ": Is a directory"));
  ChannelSecurity security;
  security.tls_ca = dir_;
  EXPECT_THAT(Dial("127.0.0.1:1", security, grpc::ChannelArguments()).status().message(),
              HasSubstr(absl::StrCat("--tls_ca: cannot read ", dir_, ": Is a directory")));
}

TEST_F(DialTest, TokensLoseSurroundingWhitespaceAndAByteOrderMark) {
  EXPECT_EQ(*CleanToken("--token", "tok-1\r"), "tok-1");
  EXPECT_EQ(*CleanToken("--token", " \xEF\xBB\xBFtok-1\r\n"), "tok-1");
  EXPECT_EQ(*CleanToken("--token", "tok 1"), "tok 1");
  EXPECT_EQ(*CleanToken("--token", " \t"), "");
  std::ofstream(dir_ + "/windows", std::ios::binary) << "\xEF\xBB\xBFtok-0123456789abcdef\r\n";
  absl::StatusOr<std::string> token = ReadTokenFile("--token_file", dir_ + "/windows");
  ASSERT_TRUE(token.ok()) << token.status();
  ChannelSecurity security;
  security.token = *token;
  EXPECT_EQ(AuthorizationSeen(security), "Bearer tok-0123456789abcdef");
}

TEST_F(DialTest, TokensWithBytesGrpcRefusesAreErrorsNamingTheSourceAndOffset) {
  absl::StatusOr<std::string> control = CleanToken("$COMPRESS_TOKEN",
                                                   "tok\x07"
                                                   "en");
  EXPECT_EQ(control.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(control.status().message(),
              HasSubstr("$COMPRESS_TOKEN: byte 0x07 at offset 3 is not printable ASCII"));
  // The offset counts from the start of what was given, before stripping.
  absl::StatusOr<std::string> utf8 = CleanToken("--token", "  caf\xC3\xA9");
  EXPECT_THAT(utf8.status().message(), HasSubstr("--token: byte 0xc3 at offset 5"));
  std::ofstream(dir_ + "/latin1", std::ios::binary) << "tok\xE9\n";
  absl::StatusOr<std::string> file = ReadTokenFile("--token_file", dir_ + "/latin1");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(),
              HasSubstr(absl::StrCat("--token_file: ", dir_, "/latin1: byte 0xe9 at offset 3")));
  // Dial refuses such a token instead of letting gRPC abort the first call.
  ChannelSecurity security;
  security.token = "tok\r";
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      Dial("127.0.0.1:1", security, grpc::ChannelArguments());
  EXPECT_EQ(channel.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(channel.status().message(), HasSubstr("token: byte 0x0d at offset 3"));
}

}  // namespace
}  // namespace compress::client
