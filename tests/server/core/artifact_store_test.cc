#include "server/core/artifact_store.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/test_dir.h"

namespace compress::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Up to `max_bytes` of an opened stored file from `offset`, or why it did not open.
absl::StatusOr<std::string> ReadStored(absl::StatusOr<std::unique_ptr<StoredFile>> file,
                                       int64_t offset, int64_t max_bytes) {
  if (!file.ok()) return file.status();
  return (*file)->Read(offset, max_bytes);
}

int CountFiles(const std::string& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++n;
  return n;
}

class ArtifactStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ArtifactStore>> store = ArtifactStore::Open({dir_.path()});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  TestDir dir_;
  std::unique_ptr<ArtifactStore> store_;
};

TEST_F(ArtifactStoreTest, WritesAtomicallyAndVerifiesSha) {
  const std::string data = "hello, artifact";
  absl::StatusOr<std::unique_ptr<PendingFile>> file = store_->BeginArtifact("job1", "model.bin");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_TRUE((*file)->Append(data.substr(0, 5)).ok());
  ASSERT_TRUE((*file)->Append(data.substr(5)).ok());
  // Nothing is visible under the final name before the commit.
  EXPECT_FALSE(fs::exists(dir_.File("artifacts/job1/model.bin")));
  EXPECT_EQ(CountFiles(dir_.File("tmp")), 1);
  absl::StatusOr<Artifact> artifact = (*file)->Commit(Sha256Hex(data), data.size());
  ASSERT_TRUE(artifact.ok()) << artifact.status();
  EXPECT_EQ(artifact->name, "model.bin");
  EXPECT_EQ(artifact->size_bytes, static_cast<int64_t>(data.size()));
  EXPECT_EQ(artifact->sha256, Sha256Hex(data));
  EXPECT_EQ(ReadAll(dir_.File("artifacts/job1/model.bin")), data);
  EXPECT_EQ(CountFiles(dir_.File("tmp")), 0);
}

TEST_F(ArtifactStoreTest, UnplaceRestoresTheReplacedFileOrRemovesTheNewOne) {
  const std::string path = dir_.File("artifacts/job1/model.bin");
  auto upload = [&](const std::string& data) {
    absl::StatusOr<std::unique_ptr<PendingFile>> file = store_->BeginArtifact("job1", "model.bin");
    EXPECT_TRUE(file.ok()) << file.status();
    EXPECT_TRUE((*file)->Append(data).ok());
    EXPECT_TRUE((*file)->Finish(Sha256Hex(data), data.size()).ok());
    return *std::move(file);
  };
  // No file before: undoing removes the placed one.
  std::unique_ptr<PendingFile> first = upload("first version");
  ASSERT_TRUE(first->Place().ok());
  EXPECT_EQ(ReadAll(path), "first version");
  ASSERT_TRUE(first->Unplace().ok());
  EXPECT_FALSE(fs::exists(path));

  ASSERT_TRUE(upload("first version")->Publish().ok());
  // Replacing it: undoing puts the first back, and nothing is left in tmp/.
  std::unique_ptr<PendingFile> second = upload("second, same size");
  ASSERT_TRUE(second->Place().ok());
  EXPECT_EQ(ReadAll(path), "second, same size");
  ASSERT_TRUE(second->Unplace().ok());
  EXPECT_EQ(ReadAll(path), "first version");
  second.reset();
  EXPECT_EQ(CountFiles(dir_.File("tmp")), 0);

  // Settled, the replacement stays and the replaced file's link is gone.
  std::unique_ptr<PendingFile> third = upload("third version");
  ASSERT_TRUE(third->Place().ok());
  EXPECT_EQ(CountFiles(dir_.File("tmp")), 1);  // the replaced file, kept until Settle
  ASSERT_TRUE(third->Settle().ok());
  EXPECT_EQ(CountFiles(dir_.File("tmp")), 0);
  EXPECT_EQ(ReadAll(path), "third version");
}

TEST_F(ArtifactStoreTest, ShaOrSizeMismatchIsRejectedAndLeavesNothing) {
  absl::StatusOr<std::unique_ptr<PendingFile>> file = store_->BeginArtifact("job1", "a.bin");
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE((*file)->Append("abc").ok());
  absl::StatusOr<Artifact> bad = (*file)->Commit(Sha256Hex("abd"), -1);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(bad.status().message(), HasSubstr("sha256"));
  file->reset();
  EXPECT_FALSE(fs::exists(dir_.File("artifacts/job1/a.bin")));
  EXPECT_EQ(CountFiles(dir_.File("tmp")), 0);

  absl::StatusOr<std::unique_ptr<PendingFile>> blob = store_->BeginBlob();
  ASSERT_TRUE(blob.ok());
  ASSERT_TRUE((*blob)->Append("abc").ok());
  EXPECT_EQ((*blob)->Commit("", 4).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(ArtifactStoreTest, BlobsAreContentAddressed) {
  absl::StatusOr<std::unique_ptr<PendingFile>> blob = store_->BeginBlob();
  ASSERT_TRUE(blob.ok());
  ASSERT_TRUE((*blob)->Append("teacher weights").ok());
  absl::StatusOr<Artifact> stored = (*blob)->Commit("", -1);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->sha256, Sha256Hex("teacher weights"));
  EXPECT_EQ(ReadAll(dir_.File("blobs/" + stored->sha256)), "teacher weights");
  absl::StatusOr<int64_t> size = store_->BlobSize(stored->sha256);
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 15);
  absl::StatusOr<std::string> tail = ReadStored(store_->OpenBlob(stored->sha256), 8, 100);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(*tail, "weights");
  EXPECT_EQ(store_->BlobSize(Sha256Hex("other")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ArtifactStoreTest, NamesThatEscapeAreRejected) {
  for (const char* name :
       {"../x", "..", ".", "a/b", "/etc/passwd", "", ".hidden", "a..b", "sp ace", "new\nline"}) {
    EXPECT_EQ(store_->BeginArtifact("job1", name).status().code(),
              absl::StatusCode::kInvalidArgument)
        << name;
    EXPECT_EQ(ReadStored(store_->OpenArtifact("job1", name), 0, 10).status().code(),
              absl::StatusCode::kInvalidArgument)
        << name;
  }
  EXPECT_EQ(store_->BeginArtifact("../job", "a").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->BeginArtifact("job1", std::string(129, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(store_->BeginArtifact("job1", std::string(128, 'a')).ok());
  EXPECT_EQ(ReadStored(store_->OpenBlob("../../jobs.db"), 0, 10).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ArtifactStoreTest, ReadsByOffset) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i % 251));
  absl::StatusOr<std::unique_ptr<PendingFile>> file = store_->BeginArtifact("job2", "x.bin");
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE((*file)->Append(data).ok());
  ASSERT_TRUE((*file)->Commit("", -1).ok());
  std::string assembled;
  for (int64_t offset = 0; offset < 1000; offset += 300) {
    absl::StatusOr<std::string> chunk =
        ReadStored(store_->OpenArtifact("job2", "x.bin"), offset, 300);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    assembled += *chunk;
  }
  EXPECT_EQ(assembled, data);
  absl::StatusOr<std::string> end = ReadStored(store_->OpenArtifact("job2", "x.bin"), 1000, 300);
  ASSERT_TRUE(end.ok());
  EXPECT_TRUE(end->empty());
  EXPECT_EQ(ReadStored(store_->OpenArtifact("job2", "x.bin"), 1001, 300).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ReadStored(store_->OpenArtifact("job2", "y.bin"), 0, 300).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(store_->RemoveJob("job2").ok());
  EXPECT_FALSE(fs::exists(dir_.File("artifacts/job2")));
}

TEST_F(ArtifactStoreTest, OpenClearsLeftoverTemporaryFiles) {
  std::ofstream(dir_.File("tmp/crashed.part")) << "partial";
  absl::StatusOr<std::unique_ptr<ArtifactStore>> reopened = ArtifactStore::Open({dir_.path()});
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(CountFiles(dir_.File("tmp")), 0);
}

TEST_F(ArtifactStoreTest, RemovesTheFilesOfJobsThatNoLongerExist) {
  for (const char* job : {"live", "deleted", "unknown"}) {
    absl::StatusOr<std::unique_ptr<PendingFile>> file = store_->BeginArtifact(job, "model.bin");
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_TRUE((*file)->Append("weights").ok());
    ASSERT_TRUE((*file)->Commit("", -1).ok());
  }
  std::ofstream(dir_.File("artifacts/stray-file")) << "not a job's";
  std::vector<std::string> removed;
  absl::Status swept = store_->RemoveJobsWithout(
      [](const std::string& job_id) -> absl::StatusOr<bool> {
        if (job_id == "unknown") return absl::UnavailableError("database unavailable");
        return job_id == "live";
      },
      &removed);
  EXPECT_EQ(swept.code(), absl::StatusCode::kUnavailable) << swept;
  EXPECT_THAT(removed, ::testing::ElementsAre("deleted"));
  EXPECT_FALSE(fs::exists(dir_.File("artifacts/deleted")));
  EXPECT_EQ(ReadAll(dir_.File("artifacts/live/model.bin")), "weights");
  // Kept while its job's existence is unknown.
  EXPECT_EQ(ReadAll(dir_.File("artifacts/unknown/model.bin")), "weights");
  EXPECT_TRUE(fs::exists(dir_.File("artifacts/stray-file")));

  removed.clear();
  EXPECT_TRUE(store_->RemoveJobsWithout([](const std::string&) { return true; }, &removed).ok());
  EXPECT_TRUE(removed.empty());
}

}  // namespace
}  // namespace compress::server
