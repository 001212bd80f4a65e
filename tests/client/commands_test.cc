// compressctl's commands against an in-process fake CompressionService.
#include "client/commands.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/fake_compression_service.h"
#include "worker/events/sha256.h"

namespace compress::client {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto channel =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
    stub_ = compress::v1::CompressionService::NewStub(channel);
    health_ = grpc::health::v1::Health::NewStub(channel);
    env_.stub = stub_.get();
    env_.health = health_.get();
    env_.timeout = absl::Seconds(5);
    env_.retry_for = absl::Seconds(5);
    env_.out = &out_;
    env_.err = &err_;
    char dir_template[] = "/tmp/commands_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
  }
  void TearDown() override {
    server_->Shutdown();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void SetJobState(compress::v1::JobState state) {
    compress::v1::Job job;
    job.set_name("jobs/j1");
    job.set_state(state);
    if (state == compress::v1::FAILED) {
      job.set_error_code("INVALID_ARGUMENT");
      job.set_error_message("bad spec");
    }
    service_.SetJob(job);
  }

  void AddEvents(int n) {
    for (int i = 1; i <= n; ++i) {
      compress::v1::JobEvent event;
      event.set_sequence(i);
      event.mutable_metric()->set_phase("teacher");
      event.mutable_metric()->set_step(i);
      event.mutable_metric()->set_progress(static_cast<double>(i) / n);
      service_.AddEvent(event);
    }
  }

  // Where a download keeps the bytes of an artifact holding `data` until they are verified.
  std::string PartPath(const std::string& name, const std::string& data) {
    return absl::StrCat(dir_, "/", name, ".", Sha256Hex(data).substr(0, 16), ".part");
  }

  std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream contents;
    contents << in.rdbuf();
    return contents.str();
  }

  testing::FakeCompressionService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<compress::v1::CompressionService::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::ostringstream out_;
  std::ostringstream err_;
  CommandEnv env_;
  std::string dir_;
};

TEST_F(CommandsTest, WatchResumesFromTheLastSequenceAfterDroppedStreams) {
  SetJobState(compress::v1::SUCCEEDED);
  AddEvents(10);
  service_.BreakStreamsAfter(3);
  env_.output = OutputFormat::kJson;
  EXPECT_EQ(Watch(env_, "j1"), kExitOk);
  EXPECT_THAT(service_.watch_offsets(), ElementsAre(0, 3, 6, 9));
  // Every event exactly once, in order, then the job.
  std::istringstream lines(out_.str());
  std::string line;
  int64_t expected = 1;
  while (std::getline(lines, line)) {
    nlohmann::json json = nlohmann::json::parse(line);
    if (json.contains("sequence")) {
      EXPECT_EQ(json["sequence"].get<std::string>(), std::to_string(expected++));
    } else {
      EXPECT_EQ(json["state"], "SUCCEEDED");
    }
  }
  EXPECT_EQ(expected, 11);
}

TEST_F(CommandsTest, WatchExitsTwoWhenTheJobDidNotSucceed) {
  SetJobState(compress::v1::FAILED);
  AddEvents(2);
  EXPECT_EQ(Watch(env_, "jobs/j1"), kExitJobNotSucceeded);
  EXPECT_THAT(out_.str(), HasSubstr("jobs/j1 FAILED: INVALID_ARGUMENT: bad spec"));
  EXPECT_THAT(out_.str(), HasSubstr("teacher  [##############################] 100%  step 2"));
}

TEST_F(CommandsTest, UnknownJobIsAnRpcError) {
  EXPECT_EQ(Get(env_, "nope"), kExitError);
  EXPECT_THAT(err_.str(), HasSubstr("NOT_FOUND"));
  EXPECT_EQ(Watch(env_, "nope"), kExitError);
}

TEST_F(CommandsTest, DownloadResumesAfterDroppedStreamsAndVerifies) {
  SetJobState(compress::v1::SUCCEEDED);
  std::string data;
  for (int i = 0; i < 5000; ++i) data.push_back(static_cast<char>(i * 7 % 251));
  service_.AddArtifact("model.bin", data);
  service_.BreakStreamsAfter(2);
  DownloadArgs args;
  args.job = "j1";
  args.output_dir = dir_;
  EXPECT_EQ(Download(env_, args), kExitOk) << err_.str();
  EXPECT_THAT(service_.read_offsets(), ElementsAre(0, 2048, 4096));
  EXPECT_EQ(ReadFile(dir_ + "/model.bin"), data);
  EXPECT_FALSE(fs::exists(PartPath("model.bin", data)));
  // A second download finds the verified file and leaves it.
  EXPECT_EQ(Download(env_, args), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("present"));
}

// compressd's idle watch cancels a read that stood still for its timeout, and the client sees
// plain CANCELLED, which it did not ask for: the download reads on from where it stopped, also
// after a cancelled read that brought nothing and stood still for longer than --retry_for.
TEST_F(CommandsTest, DownloadResumesAfterTheServerCancelledItsRead) {
  SetJobState(compress::v1::SUCCEEDED);
  std::string data;
  for (int i = 0; i < 5000; ++i) data.push_back(static_cast<char>(i * 7 % 251));
  service_.AddArtifact("model.bin", data);
  DownloadArgs args;
  args.job = "j1";
  args.output_dir = dir_;
  args.chunk_size = 1024;
  service_.CancelReads(2, /*chunks=*/2);
  EXPECT_EQ(Download(env_, args), kExitOk) << err_.str();
  EXPECT_THAT(service_.read_offsets(), ElementsAre(0, 2048, 4096));
  EXPECT_EQ(ReadFile(dir_ + "/model.bin"), data);

  fs::remove(dir_ + "/model.bin");
  env_.retry_for = absl::Seconds(1);
  service_.CancelReads(1, /*chunks=*/0, absl::Milliseconds(1500));
  EXPECT_EQ(Download(env_, args), kExitOk) << err_.str();
  EXPECT_THAT(service_.read_offsets(), ElementsAre(0, 2048, 4096, 0, 0));
  EXPECT_EQ(ReadFile(dir_ + "/model.bin"), data);
}

// A server that cancels every read is given up on once --retry_for has passed after the last
// few: the download fails CANCELLED, keeping what it read.
TEST_F(CommandsTest, DownloadGivesUpOnAServerThatKeepsCancellingItsReads) {
  SetJobState(compress::v1::SUCCEEDED);
  service_.AddArtifact("model.bin", std::string(5000, 'x'));
  DownloadArgs args;
  args.job = "j1";
  args.output_dir = dir_;
  args.chunk_size = 1024;
  env_.retry_for = absl::Milliseconds(500);
  service_.CancelReads(1000, /*chunks=*/0);
  EXPECT_EQ(Download(env_, args), kExitError);
  EXPECT_THAT(err_.str(), HasSubstr("CANCELLED"));
  EXPECT_THAT(err_.str(), HasSubstr("gave up after"));
  EXPECT_FALSE(fs::exists(dir_ + "/model.bin"));
}

TEST_F(CommandsTest, DownloadContinuesAPartialFileAtItsSize) {
  SetJobState(compress::v1::SUCCEEDED);
  std::string data(3000, 'x');
  data[2999] = 'y';
  service_.AddArtifact("model.bin", data);
  std::ofstream(PartPath("model.bin", data), std::ios::binary) << data.substr(0, 1500);
  DownloadArgs args;
  args.job = "j1";
  args.artifact = "model.bin";
  args.output_dir = dir_;
  env_.output = OutputFormat::kJson;
  EXPECT_EQ(Download(env_, args), kExitOk) << err_.str();
  EXPECT_THAT(service_.read_offsets(), ElementsAre(1500));
  EXPECT_EQ(ReadFile(dir_ + "/model.bin"), data);
  nlohmann::json line = nlohmann::json::parse(out_.str());
  EXPECT_EQ(line["resumed_from"], 1500);
  EXPECT_EQ(line["sha256"], Sha256Hex(data));
}

TEST_F(CommandsTest, DownloadMismatchIsDataLossAndKeepsThePartialFile) {
  SetJobState(compress::v1::SUCCEEDED);
  service_.AddArtifact("model.bin", std::string(2000, 'a'));
  service_.CorruptArtifact("model.bin", std::string(2000, 'b'));
  DownloadArgs args;
  args.job = "j1";
  args.output_dir = dir_;
  EXPECT_EQ(Download(env_, args), kExitDataLoss);
  EXPECT_THAT(err_.str(), HasSubstr("DATA_LOSS"));
  EXPECT_THAT(err_.str(),
              HasSubstr(absl::StrCat(
                  "the partial file is kept at ", PartPath("model.bin", std::string(2000, 'a')),
                  " and the next run downloads the artifact again from the start")));
  EXPECT_TRUE(fs::exists(PartPath("model.bin", std::string(2000, 'a'))));
  EXPECT_FALSE(fs::exists(dir_ + "/model.bin"));
  // The next run does not trust the bytes that failed: it reads the artifact again.
  EXPECT_EQ(Download(env_, args), kExitDataLoss);
  EXPECT_THAT(service_.read_offsets(), ElementsAre(0, 0));
}

// A partial file is named after the sha256 of what it holds part of: another job's artifact of
// the same name, or a NAME.part of an earlier compressctl, is left alone and never resumed.
TEST_F(CommandsTest, DownloadDoesNotResumeThePartialFileOfAnotherArtifactOfTheSameName) {
  SetJobState(compress::v1::SUCCEEDED);
  const std::string data(3000, 'n');
  const std::string other(3000, 'o');
  service_.AddArtifact("model.bin", data);
  std::ofstream(PartPath("model.bin", other), std::ios::binary) << other.substr(0, 1000);
  std::ofstream(dir_ + "/model.bin.part", std::ios::binary) << other.substr(0, 1000);
  DownloadArgs args;
  args.job = "j1";
  args.output_dir = dir_;
  EXPECT_EQ(Download(env_, args), kExitOk) << err_.str();
  EXPECT_THAT(service_.read_offsets(), ElementsAre(0));
  EXPECT_EQ(ReadFile(dir_ + "/model.bin"), data);
  EXPECT_EQ(ReadFile(PartPath("model.bin", other)), other.substr(0, 1000));
  EXPECT_EQ(ReadFile(dir_ + "/model.bin.part"), other.substr(0, 1000));
}

// Bytes an earlier run left that fail the check once resumed (or that outnumber the artifact's)
// are dropped once and the artifact read from the start, saying so: they cannot make every
// later run fail.
TEST_F(CommandsTest, DownloadStartsAgainOnceWhenTheResumedPartialFileIsNotTheArtifacts) {
  SetJobState(compress::v1::SUCCEEDED);
  const std::string data(3000, 'd');
  service_.AddArtifact("model.bin", data);
  DownloadArgs args;
  args.job = "j1";
  args.output_dir = dir_;
  env_.output = OutputFormat::kJson;
  std::ofstream(PartPath("model.bin", data), std::ios::binary) << std::string(1500, 'x');
  EXPECT_EQ(Download(env_, args), kExitOk) << err_.str();
  EXPECT_THAT(service_.read_offsets(), ElementsAre(1500, 0));
  EXPECT_EQ(ReadFile(dir_ + "/model.bin"), data);
  EXPECT_THAT(err_.str(), HasSubstr(absl::StrCat(PartPath("model.bin", data),
                                                 " (resumed at 1500 bytes) has sha256 ")));
  EXPECT_THAT(err_.str(), HasSubstr("downloading it again from the start"));
  EXPECT_EQ(nlohmann::json::parse(out_.str())["resumed_from"], 0);

  fs::remove(dir_ + "/model.bin");
  err_.str("");
  std::ofstream(PartPath("model.bin", data), std::ios::binary) << std::string(4000, 'd');
  EXPECT_EQ(Download(env_, args), kExitOk) << err_.str();
  EXPECT_THAT(service_.read_offsets(), ElementsAre(1500, 0, 0));
  EXPECT_EQ(ReadFile(dir_ + "/model.bin"), data);
  EXPECT_THAT(err_.str(), HasSubstr("holds 4000 bytes, more than the artifact's 3000; "
                                    "downloading it again from the start"));
}

TEST_F(CommandsTest, DownloadOfAnEmptyArtifactWritesAnEmptyFile) {
  SetJobState(compress::v1::SUCCEEDED);
  service_.AddArtifact("empty.txt", "");
  DownloadArgs args;
  args.job = "j1";
  args.output_dir = dir_;
  EXPECT_EQ(Download(env_, args), kExitOk) << err_.str();
  ASSERT_TRUE(fs::exists(dir_ + "/empty.txt"));
  EXPECT_EQ(fs::file_size(dir_ + "/empty.txt"), 0u);
  EXPECT_FALSE(fs::exists(PartPath("empty.txt", "")));
}

TEST_F(CommandsTest, DownloadWriteFailureIsALocalErrorWithTheReason) {
  SetJobState(compress::v1::SUCCEEDED);
  service_.AddArtifact("model.bin", std::string(5000, 'm'));
  DownloadArgs args;
  args.job = "j1";
  args.output_dir = dir_;
  // Files of this process may grow to 1000 bytes: the write past that fails with EFBIG.
  struct rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  struct rlimit limit = old_limit;
  limit.rlim_cur = 1000;
  sighandler_t old_handler = signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limit), 0);
  const int exit_code = Download(env_, args);
  setrlimit(RLIMIT_FSIZE, &old_limit);
  signal(SIGXFSZ, old_handler);
  // Exit code 3 is for a sha256 mismatch only.
  EXPECT_EQ(exit_code, kExitError) << err_.str();
  EXPECT_THAT(err_.str(),
              HasSubstr(absl::StrCat("cannot write ", PartPath("model.bin", std::string(5000, 'm')),
                                     ": ", std::strerror(EFBIG))));
  EXPECT_THAT(err_.str(), Not(HasSubstr("DATA_LOSS")));
}

TEST_F(CommandsTest, DownloadIntoAPathThroughAFileSaysNotADirectory) {
  SetJobState(compress::v1::SUCCEEDED);
  service_.AddArtifact("model.bin", "abc");
  std::ofstream(dir_ + "/file") << "x";
  DownloadArgs args;
  args.job = "j1";
  args.output_dir = dir_ + "/file/out";
  EXPECT_EQ(Download(env_, args), kExitError);
  EXPECT_THAT(err_.str(), HasSubstr(absl::StrCat("cannot create ", dir_,
                                                 "/file/out: ", std::strerror(ENOTDIR))));
  EXPECT_THAT(err_.str(), Not(HasSubstr("PERMISSION_DENIED")));
}

TEST_F(CommandsTest, DownloadRefusesToResumeAPartialFileWithoutASize) {
  SetJobState(compress::v1::SUCCEEDED);
  service_.AddArtifact("model.bin", "abc");
  fs::create_symlink("/dev/null", PartPath("model.bin", "abc"));
  DownloadArgs args;
  args.job = "j1";
  args.output_dir = dir_;
  EXPECT_EQ(Download(env_, args), kExitError);
  EXPECT_THAT(err_.str(), HasSubstr(absl::StrCat("cannot resume ", PartPath("model.bin", "abc"),
                                                 ": not a regular file")));
  EXPECT_THAT(service_.read_offsets(), ElementsAre()) << "no ReadArtifact at a made-up offset";
}

// A loopback port nothing listens on (yet).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    close(fd);
    return 0;
  }
  close(fd);
  return ntohs(address.sin_port);
}

TEST_F(CommandsTest, WatchOfAnUnreachableServerTriesUntilRetryForHasPassed) {
  const int port = FreePort();
  ASSERT_NE(port, 0);
  auto stub = compress::v1::CompressionService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  env_.stub = stub.get();
  env_.retry_for = absl::Seconds(2);
  const absl::Time start = absl::Now();
  EXPECT_EQ(Watch(env_, "j1"), kExitError);
  // The backoff (0.2, 0.4, 0.8, 1.6 s, ...) must not make it give up before the deadline.
  EXPECT_GE(absl::Now() - start, absl::Seconds(2));
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
  EXPECT_THAT(err_.str(), HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(err_.str(), HasSubstr("gave up after 2s"));
}

// --retry_for counts from the start of an outage, not from the last event: a job that stays
// quiet for longer than --retry_for (its streams ending at their deadline, or at once) still
// outlasts a later restart shorter than --retry_for.
TEST_F(CommandsTest, WatchOfAQuietJobOutlastsALaterOutageShorterThanRetryFor) {
  env_.retry_for = absl::Seconds(2);
  env_.timeout = absl::Milliseconds(300);
  for (bool hold : {true, false}) {
    SCOPED_TRACE(hold ? "streams end at their deadline" : "streams end at once");
    err_.str("");
    SetJobState(compress::v1::RUNNING);
    service_.HoldWatchStreams(hold);
    std::thread outage([&] {
      absl::SleepFor(absl::Seconds(3));
      service_.SetUnavailable(true);
      absl::SleepFor(absl::Milliseconds(600));
      SetJobState(compress::v1::SUCCEEDED);
      service_.SetUnavailable(false);
    });
    const int exit_code = Watch(env_, "j1");
    outage.join();
    EXPECT_EQ(exit_code, kExitOk) << err_.str();
    EXPECT_THAT(err_.str(), Not(HasSubstr("gave up")));
  }
}

TEST_F(CommandsTest, DownloadWaitsForAServerThatIsNotUpYet) {
  const int port = FreePort();
  ASSERT_NE(port, 0);
  testing::FakeCompressionService later_service;
  compress::v1::Job job;
  job.set_name("jobs/j1");
  job.set_state(compress::v1::SUCCEEDED);
  later_service.SetJob(job);
  later_service.AddArtifact("model.bin", std::string(3000, 'z'));
  auto stub = compress::v1::CompressionService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  env_.stub = stub.get();
  env_.retry_for = absl::Seconds(20);
  std::unique_ptr<grpc::Server> later;
  std::thread starter([&] {
    absl::SleepFor(absl::Seconds(1));
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials());
    builder.RegisterService(&later_service);
    later = builder.BuildAndStart();
  });
  DownloadArgs args;
  args.job = "j1";
  args.output_dir = dir_;
  const int exit_code = Download(env_, args);
  starter.join();
  ASSERT_NE(later, nullptr);
  later->Shutdown();
  EXPECT_EQ(exit_code, kExitOk) << err_.str();
  EXPECT_EQ(ReadFile(dir_ + "/model.bin"), std::string(3000, 'z'));
}

TEST_F(CommandsTest, DownloadOfAnUnknownArtifactNamesTheOnesThatExist) {
  SetJobState(compress::v1::SUCCEEDED);
  service_.AddArtifact("model.bin", "abc");
  DownloadArgs args;
  args.job = "j1";
  args.artifact = "other.bin";
  args.output_dir = dir_;
  EXPECT_EQ(Download(env_, args), kExitError);
  EXPECT_THAT(err_.str(), HasSubstr("it has: model.bin"));
}

TEST_F(CommandsTest, SubmitSendsTheSpecLabelsAndPriority) {
  SetJobState(compress::v1::QUEUED);
  std::string spec = dir_ + "/spec.json";
  std::ofstream(spec)
      << R"({"dataset":{"format":"synthetic"},"teacher":{"train":{"max_steps":5}}})";
  SubmitArgs args;
  args.spec_file = spec;
  args.labels = {{"team", "vision"}};
  args.priority = 3;
  args.request_id = "r-1";
  EXPECT_EQ(Submit(env_, args), kExitOk) << err_.str();
  compress::v1::CreateJobRequest sent = service_.last_create();
  EXPECT_EQ(sent.spec().dataset().format(), "synthetic");
  EXPECT_EQ(sent.spec().teacher().train().max_steps(), 5);
  EXPECT_EQ(sent.labels().at("team"), "vision");
  EXPECT_EQ(sent.priority(), 3);
  EXPECT_EQ(sent.request_id(), "r-1");
  EXPECT_THAT(out_.str(), HasSubstr("submitted jobs/j1 (QUEUED)"));
}

TEST_F(CommandsTest, LogsPrintsTheLogLinesTheJobHasNow) {
  SetJobState(compress::v1::RUNNING);
  for (int i = 1; i <= 4; ++i) {
    compress::v1::JobEvent event;
    event.set_sequence(i);
    if (i % 2 == 0) {
      event.mutable_log()->set_level("info");
      event.mutable_log()->set_message(absl::StrCat("message ", i));
    } else {
      event.mutable_metric()->set_phase("teacher");
    }
    service_.AddEvent(event);
  }
  EXPECT_EQ(Logs(env_, "j1", /*follow=*/false), kExitOk);
  std::string text = out_.str();
  EXPECT_THAT(text, HasSubstr("[info] message 2\n"));
  EXPECT_THAT(text, HasSubstr("[info] message 4\n"));
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
}

TEST_F(CommandsTest, HealthExitsZeroOnlyWhileServing) {
  EXPECT_EQ(Health(env_, ""), kExitOk);
  EXPECT_EQ(out_.str(), "SERVING\n");

  server_->GetHealthCheckService()->SetServingStatus(false);
  out_.str("");
  EXPECT_EQ(Health(env_, ""), kExitNotServing);
  EXPECT_EQ(out_.str(), "NOT_SERVING\n");

  env_.output = OutputFormat::kJson;
  out_.str("");
  EXPECT_EQ(Health(env_, ""), kExitNotServing);
  nlohmann::json line = nlohmann::json::parse(out_.str());
  EXPECT_EQ(line["status"], "NOT_SERVING");
  EXPECT_EQ(line["service"], "");
}

TEST_F(CommandsTest, HealthOfAnUnknownServiceIsAnRpcError) {
  EXPECT_EQ(Health(env_, "no.such.Service"), kExitError);
  EXPECT_THAT(err_.str(), HasSubstr("health no.such.Service: NOT_FOUND"));
}

}  // namespace
}  // namespace compress::client
