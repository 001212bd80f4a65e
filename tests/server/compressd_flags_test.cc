// compressd's security, limit and local worker flags, on the real binaries: unsafe starts,
// flags out of their ranges and a metrics address in use are refused, TLS and tokens work end to
// end with compressctl's flags, repeated --data_root flags all count, as does one in a --flagfile,
// --max_message_bytes bounds requests, and --local_worker_stop_grace bounds the wait for local
// workers at shutdown; --help and --version of compressd and compressctl.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/common/test_dir.h"
#include "worker/agent/subprocess.h"
#include "worker/events/program_usage.h"

namespace compress::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using worker::ExitInfo;
using worker::Subprocess;

TEST(CompressdFlagsTest, RefusesUnsafeStarts) {
  struct Case {
    std::vector<std::string> flags;
    const char* message;
  };
  for (const Case& c :
       {Case{{}, "no authentication configured"},
        Case{{"--insecure", "--grpc_address=0.0.0.0:0"}, "not a loopback address"},
        Case{{"--insecure", "--token_file=/dev/null"}, "give one of them"},
        Case{{"--token_file=/dev/null", "--grpc_address=0.0.0.0:0"}, "plaintext"},
        Case{{"--insecure", "--data_root=/nonexistent/root"}, "--data_root: /nonexistent/root"},
        Case{{"--insecure", "--local_worker_stop_grace=0s"},
             "--local_worker_stop_grace: must be positive, got 0"},
        Case{{"--insecure", "--local_workers=2", "--local_worker_flags=--devices=cuda:0"},
             "--local_worker_flags: --devices=cuda:0 would have all 2 --local_workers offer the "
             "same GPUs"}}) {
    Subprocess::Options options;
    options.argv = {COMPRESSD_BIN, "--metrics_address=", "--data_dir=/nonexistent/never-created"};
    options.argv.insert(options.argv.end(), c.flags.begin(), c.flags.end());
    absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    EXPECT_EQ((*started)->ReadLine(), std::nullopt) << "compressd must not listen";
    ExitInfo exit = (*started)->Wait();
    EXPECT_EQ(exit.exit_code, 1) << exit.ToString();
    EXPECT_THAT((*started)->StderrTail(), HasSubstr(c.message));
  }
}

// Starts compressd with `options`, expecting it to exit 1 without listening, with `message` on
// stderr. One that listens after all is stopped.
void ExpectRefusedAtStart(const Subprocess::Options& options, const std::string& message) {
  absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  std::optional<std::string> line = (*started)->ReadLine();
  EXPECT_EQ(line, std::nullopt) << options.argv.back() << ": must not listen";
  if (line.has_value()) (*started)->Signal(SIGTERM);
  ExitInfo exit = (*started)->Wait();
  EXPECT_EQ(exit.exit_code, 1) << options.argv.back() << ": " << exit.ToString();
  EXPECT_THAT((*started)->StderrTail(), HasSubstr(message)) << options.argv.back();
}

// Every flag out of its documented range, a port gRPC would wrap or replace, an empty
// --data_root entry and a stray argument end compressd at start, naming the flag, before it
// creates anything.
TEST(CompressdFlagsTest, RefusesFlagsOutOfRange) {
  TestDir dir;
  std::ofstream(dir.File("tokens")) << "viewer-token-0123456789 alpha viewer\n";
  struct Case {
    std::vector<std::string> flags;
    std::string message;
  };
  for (const Case& c : {
           Case{{"--grpc_address=127.0.0.1:99999"},
                "--grpc_address: the port must be a number in [0, 65535], got '99999' in "
                "'127.0.0.1:99999'"},
           Case{{"--grpc_address=127.0.0.1:65536"}, "--grpc_address: the port must be a number"},
           Case{{"--grpc_address=[::1]:70000"}, "--grpc_address: the port must be a number"},
           Case{{"--grpc_address=127.0.0.1:http"}, "--grpc_address: the port must be a number"},
           Case{{"--grpc_address=127.0.0.1"},
                "--grpc_address: expected HOST:PORT, [IPV6]:PORT or unix:PATH, got '127.0.0.1'"},
           Case{{"--metrics_address=127.0.0.1:99999"},
                "--metrics_address: the port must be a number in [0, 65535], got '99999'"},
           Case{{"--metrics_address=9464"},
                "--metrics_address: expected HOST:PORT or [IPV6]:PORT, got '9464'"},
           Case{{"--data_root="}, "--data_root: empty value; give a directory"},
           Case{{"--data_root=,"}, "--data_root: empty entry in ','"},
           Case{{absl::StrCat("--data_root=", dir.path(), ",")},
                absl::StrCat("--data_root: empty entry in '", dir.path(), ",'")},
           Case{{"--rpc_threads=0"}, "--rpc_threads: must be in [1, 1024], got 0"},
           Case{{"--rpc_threads=-1"}, "--rpc_threads: must be in [1, 1024], got -1"},
           Case{{"--local_workers=-1"}, "--local_workers: must be in [0, 1024], got -1"},
           Case{{"--max_blob_bytes=-1"}, "--max_blob_bytes: must not be negative, got -1"},
           Case{{"--max_queued_jobs_per_tenant=-1"},
                "--max_queued_jobs_per_tenant: must not be negative, got -1"},
           Case{{"--max_concurrent_streams=-1"},
                "--max_concurrent_streams: must not be negative, got -1"},
           Case{{"--shutdown_grace=-1s"}, "--shutdown_grace: must be in [0, 24h], got -1s"},
           Case{{"--shutdown_grace=inf"}, "--shutdown_grace: must be in [0, 24h], got inf"},
           Case{{"--lease_seconds=0"}, "--lease_seconds: must be positive, got 0"},
           Case{{"--max_attempts=0"}, "--max_attempts: must be in [1, 100], got 0"},
           Case{{"--file_stream_idle_timeout=-1s"},
                "--file_stream_idle_timeout: must not be negative, got -1s"},
           Case{{"--data_dir="}, "--data_dir: must not be empty"},
           Case{{"serve"},
                "unexpected argument 'serve': compressd takes flags only (--flag=VALUE); see "
                "--help"},
           Case{{"--", "serve"}, "unexpected argument 'serve'"},
       }) {
    for (bool tokens : {false, true}) {
      Subprocess::Options options;
      options.argv = {COMPRESSD_BIN, "--metrics_address=", "--grpc_address=127.0.0.1:0",
                      absl::StrCat("--data_dir=", dir.File("data")),
                      tokens ? absl::StrCat("--token_file=", dir.File("tokens")) : "--insecure"};
      options.argv.insert(options.argv.end(), c.flags.begin(), c.flags.end());
      ExpectRefusedAtStart(options, absl::StrCat("compressd: ", c.message));
      EXPECT_FALSE(fs::exists(dir.File("data"))) << c.flags.back() << ": nothing is created";
    }
  }
}

// A --data_root read from a --flagfile counts as one on the command line: paths outside it are
// refused, and an empty entry in it is refused at start.
TEST(CompressdFlagsTest, DataRootFromAFlagfileCounts) {
  TestDir dir;
  fs::create_directories(dir.File("root"));
  std::ofstream(dir.File("empty-entry.flags")) << "--data_root=" << dir.File("root") << ",\n";
  Subprocess::Options options;
  options.argv = {COMPRESSD_BIN,
                  "--insecure",
                  "--metrics_address=",
                  "--grpc_address=127.0.0.1:0",
                  absl::StrCat("--data_dir=", dir.File("data")),
                  absl::StrCat("--flagfile=", dir.File("empty-entry.flags"))};
  ExpectRefusedAtStart(options,
                       absl::StrCat("--data_root: empty entry in '", dir.File("root"), ",'"));

  std::ofstream(dir.File("root.flags")) << "--data_root=" << dir.File("root") << "\n";
  options.argv.back() = absl::StrCat("--flagfile=", dir.File("root.flags"));
  options.argv.push_back("--shutdown_grace=1s");
  absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  std::string line = (*started)->ReadLine().value_or("<eof>");
  absl::string_view address = line;
  ASSERT_TRUE(absl::ConsumePrefix(&address, "compressd listening on "))
      << line << (*started)->StderrTail();
  EXPECT_THAT((*started)->StderrTail(), Not(HasSubstr("unrestricted")));
  auto stub = v1::CompressionService::NewStub(grpc::CreateChannel(
      std::string(absl::StripAsciiWhitespace(address)), grpc::InsecureChannelCredentials()));
  for (const std::string& path : {dir.File("root/fashion"), dir.File("outside")}) {
    v1::CreateJobRequest request;
    request.mutable_spec()->mutable_dataset()->set_format("fashion_mnist");
    request.mutable_spec()->mutable_dataset()->set_path(path);
    request.mutable_spec()->mutable_teacher()->mutable_train()->set_epochs(1);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::Job job;
    grpc::Status status = stub->CreateJob(&context, request, &job);
    if (path == dir.File("outside")) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << path;
      EXPECT_THAT(status.error_message(), HasSubstr("outside every data root")) << path;
    } else {
      EXPECT_TRUE(status.ok()) << path << ": " << status.error_message();
    }
  }
  (*started)->Signal(SIGTERM);
  EXPECT_EQ((*started)->Wait().exit_code, 0);
}

// A metrics address in use ends compressd before it serves gRPC (it binds the metrics address
// first), with the address in the message.
TEST(CompressdFlagsTest, AMetricsAddressInUseIsRefusedAtStart) {
  TestDir dir;
  const int taken = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(taken, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(taken, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(taken, 1), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(taken, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const std::string metrics = absl::StrCat("127.0.0.1:", ntohs(address.sin_port));
  Subprocess::Options options;
  options.argv = {COMPRESSD_BIN, "--insecure", "--grpc_address=127.0.0.1:0",
                  absl::StrCat("--data_dir=", dir.File("data")),
                  absl::StrCat("--metrics_address=", metrics)};
  ExpectRefusedAtStart(options, absl::StrCat("--metrics_address: cannot listen on ", metrics));
  close(taken);
}

// Addresses gRPC listens on besides HOST:PORT still work: a Unix domain socket.
TEST(CompressdFlagsTest, ListensOnAUnixSocket) {
  TestDir dir;
  Subprocess::Options options;
  options.argv = {COMPRESSD_BIN,
                  "--insecure",
                  "--insecure_allow_remote",
                  "--metrics_address=",
                  "--shutdown_grace=1s",
                  absl::StrCat("--grpc_address=unix:", dir.File("compressd.sock")),
                  absl::StrCat("--data_dir=", dir.File("data"))};
  absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  std::string line = (*started)->ReadLine().value_or("<eof>");
  EXPECT_THAT(line, ::testing::StartsWith("compressd listening on unix"))
      << line << (*started)->StderrTail();
  EXPECT_TRUE(fs::exists(dir.File("compressd.sock")));
  (*started)->Signal(SIGTERM);
  EXPECT_EQ((*started)->Wait().exit_code, 0);
}

// Runs `argv` to its end; returns its stdout and sets `exit_code`.
std::string RunToEnd(const std::vector<std::string>& argv, int* exit_code) {
  Subprocess::Options options;
  options.argv = argv;
  absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(options);
  EXPECT_TRUE(started.ok()) << started.status();
  if (!started.ok()) return "";
  std::string out;
  while (std::optional<std::string> line = (*started)->ReadLine())
    absl::StrAppend(&out, *line, "\n");
  *exit_code = (*started)->Wait().exit_code;
  return out;
}

TEST(CompressdFlagsTest, HelpListsTheProgramsFlagsAndVersionNamesIt) {
  int exit_code = -1;
  std::string help = RunToEnd({COMPRESSD_BIN, "--help"}, &exit_code);
  EXPECT_EQ(exit_code, 0);
  EXPECT_THAT(help, HasSubstr("compressd: compressd [--grpc_address=HOST:PORT]"));
  EXPECT_THAT(help, HasSubstr("Flags from server/main.cc:"));
  EXPECT_THAT(help, HasSubstr("--grpc_address (host:port of the gRPC services;"));
  EXPECT_THAT(help, HasSubstr("--data_root"));
  EXPECT_THAT(help, HasSubstr("--sync_full (SQLite synchronous=FULL"));
  EXPECT_THAT(help, Not(HasSubstr("No flags matched")));
  EXPECT_THAT(help, Not(HasSubstr("--flagfile"))) << "Abseil's own flags only with --helpfull";

  std::string full = RunToEnd({COMPRESSD_BIN, "--helpfull"}, &exit_code);
  EXPECT_EQ(exit_code, 0);
  EXPECT_THAT(full, HasSubstr("--grpc_address"));
  EXPECT_THAT(full, HasSubstr("--flagfile"));
  std::string on = RunToEnd({COMPRESSD_BIN, "--helpon", "main"}, &exit_code);
  EXPECT_EQ(exit_code, 0);
  EXPECT_THAT(on, HasSubstr("Flags from server/main.cc:"));
  EXPECT_THAT(on, Not(HasSubstr("--flagfile")));
  std::string none = RunToEnd({COMPRESSD_BIN, "--helpmatch=no/such/file"}, &exit_code);
  EXPECT_EQ(exit_code, 0);
  EXPECT_THAT(none, HasSubstr("No flags matched"));
  EXPECT_EQ(RunToEnd({COMPRESSD_BIN, "--version"}, &exit_code),
            absl::StrCat("compressd ", ProjectVersion(), "\n"));
  EXPECT_EQ(exit_code, 0);

  help = RunToEnd({COMPRESSCTL_BIN, "--help"}, &exit_code);
  EXPECT_EQ(exit_code, 0);
  EXPECT_THAT(help, HasSubstr("Flags from client/main.cc:"));
  EXPECT_THAT(help, HasSubstr("--token_file"));
  help = RunToEnd({COMPRESSCTL_BIN, "help"}, &exit_code);
  EXPECT_THAT(help, HasSubstr("download JOB [ARTIFACT]"));
  EXPECT_EQ(exit_code, 0);
}

class CompressdProcessTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (server_ != nullptr) {
      server_->Signal(SIGTERM);
      server_->Wait();
    }
  }

  // Starts compressd with `flags`, and --insecure unless `secure`.
  void Start(std::vector<std::string> flags, bool secure = false) {
    Subprocess::Options options;
    options.argv = {COMPRESSD_BIN,
                    secure ? "--shutdown_grace=1s" : "--insecure",
                    "--grpc_address=127.0.0.1:0",
                    "--metrics_address=",
                    "--shutdown_grace=1s",
                    absl::StrCat("--data_dir=", dir_.File("data"))};
    options.argv.insert(options.argv.end(), flags.begin(), flags.end());
    options.stderr_echo_prefix = "[compressd] ";
    absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = *std::move(started);
    std::string line = server_->ReadLine().value_or("<eof>");
    absl::string_view address = line;
    ASSERT_TRUE(absl::ConsumePrefix(&address, "compressd listening on "))
        << line << server_->StderrTail();
    address_ = std::string(absl::StripAsciiWhitespace(address));
    stub_ = v1::CompressionService::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  // Runs compressctl with `args`; returns its exit code and fills `output` (stdout and stderr).
  int Compressctl(std::vector<std::string> args, std::string* output) {
    Subprocess::Options options;
    options.argv = {COMPRESSCTL_BIN, absl::StrCat("--server=", address_), "--timeout=5s",
                    "--retry_for=0s"};
    options.argv.insert(options.argv.end(), args.begin(), args.end());
    absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(options);
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return -1;
    output->clear();
    while (std::optional<std::string> line = (*started)->ReadLine()) {
      absl::StrAppend(output, *line, "\n");
    }
    ExitInfo exit = (*started)->Wait();
    absl::StrAppend(output, (*started)->StderrTail());
    return exit.exit_code;
  }

  grpc::Status CreateWithDataset(const std::string& path, const std::string& label = "") {
    v1::CreateJobRequest request;
    request.mutable_spec()->mutable_dataset()->set_format("fashion_mnist");
    request.mutable_spec()->mutable_dataset()->set_path(path);
    request.mutable_spec()->mutable_teacher()->mutable_train()->set_epochs(1);
    if (!label.empty()) (*request.mutable_labels())["big"] = label;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::Job job;
    return stub_->CreateJob(&context, request, &job);
  }

  TestDir dir_;
  std::string address_;
  std::unique_ptr<Subprocess> server_;
  std::unique_ptr<v1::CompressionService::Stub> stub_;
};

// gRPC would let a second server bind the same port (SO_REUSEPORT) and the kernel split the
// connections, and so the jobs, between the two: compressd refuses to start instead.
TEST_F(CompressdProcessTest, ASecondCompressdOnTheSameAddressDoesNotStart) {
  ASSERT_NO_FATAL_FAILURE(Start({}));
  Subprocess::Options options;
  options.argv = {COMPRESSD_BIN, "--insecure", absl::StrCat("--grpc_address=", address_),
                  "--metrics_address=", absl::StrCat("--data_dir=", dir_.File("second"))};
  absl::StatusOr<std::unique_ptr<Subprocess>> second = Subprocess::Start(options);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->ReadLine(), std::nullopt) << "the second compressd must not listen";
  ExitInfo exit = (*second)->Wait();
  EXPECT_EQ(exit.exit_code, 1) << exit.ToString();
  EXPECT_THAT((*second)->StderrTail(), HasSubstr(absl::StrCat("cannot listen on ", address_)));
}

// The health service answers for the whole server and for each service by its full name.
TEST_F(CompressdProcessTest, HealthAnswersForTheServerAndEachService) {
  ASSERT_NO_FATAL_FAILURE(Start({}));
  std::string output;
  for (const char* service : {"", "compress.v1.CompressionService", "compress.v1.WorkerService"}) {
    std::vector<std::string> args = {"health"};
    if (*service != '\0') args.push_back(service);
    EXPECT_EQ(Compressctl(args, &output), 0) << service << ": " << output;
    EXPECT_THAT(output, HasSubstr("SERVING")) << service;
  }
  EXPECT_EQ(Compressctl({"health", "compress.v1.NoSuchService"}, &output), 1) << output;
  EXPECT_THAT(output, HasSubstr("NOT_FOUND"));
}

TEST_F(CompressdProcessTest, TlsAndTokensWithCompressctl) {
  const std::string script =
      absl::StrCat("set -e; cd '", dir_.path(), "'; exec >openssl.log 2>&1; ",
                   "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 "
                   "-subj /CN=compressd-test-ca; ",
                   "printf 'subjectAltName=DNS:compressd.test\\n' >server.ext; ",
                   "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
                   "-subj /CN=compressd.test; ",
                   "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                   "-out server.pem -days 1 -extfile server.ext; ",
                   "printf 'viewer-token-0123456789 alpha viewer\\n' >tokens; ",
                   "printf 'viewer-token-0123456789\\n' >token");
  ASSERT_EQ(std::system(script.c_str()), 0) << "openssl failed; see " << dir_.File("openssl.log");
  ASSERT_NO_FATAL_FAILURE(Start({absl::StrCat("--token_file=", dir_.File("tokens")),
                                 absl::StrCat("--tls_cert=", dir_.File("server.pem")),
                                 absl::StrCat("--tls_key=", dir_.File("server.key"))},
                                /*secure=*/true));
  const std::vector<std::string> tls = {absl::StrCat("--tls_ca=", dir_.File("ca.pem")),
                                        "--tls_server_name=compressd.test"};
  std::string output;
  std::vector<std::string> args = tls;
  args.push_back(absl::StrCat("--token_file=", dir_.File("token")));
  args.push_back("list");
  EXPECT_EQ(Compressctl(args, &output), 0) << output;

  args = tls;
  args.push_back("list");
  EXPECT_EQ(Compressctl(args, &output), 1) << output;
  EXPECT_THAT(output, HasSubstr("UNAUTHENTICATED"));
  setenv("COMPRESS_TOKEN", "viewer-token-0123456789", /*overwrite=*/1);
  EXPECT_EQ(Compressctl(args, &output), 0) << output;
  // A viewer may not submit.
  std::ofstream(dir_.File("spec.json")) << R"({"dataset": {"format": "synthetic"},
      "teacher": {"train": {"epochs": 1}}})";
  args = tls;
  args.insert(args.end(), {"submit", dir_.File("spec.json")});
  EXPECT_EQ(Compressctl(args, &output), 1) << output;
  EXPECT_THAT(output, HasSubstr("PERMISSION_DENIED"));
  // Without TLS the handshake fails.
  EXPECT_EQ(Compressctl({"list"}, &output), 1) << output;
  EXPECT_THAT(output, HasSubstr("UNAVAILABLE"));
  unsetenv("COMPRESS_TOKEN");
}

TEST_F(CompressdProcessTest, EveryDataRootFlagCounts) {
  for (const char* name : {"a", "b", "c", "outside"}) fs::create_directories(dir_.File(name));
  ASSERT_NO_FATAL_FAILURE(Start({absl::StrCat("--data_root=", dir_.File("a")), "--data_root",
                                 dir_.File("b"), absl::StrCat("--data_root=", dir_.File("c"))}));
  for (const char* name : {"a", "b", "c"}) {
    grpc::Status status = CreateWithDataset(dir_.File(name));
    EXPECT_TRUE(status.ok()) << name << ": " << status.error_message();
  }
  grpc::Status outside = CreateWithDataset(dir_.File("outside"));
  EXPECT_EQ(outside.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(outside.error_message(), HasSubstr("spec.dataset.path"));
}

TEST_F(CompressdProcessTest, MessagesOverTheLimitAreResourceExhausted) {
  ASSERT_NO_FATAL_FAILURE(Start({"--max_message_bytes=65536"}));
  grpc::Status big = CreateWithDataset("/data", std::string(70000, 'x'));
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << big.error_message();
  // Under the limit, the same request reaches validation (the label is too long for it).
  grpc::Status small = CreateWithDataset("/data", std::string(1000, 'x'));
  EXPECT_EQ(small.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << small.error_message();
}

// A local worker still stopping when --local_worker_stop_grace ends is killed, and compressd exits
// then instead of after the default grace.
TEST_F(CompressdProcessTest, LocalWorkersAreKilledAfterTheirStopGrace) {
  const std::string worker = dir_.File("slow-worker");
  // Its output leaves compressd's stderr, which Wait() reads to its end.
  std::ofstream(worker) << "#!/bin/sh\n"
                        << "exec >/dev/null 2>&1\n"
                        << "trap 'sleep 10; exit 0' TERM\n"
                        << ": > '" << dir_.File("ready") << "'\n"
                        << "while :; do sleep 0.1; done\n";
  fs::permissions(worker, fs::perms::owner_all);
  ASSERT_NO_FATAL_FAILURE(Start({"--local_workers=1", absl::StrCat("--worker_binary=", worker),
                                 "--local_worker_stop_grace=1s"}));
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!fs::exists(dir_.File("ready")) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(fs::exists(dir_.File("ready"))) << server_->StderrTail();

  const absl::Time start = absl::Now();
  server_->Signal(SIGTERM);
  ExitInfo exit = server_->Wait();
  server_.reset();
  EXPECT_EQ(exit.exit_code, 0) << exit.ToString();
  // 1 s of stop grace and 1 s of --shutdown_grace, well before the worker's 10 s.
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
}

}  // namespace
}  // namespace compress::server
