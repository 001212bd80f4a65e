// FetchBlob against the fake WorkerService's ReadBlob.
#include "worker/agent/blob_fetcher.h"

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
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/agent/fake_worker_service.h"
#include "tests/common/test_dir.h"
#include "worker/agent/rpc_retry.h"
#include "worker/events/sha256.h"

namespace compress::worker {
namespace {

namespace fs = std::filesystem;
using testing::FakeWorkerService;

class BlobFetcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = FakeWorkerService::Serve(&service_, "127.0.0.1:0", &port_);
    ASSERT_NE(server_, nullptr);
    stub_ = compress::v1::WorkerService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }

  // A blob of `size` bytes that the fake serves in 64 KiB chunks, `chunk_delay` apart.
  std::string AddBlob(size_t size, absl::Duration chunk_delay) {
    data_.assign(size, '\0');
    for (size_t i = 0; i < size; ++i) data_[i] = static_cast<char>(i * 13 + i / 509);
    std::string sha = Sha256Hex(data_);
    service_.AddBlob(sha, data_, 64 << 10, chunk_delay);
    return sha;
  }

  std::string ReadFile(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream contents;
    contents << in.rdbuf();
    return contents.str();
  }

  TestDir dir_{"blob_fetcher_test"};
  const std::string root_ = dir_.path();
  std::string data_;
  FakeWorkerService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<compress::v1::WorkerService::Stub> stub_;
};

TEST_F(BlobFetcherTest, FetchesTheBlobIntoPlace) {
  std::string sha = AddBlob(300000, absl::ZeroDuration());
  ASSERT_TRUE(FetchBlob(stub_.get(), "w1", sha, root_).ok());
  EXPECT_TRUE(ReadFile(fs::path(root_) / "blobs" / sha) == data_);
  // A second fetch finds it in place and asks the server for nothing.
  int calls = service_.read_blob_calls();
  ASSERT_TRUE(FetchBlob(stub_.get(), "w1", sha, root_).ok());
  EXPECT_EQ(service_.read_blob_calls(), calls);
}

// Two attempts of one job on two devices of one agent (the job was requeued while the first
// still fetched) fetch the same blob into the same work dir at once: both must end with the
// blob in place, neither with a mixed-up file.
TEST_F(BlobFetcherTest, ConcurrentFetchesOfOneBlobBothSucceed) {
  std::string sha = AddBlob(1 << 20, absl::Milliseconds(20));
  absl::Status first;
  absl::Status second;
  std::thread other([&] { second = FetchBlob(stub_.get(), "w1", sha, root_); });
  absl::SleepFor(absl::Milliseconds(50));
  first = FetchBlob(stub_.get(), "w1", sha, root_);
  other.join();
  EXPECT_TRUE(first.ok()) << first;
  EXPECT_TRUE(second.ok()) << second;
  EXPECT_TRUE(ReadFile(fs::path(root_) / "blobs" / sha) == data_);
}

// A fetch asked to stop ends soon with CANCELLED and leaves no blob in place.
TEST_F(BlobFetcherTest, StopsWhenAsked) {
  std::string sha = AddBlob(1 << 20, absl::Milliseconds(500));  // 8 s
  BlobFetchOptions options;
  absl::Time stop_at = absl::Now() + absl::Seconds(1);
  options.should_stop = [stop_at] { return absl::Now() >= stop_at; };
  absl::Status status = FetchBlob(stub_.get(), "w1", sha, root_, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_LT(absl::Now() - stop_at, absl::Seconds(2));
  EXPECT_FALSE(fs::exists(fs::path(root_) / "blobs" / sha));
}

// A part file that does not belong to the blob (corrupted, or left by a foreign copy) is
// resumed, fails the hash, and is fetched again once from the start.
TEST_F(BlobFetcherTest, APartFileThatDoesNotHashToTheBlobIsFetchedAgainFromTheStart) {
  std::string sha = AddBlob(300000, absl::ZeroDuration());
  fs::create_directories(fs::path(root_) / "blobs");
  std::ofstream(fs::path(root_) / "blobs" / (sha + ".part"), std::ios::binary)
      << std::string(1000, 'z');
  absl::Status status = FetchBlob(stub_.get(), "w1", sha, root_);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(service_.read_blob_calls(), 2);
  EXPECT_TRUE(ReadFile(fs::path(root_) / "blobs" / sha) == data_);
  EXPECT_FALSE(fs::exists(fs::path(root_) / "blobs" / (sha + ".part")));
}

// Bytes that do not hash to the blob's name from the start are the blob's own fault: DATA_LOSS
// after the second whole read, and no file is left in place.
TEST_F(BlobFetcherTest, ABlobThatDoesNotHashToItsNameIsDataLossAfterTwoReads) {
  data_ = std::string(200000, 'q');
  const std::string sha(64, 'a');
  service_.AddBlob(sha, data_, 64 << 10, absl::ZeroDuration());
  absl::Status status = FetchBlob(stub_.get(), "w1", sha, root_);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("200000 bytes hash to"));
  EXPECT_EQ(service_.read_blob_calls(), 2);
  EXPECT_FALSE(fs::exists(fs::path(root_) / "blobs" / sha));
  EXPECT_FALSE(fs::exists(fs::path(root_) / "blobs" / (sha + ".part")));
}

// compressd's idle watch cancels a read that stood still for its timeout (the agent sees plain
// CANCELLED, which it did not ask for): the fetch reads again, although the stall outlasted
// retry_for and the cancelled read brought nothing.
TEST_F(BlobFetcherTest, ReadsAgainWhenTheServerCancelsAStalledRead) {
  std::string sha = AddBlob(300000, absl::ZeroDuration());
  service_.CancelReadBlobs(1, /*chunks=*/0, absl::Milliseconds(1500));
  BlobFetchOptions options;
  options.retry_for = absl::Seconds(1);
  absl::Status status = FetchBlob(stub_.get(), "w1", sha, root_, options);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(service_.read_blob_calls(), 2);
  EXPECT_TRUE(ReadFile(fs::path(root_) / "blobs" / sha) == data_);
}

// A read the server cancelled midway resumes where the part file ends.
TEST_F(BlobFetcherTest, ResumesAReadTheServerCancelledMidway) {
  std::string sha = AddBlob(300000, absl::ZeroDuration());
  service_.CancelReadBlobs(2, /*chunks=*/2);
  absl::Status status = FetchBlob(stub_.get(), "w1", sha, root_);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(service_.read_blob_calls(), 3);
  EXPECT_TRUE(ReadFile(fs::path(root_) / "blobs" / sha) == data_);
}

// Cancels of reads that each brought bytes (compressd restarting during a long fetch) are not
// counted against kMaxServerCancels: the fetch reads on to the end.
TEST_F(BlobFetcherTest, ServerCancelsOfReadsThatProgressedAreNotCounted) {
  std::string sha = AddBlob(300000, absl::ZeroDuration());
  service_.CancelReadBlobs(kMaxServerCancels + 1, /*chunks=*/1);
  absl::Status status = FetchBlob(stub_.get(), "w1", sha, root_);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(service_.read_blob_calls(), kMaxServerCancels + 2);
  EXPECT_TRUE(ReadFile(fs::path(root_) / "blobs" / sha) == data_);
}

// A server that cancels every read is given up on after kMaxServerCancels more: UNAVAILABLE, not
// CANCELLED (the fetch's own stop), and no blob in place.
TEST_F(BlobFetcherTest, ReadsTheServerKeepsCancellingAreGivenUpOn) {
  std::string sha = AddBlob(300000, absl::ZeroDuration());
  service_.CancelReadBlobs(100, /*chunks=*/0);
  absl::Status status = FetchBlob(stub_.get(), "w1", sha, root_);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("cancelled by the server"));
  EXPECT_EQ(service_.read_blob_calls(), kMaxServerCancels + 1);
  EXPECT_FALSE(fs::exists(fs::path(root_) / "blobs" / sha));
}

// A stop while the server cancels reads ends the fetch at once with CANCELLED.
TEST_F(BlobFetcherTest, StopsWhenAskedWhileTheServerCancelsReads) {
  std::string sha = AddBlob(300000, absl::ZeroDuration());
  service_.CancelReadBlobs(100, /*chunks=*/1, absl::Milliseconds(700));
  BlobFetchOptions options;
  absl::Time stop_at = absl::Now() + absl::Seconds(1);
  options.should_stop = [stop_at] { return absl::Now() >= stop_at; };
  absl::Status status = FetchBlob(stub_.get(), "w1", sha, root_, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_LT(absl::Now() - stop_at, absl::Seconds(1));
  EXPECT_LE(service_.read_blob_calls(), 2);
  EXPECT_FALSE(fs::exists(fs::path(root_) / "blobs" / sha));
}

}  // namespace
}  // namespace compress::worker
