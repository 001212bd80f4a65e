// Tests of the decode cache: round trip, rebuild of corrupt or truncated files, keying by the
// source files, atomic writes and a cache that cannot be written.
#include "worker/pipeline/data/dataset_cache.h"

#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/pipeline/data/data_test_util.h"
#include "worker/pipeline/data/dataset.h"

namespace compress::pipeline {
namespace {

using data_test::TempDir;
using data_test::WriteFile;

class DatasetCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_test::WriteIdxDataset(data_dir_.path(), 40, 12, 7, 7, /*gzip=*/true);
    options_.format = DatasetFormat::kFashionMnist;
    options_.path = data_dir_.path();
    options_.image_size = 14;
    options_.cache_dir = cache_dir_ / "nested";
  }

  absl::StatusOr<DatasetSplits> Load() { return LoadDataset(options_); }

  static void ExpectSameData(const DatasetSplits& a, const DatasetSplits& b) {
    EXPECT_TRUE(torch::equal(a.train_images, b.train_images));
    EXPECT_TRUE(torch::equal(a.train_labels, b.train_labels));
    EXPECT_TRUE(torch::equal(a.val_images, b.val_images));
    EXPECT_TRUE(torch::equal(a.val_labels, b.val_labels));
    EXPECT_EQ(a.class_names, b.class_names);
    EXPECT_EQ(a.num_classes, b.num_classes);
    EXPECT_EQ(a.channels, b.channels);
    EXPECT_EQ(a.height, b.height);
    EXPECT_EQ(a.width, b.width);
  }

  TempDir data_dir_;
  TempDir cache_dir_;
  DatasetOptions options_;
};

TEST_F(DatasetCacheTest, RoundTrip) {
  options_.cache_dir.clear();
  absl::StatusOr<DatasetSplits> reference = Load();
  ASSERT_TRUE(reference.ok()) << reference.status();
  options_.cache_dir = cache_dir_ / "nested";

  absl::StatusOr<DatasetSplits> first = Load();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->cache_outcome, CacheOutcome::kWritten);
  ASSERT_TRUE(std::filesystem::exists(first->cache_path)) << first->cache_path;
  EXPECT_THAT(first->cache_path, ::testing::StartsWith(options_.cache_dir + "/fashion_mnist-"));
  ExpectSameData(*reference, *first);

  absl::StatusOr<DatasetSplits> second = Load();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->cache_outcome, CacheOutcome::kHit);
  EXPECT_EQ(second->cache_path, first->cache_path);
  ExpectSameData(*reference, *second);

  // Only the cache file is left: the temporary file was renamed.
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(options_.cache_dir)) {
    ++files;
    EXPECT_EQ(entry.path().extension(), ".dscache");
  }
  EXPECT_EQ(files, 1);
}

TEST_F(DatasetCacheTest, CorruptFileIsRebuilt) {
  absl::StatusOr<DatasetSplits> first = Load();
  ASSERT_TRUE(first.ok()) << first.status();
  std::string bytes = data_test::ReadAll(first->cache_path);
  bytes[bytes.size() / 2] ^= 0x5a;  // inside the pixels
  WriteFile(first->cache_path, bytes);

  absl::StatusOr<DatasetSplits> rebuilt = Load();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ(rebuilt->cache_outcome, CacheOutcome::kRebuilt);
  EXPECT_THAT(rebuilt->cache_detail, ::testing::HasSubstr("CRC mismatch"));
  ExpectSameData(*first, *rebuilt);

  absl::StatusOr<DatasetSplits> hit = Load();
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(hit->cache_outcome, CacheOutcome::kHit);
  ExpectSameData(*first, *hit);
}

TEST_F(DatasetCacheTest, TruncatedOrGarbageFileIsRebuilt) {
  absl::StatusOr<DatasetSplits> first = Load();
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string bytes = data_test::ReadAll(first->cache_path);
  for (const std::string& damaged : {bytes.substr(0, bytes.size() - 5), bytes.substr(0, 20),
                                     std::string("garbage"), bytes + "x"}) {
    WriteFile(first->cache_path, damaged);
    EXPECT_FALSE(ReadDatasetCache(first->cache_path, "any key").ok());
    absl::StatusOr<DatasetSplits> rebuilt = Load();
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
    EXPECT_EQ(rebuilt->cache_outcome, CacheOutcome::kRebuilt) << damaged.size();
    ExpectSameData(*first, *rebuilt);
  }
}

TEST_F(DatasetCacheTest, KeyFollowsSourcesAndOptions) {
  absl::StatusOr<DatasetSplits> first = Load();
  ASSERT_TRUE(first.ok());

  options_.image_size = 7;
  absl::StatusOr<DatasetSplits> other_size = Load();
  ASSERT_TRUE(other_size.ok());
  EXPECT_EQ(other_size->cache_outcome, CacheOutcome::kWritten);
  EXPECT_NE(other_size->cache_path, first->cache_path);
  EXPECT_EQ(other_size->train_images.size(2), 7);

  // Changed source data: new size and contents, so a new key; never the stale tensors.
  options_.image_size = 14;
  data_test::WriteIdxDataset(data_dir_.path(), 41, 12, 7, 7, /*gzip=*/true);
  absl::StatusOr<DatasetSplits> changed = Load();
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(changed->cache_outcome, CacheOutcome::kWritten);
  EXPECT_EQ(changed->train_images.size(0), 41);

  // A key that differs from the stored one is refused.
  EXPECT_EQ(ReadDatasetCache(changed->cache_path, "another key").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// The key stored in a cache file (after the 8-byte magic, a little-endian u64 length).
std::string StoredKey(const std::string& path) {
  const std::string bytes = data_test::ReadAll(path);
  EXPECT_GE(bytes.size(), 16u);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<uint8_t>(bytes[8 + i]);
  EXPECT_LE(16 + length, bytes.size());
  return bytes.substr(16, length);
}

// fashion_mnist's reader refuses IDX files that an earlier one accepted (bytes past the last
// record), so its keys name reader revision 2 and no file cached under an earlier key is reused
// for them; the keys of formats never revised are unchanged.
TEST_F(DatasetCacheTest, KeyNamesTheReaderRevisionOfRevisedFormats) {
  absl::StatusOr<DatasetSplits> idx = Load();
  ASSERT_TRUE(idx.ok()) << idx.status();
  EXPECT_THAT(StoredKey(idx->cache_path), ::testing::HasSubstr("\nreader_revision=2\n"));

  DatasetOptions synthetic;
  synthetic.format = DatasetFormat::kSynthetic;
  synthetic.cache_dir = options_.cache_dir;
  absl::StatusOr<DatasetSplits> other = LoadDataset(synthetic);
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_EQ(other->cache_outcome, CacheOutcome::kWritten);
  EXPECT_THAT(StoredKey(other->cache_path),
              ::testing::Not(::testing::HasSubstr("reader_revision")));
}

TEST_F(DatasetCacheTest, UnwritableCacheStillLoads) {
  WriteFile(cache_dir_ / "file", "a file where the cache directory should be");
  options_.cache_dir = cache_dir_ / "file";
  absl::StatusOr<DatasetSplits> d = Load();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->cache_outcome, CacheOutcome::kWriteFailed);
  EXPECT_FALSE(d->cache_detail.empty());
  EXPECT_EQ(d->train_images.size(0), 40);
}

TEST(StableHashTest, IsStableAndSensitive) {
  EXPECT_EQ(StableHashHex(""), "cbf29ce484222325");
  EXPECT_EQ(StableHashHex("a"), "af63dc4c8601ec8c");
  EXPECT_NE(StableHashHex("ab"), StableHashHex("ba"));
}

}  // namespace
}  // namespace compress::pipeline
