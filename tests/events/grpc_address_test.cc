#include "worker/events/grpc_address.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace compress {
namespace {

using ::testing::HasSubstr;

// A port is a decimal number in [0, 65535]: gRPC would use 99999 modulo 65536, and 443 without
// one, and logs lines of its own for an empty target.
TEST(GrpcAddressTest, HostPortAndUnixSocketsOnly) {
  for (const char* address : {"127.0.0.1:0", "127.0.0.1:65535", "localhost:50051", "0.0.0.0:000080",
                              "[::1]:0", "[::]:1", "compressd.example:443", "dns:///localhost:0",
                              "dns:localhost:0", "dns://8.8.8.8/compressd:50051"}) {
    EXPECT_TRUE(CheckGrpcAddress("--server", address, false).ok()) << address;
  }
  for (const char* address : {"unix:/run/compressd.sock", "unix-abstract:compressd"}) {
    EXPECT_TRUE(CheckGrpcAddress("--grpc_address", address, true).ok()) << address;
    absl::Status status = CheckGrpcAddress("--metrics_address", address, false);
    EXPECT_THAT(status.message(), HasSubstr("--metrics_address: expected HOST:PORT or [IPV6]:PORT"))
        << address;
  }
  EXPECT_EQ(CheckGrpcAddress("--server", "", true).message(), "--server: empty address");
  for (const char* address : {"127.0.0.1:65536", "127.0.0.1:99999", "[::1]:99999", "127.0.0.1:-1",
                              "127.0.0.1:+80", "127.0.0.1: 80", "127.0.0.1:", "127.0.0.1:http",
                              "127.0.0.1:99999999999", "dns:///localhost:70000"}) {
    absl::Status status = CheckGrpcAddress("--grpc_address", address, true);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << address;
    const std::string text = address;
    EXPECT_EQ(status.message(),
              absl::StrCat("--grpc_address: the port must be a number in [0, 65535], got '",
                           text.substr(text.rfind(':') + 1), "' in '", address, "'"));
  }
  for (const char* address :
       {"127.0.0.1", "9464", ":50051", "::1:50051", "[]:1", "127.0.0.1:0,127.0.0.1:1",
        "unix:", "http://compressd:50051", "dns:///", "compressd.example"}) {
    absl::Status status = CheckGrpcAddress("--server", address, true);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << address;
    EXPECT_EQ(status.message(),
              absl::StrCat("--server: expected HOST:PORT, [IPV6]:PORT or unix:PATH, got '", address,
                           "'"));
  }
}

}  // namespace
}  // namespace compress
