// Tests of LoadDataset's readers on small data sets written by the tests, on the installed
// Fashion-MNIST, and on every kind of malformed input.
#include <sys/resource.h>
#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/pipeline/data/data_test_util.h"
#include "worker/pipeline/data/cifar_reader.h"
#include "worker/pipeline/data/dataset.h"
#include "worker/pipeline/data/idx_reader.h"

namespace compress::pipeline {
namespace {

using data_test::ClassColor;
using data_test::ClassJpeg;
using data_test::TempDir;
using data_test::TestPixel;
using data_test::WriteFile;
using ::testing::HasSubstr;

constexpr char kRealFashionMnist[] = "/usr/share/datasets/fashion-mnist";

DatasetOptions Options(DatasetFormat format, const std::string& path) {
  DatasetOptions o;
  o.format = format;
  o.path = path;
  o.decode_threads = 2;
  return o;
}

// Expects `result` to fail with `code` and a message containing `needle` (usually a path).
template <typename T>
void ExpectError(const absl::StatusOr<T>& result, absl::StatusCode code,
                 const std::string& needle) {
  ASSERT_FALSE(result.ok()) << "expected an error mentioning " << needle;
  EXPECT_EQ(result.status().code(), code) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr(needle));
}

void ExpectIdxContent(const DatasetSplits& d, int64_t train, int64_t val, int rows, int cols) {
  ASSERT_EQ(d.train_images.sizes(), (std::vector<int64_t>{train, 1, rows, cols}));
  ASSERT_EQ(d.val_images.sizes(), (std::vector<int64_t>{val, 1, rows, cols}));
  EXPECT_EQ(d.train_images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(d.train_labels.scalar_type(), torch::kInt64);
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.class_names.size(), 10u);
  EXPECT_EQ(d.channels, 1);
  auto img = d.train_images.accessor<uint8_t, 4>();
  auto lab = d.train_labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < train; ++i) {
    EXPECT_EQ(lab[i], i % 10);
    for (int y = 0; y < rows; ++y) {
      for (int x = 0; x < cols; ++x) ASSERT_EQ(img[i][0][y][x], TestPixel(i, 0, y, x));
    }
  }
  EXPECT_EQ(d.val_labels[val - 1].item<int64_t>(), (val - 1) % 10);
}

TEST(FashionMnistTest, ReadsGzipFiles) {
  TempDir dir;
  data_test::WriteIdxDataset(dir.path(), 23, 7, 6, 5, /*gzip=*/true);
  absl::StatusOr<DatasetSplits> d = LoadDataset(Options(DatasetFormat::kFashionMnist, dir.path()));
  ASSERT_TRUE(d.ok()) << d.status();
  ExpectIdxContent(*d, 23, 7, 6, 5);
  EXPECT_EQ(d->class_names[9], "Ankle boot");
  EXPECT_EQ(d->cache_outcome, CacheOutcome::kDisabled);
}

TEST(FashionMnistTest, ReadsUncompressedFiles) {
  TempDir dir;
  data_test::WriteIdxDataset(dir.path(), 11, 4, 6, 5, /*gzip=*/false);
  absl::StatusOr<DatasetSplits> d = LoadDataset(Options(DatasetFormat::kFashionMnist, dir.path()));
  ASSERT_TRUE(d.ok()) << d.status();
  ExpectIdxContent(*d, 11, 4, 6, 5);
}

TEST(FashionMnistTest, LimitsResizesAndConvertsChannels) {
  TempDir dir;
  data_test::WriteIdxDataset(dir.path(), 30, 9, 8, 8, /*gzip=*/true);
  DatasetOptions o = Options(DatasetFormat::kFashionMnist, dir.path());
  o.limit_train = 12;
  o.limit_val = 5;
  o.image_size = 4;
  o.channels = 3;
  absl::StatusOr<DatasetSplits> d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->train_images.sizes(), (std::vector<int64_t>{12, 3, 4, 4}));
  ASSERT_EQ(d->val_images.sizes(), (std::vector<int64_t>{5, 3, 4, 4}));
  // 8 -> 4 is an exact 2x2 area average; the grey value is replicated to all channels.
  auto img = d->train_images.accessor<uint8_t, 4>();
  for (int64_t i = 0; i < 12; ++i) {
    for (int y = 0; y < 4; ++y) {
      for (int x = 0; x < 4; ++x) {
        double sum = 0;
        for (int dy = 0; dy < 2; ++dy) {
          for (int dx = 0; dx < 2; ++dx) sum += TestPixel(i, 0, 2 * y + dy, 2 * x + dx);
        }
        // Pixels wrap around 255 in some 2x2 cells; compare only where they do not.
        const bool wraps = TestPixel(i, 0, 2 * y + 1, 2 * x + 1) < TestPixel(i, 0, 2 * y, 2 * x);
        if (!wraps) {
          EXPECT_NEAR(img[i][0][y][x], sum / 4.0, 0.51);
        }
        EXPECT_EQ(img[i][1][y][x], img[i][0][y][x]);
        EXPECT_EQ(img[i][2][y][x], img[i][0][y][x]);
      }
    }
  }
}

TEST(FashionMnistTest, EnlargesBilinearly) {
  TempDir dir;
  data_test::WriteIdxDataset(dir.path(), 3, 2, 8, 8, /*gzip=*/false);
  DatasetOptions o = Options(DatasetFormat::kFashionMnist, dir.path());
  o.image_size = 16;
  absl::StatusOr<DatasetSplits> d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->train_images.sizes(), (std::vector<int64_t>{3, 1, 16, 16}));
  auto img = d->train_images.accessor<uint8_t, 4>();
  for (int64_t i = 0; i < 3; ++i) {
    // Half-pixel centres: output 0 maps to source -0.25 (clamped to 0), output 1 to 0.25,
    // output 15 to 7.25 (clamped to 7).
    EXPECT_EQ(img[i][0][0][0], TestPixel(i, 0, 0, 0));
    EXPECT_EQ(img[i][0][15][15], TestPixel(i, 0, 7, 7));
    const double expected =
        0.75 * 0.75 * TestPixel(i, 0, 0, 0) + 0.75 * 0.25 * TestPixel(i, 0, 0, 1) +
        0.25 * 0.75 * TestPixel(i, 0, 1, 0) + 0.25 * 0.25 * TestPixel(i, 0, 1, 1);
    EXPECT_NEAR(img[i][0][1][1], expected, 0.51);
  }
}

TEST(FashionMnistTest, InstalledDataSet) {
  if (!std::filesystem::exists(kRealFashionMnist)) {
    GTEST_SKIP() << kRealFashionMnist << " is not installed";
  }
  absl::StatusOr<DatasetSplits> d =
      LoadDataset(Options(DatasetFormat::kFashionMnist, kRealFashionMnist));
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->train_images.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  ASSERT_EQ(d->val_images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(d->num_classes, 10);
  const torch::Tensor counts = torch::bincount(d->train_labels);
  EXPECT_TRUE(torch::equal(counts, torch::full({10}, 6000, torch::kInt64)));
  const torch::Tensor val_counts = torch::bincount(d->val_labels);
  EXPECT_TRUE(torch::equal(val_counts, torch::full({10}, 1000, torch::kInt64)));
  // Fashion-MNIST's mean pixel is about 72.9 of 255.
  EXPECT_NEAR(d->train_images.to(torch::kFloat).mean().item<double>(), 72.94, 0.5);
}

TEST(FashionMnistTest, MissingDirectoryAndFiles) {
  TempDir dir;
  ExpectError(LoadDataset(Options(DatasetFormat::kFashionMnist, dir / "absent")),
              absl::StatusCode::kNotFound, dir / "absent");
  data_test::WriteIdxDataset(dir.path(), 3, 3, 4, 4, /*gzip=*/true);
  std::filesystem::remove(dir / "t10k-labels-idx1-ubyte.gz");
  ExpectError(LoadDataset(Options(DatasetFormat::kFashionMnist, dir.path())),
              absl::StatusCode::kNotFound, dir / "t10k-labels-idx1-ubyte");
}

TEST(FashionMnistTest, BadMagicNumber) {
  TempDir dir;
  data_test::WriteIdxDataset(dir.path(), 3, 3, 4, 4, /*gzip=*/false);
  std::string labels = data_test::IdxLabels(3);
  labels[3] = 0x03;
  WriteFile(dir / "train-labels-idx1-ubyte", labels);
  ExpectError(LoadDataset(Options(DatasetFormat::kFashionMnist, dir.path())),
              absl::StatusCode::kInvalidArgument, dir / "train-labels-idx1-ubyte");
}

TEST(FashionMnistTest, TruncatedImagesNameRecordAndOffset) {
  TempDir dir;
  data_test::WriteIdxDataset(dir.path(), 5, 3, 4, 4, /*gzip=*/false);
  const std::string images = data_test::IdxImages(5, 4, 4);
  WriteFile(dir / "train-images-idx3-ubyte", images.substr(0, 16 + 3 * 16 + 7));
  absl::StatusOr<DatasetSplits> d = LoadDataset(Options(DatasetFormat::kFashionMnist, dir.path()));
  ExpectError(d, absl::StatusCode::kDataLoss, dir / "train-images-idx3-ubyte");
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("record 3 at offset 64"));
}

// An uncompressed file with bytes past its last record is refused, naming both sizes, like a gzip
// stream that inflates to more than its header announces.
TEST(FashionMnistTest, UncompressedFileLongerThanItsHeaderIsDataLoss) {
  TempDir dir;
  data_test::WriteIdxDataset(dir.path(), 5, 3, 4, 4, /*gzip=*/false);
  WriteFile(dir / "train-images-idx3-ubyte", data_test::IdxImages(5, 4, 4) + "x");
  ExpectError(LoadDataset(Options(DatasetFormat::kFashionMnist, dir.path())),
              absl::StatusCode::kDataLoss,
              dir /
                  "train-images-idx3-ubyte has 97 bytes but its header announces 96 "
                  "(16 + 5 x 4 x 4)");

  data_test::WriteIdxDataset(dir.path(), 5, 3, 4, 4, /*gzip=*/false);
  WriteFile(dir / "t10k-labels-idx1-ubyte", data_test::IdxLabels(3) + std::string(2, '\0'));
  ExpectError(LoadDataset(Options(DatasetFormat::kFashionMnist, dir.path())),
              absl::StatusCode::kDataLoss,
              dir / "t10k-labels-idx1-ubyte has 13 bytes but its header announces 11 (8 + 3)");
}

TEST(FashionMnistTest, TruncatedGzipStream) {
  TempDir dir;
  data_test::WriteIdxDataset(dir.path(), 50, 3, 10, 10, /*gzip=*/true);
  const std::string gz = data_test::ReadAll(dir / "train-images-idx3-ubyte.gz");
  WriteFile(dir / "train-images-idx3-ubyte.gz", gz.substr(0, gz.size() / 2));
  ExpectError(LoadDataset(Options(DatasetFormat::kFashionMnist, dir.path())),
              absl::StatusCode::kDataLoss, dir / "train-images-idx3-ubyte.gz");
}

// The IDX header of `count` images of rows x cols, without the pixels.
std::string IdxImagesHeader(uint32_t count, uint32_t rows, uint32_t cols) {
  std::string out;
  data_test::AppendBigEndian32(out, 0x00000803);
  data_test::AppendBigEndian32(out, count);
  data_test::AppendBigEndian32(out, rows);
  data_test::AppendBigEndian32(out, cols);
  return out;
}

// Peak resident memory of this process so far, in bytes.
int64_t PeakRssBytes() {
  struct rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

// A gzip stream inflating to far more than its IDX header announces (a gzip bomb): refused as
// DATA_LOSS naming both sizes, without taking the memory the stream would inflate to.
TEST(FashionMnistTest, GzipStreamLongerThanItsHeaderIsDataLoss) {
  const uint64_t bomb = uint64_t{256} << 20;
  const std::string images = data_test::GzipWithZeros(IdxImagesHeader(2, 4, 4), bomb);
  ASSERT_LT(images.size(), 1u << 20);
  const std::string labels = data_test::Gzip(data_test::IdxLabels(2));
  const int64_t peak_before = PeakRssBytes();
  absl::StatusOr<RawImages> split =
      ParseIdxSplit(images, "bomb-images", labels, "mem-labels", 0, /*num_classes=*/10);
  ExpectError(split, absl::StatusCode::kDataLoss,
              "gzip file bomb-images inflates to at least 67108912 bytes but its IDX header "
              "announces 48 (16 + 2 x 4 x 4)");
  EXPECT_LT(PeakRssBytes() - peak_before, int64_t{64} << 20);

  // Within the 64 MiB counted beyond the announced size, the exact size.
  const std::string longer = data_test::GzipWithZeros(IdxImagesHeader(2, 4, 4), 1000);
  ExpectError(ParseIdxSplit(longer, "longer-images", labels, "mem-labels", 0, 10),
              absl::StatusCode::kDataLoss,
              "gzip file longer-images inflates to 1016 bytes but its IDX header announces 48 "
              "(16 + 2 x 4 x 4)");
  // Labels too.
  const std::string images_ok = data_test::Gzip(data_test::IdxImages(2, 4, 4));
  std::string label_header;
  data_test::AppendBigEndian32(label_header, 0x00000801);
  data_test::AppendBigEndian32(label_header, 2);
  ExpectError(ParseIdxSplit(images_ok, "mem-images", data_test::GzipWithZeros(label_header, 3),
                            "long-labels", 0, 10),
              absl::StatusCode::kDataLoss,
              "gzip file long-labels inflates to 11 bytes but its IDX header announces 10 (8 + 2)");
}

TEST(FashionMnistTest, GzipStreamShorterThanItsHeaderIsDataLoss) {
  const std::string full = data_test::IdxImages(5, 4, 4);
  const std::string images = data_test::Gzip(full.substr(0, 16 + 3 * 16));
  const std::string labels = data_test::Gzip(data_test::IdxLabels(5));
  ExpectError(ParseIdxSplit(images, "short-images", labels, "mem-labels", 0, 10),
              absl::StatusCode::kDataLoss,
              "gzip file short-images inflates to 64 bytes but its IDX header announces 96 "
              "(16 + 5 x 4 x 4)");
}

// A header announcing more than the stream could hold is refused before anything is allocated.
TEST(FashionMnistTest, GzipHeaderAnnouncingTooMuchIsRefusedBeforeInflating) {
  const std::string labels = data_test::Gzip(data_test::IdxLabels(2));
  // 60000 images of 28x28 (47 MB) announced in a stream of a few dozen bytes.
  const std::string small = data_test::Gzip(IdxImagesHeader(60000, 28, 28));
  const int64_t peak_before = PeakRssBytes();
  absl::StatusOr<RawImages> split = ParseIdxSplit(small, "small-images", labels, "l", 0, 10);
  ExpectError(split, absl::StatusCode::kDataLoss,
              "gzip file small-images: its IDX header announces 47040016 bytes (16 + 60000 x 28 x "
              "28), more than its ");
  EXPECT_THAT(std::string(split.status().message()), HasSubstr("compressed bytes can inflate to"));
  EXPECT_LT(PeakRssBytes() - peak_before, int64_t{16} << 20);
  // Past the cap, whatever the file's size.
  const std::string huge = data_test::Gzip(IdxImagesHeader(0xffffffffu, 65535, 65535));
  ExpectError(ParseIdxSplit(huge, "huge-images", labels, "l", 0, 10),
              absl::StatusCode::kInvalidArgument,
              "gzip file huge-images: its IDX header announces 16 + 4294967295 x 65535 x 65535 "
              "bytes, more than the 8 GiB limit");
}

TEST(FashionMnistTest, LabelOutOfRangeAndCountMismatch) {
  TempDir dir;
  data_test::WriteIdxDataset(dir.path(), 5, 3, 4, 4, /*gzip=*/false);
  std::string labels = data_test::IdxLabels(5);
  labels[8 + 3] = 10;
  WriteFile(dir / "train-labels-idx1-ubyte", labels);
  absl::StatusOr<DatasetSplits> d = LoadDataset(Options(DatasetFormat::kFashionMnist, dir.path()));
  ExpectError(d, absl::StatusCode::kInvalidArgument, dir / "train-labels-idx1-ubyte");
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("record 3 (offset 11)"));

  WriteFile(dir / "train-labels-idx1-ubyte", data_test::IdxLabels(4));
  d = LoadDataset(Options(DatasetFormat::kFashionMnist, dir.path()));
  ExpectError(d, absl::StatusCode::kInvalidArgument, "mismatched counts");
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(dir / "train-labels-idx1-ubyte"));
}

// ParseIdxSplit, the reader's entry point for bytes in memory (fuzz/idx_reader_fuzzer.cc).
TEST(FashionMnistTest, ParsesFilesHeldInMemory) {
  for (bool gzip : {false, true}) {
    std::string images = data_test::IdxImages(4, 3, 2);
    std::string labels = data_test::IdxLabels(4);
    if (gzip) {
      images = data_test::Gzip(images);
      labels = data_test::Gzip(labels);
    }
    absl::StatusOr<RawImages> split =
        ParseIdxSplit(images, "mem-images", labels, "mem-labels", /*limit=*/3, /*num_classes=*/10);
    ASSERT_TRUE(split.ok()) << split.status();
    EXPECT_EQ(split->count, 3);
    EXPECT_EQ(split->channels, 1);
    EXPECT_EQ(split->height, 3);
    EXPECT_EQ(split->width, 2);
    EXPECT_EQ(split->labels, (std::vector<int64_t>{0, 1, 2}));
    ASSERT_EQ(split->pixels.size(), 3u * 6);
    EXPECT_EQ(split->pixels[6 + 1 * 2 + 1], TestPixel(1, 0, 1, 1));
  }
  ExpectError(ParseIdxSplit(data_test::IdxImages(4, 3, 2).substr(0, 30), "mem-images",
                            data_test::IdxLabels(4), "mem-labels", 0, 10),
              absl::StatusCode::kDataLoss, "truncated IDX images file mem-images");
  ExpectError(ParseIdxSplit(data_test::IdxImages(4, 3, 2), "mem-images", data_test::IdxLabels(4),
                            "mem-labels", 0, /*num_classes=*/3),
              absl::StatusCode::kInvalidArgument, "label 3 out of range [0, 3) in mem-labels");
}

TEST(CifarTest, ReadsBinaryBatches) {
  TempDir dir;
  data_test::WriteCifarDataset(dir.path(), 4, 3);
  absl::StatusOr<DatasetSplits> d = LoadDataset(Options(DatasetFormat::kCifar10, dir.path()));
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->train_images.sizes(), (std::vector<int64_t>{20, 3, 32, 32}));
  ASSERT_EQ(d->val_images.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
  EXPECT_EQ(d->class_names[1], "car");
  auto img = d->train_images.accessor<uint8_t, 4>();
  for (int64_t i = 0; i < 20; ++i) {
    EXPECT_EQ(d->train_labels[i].item<int64_t>(), i % 10);
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(img[i][c][5][7], TestPixel(i, c, 5, 7));
      EXPECT_EQ(img[i][c][31][0], TestPixel(i, c, 31, 0));
    }
  }
  EXPECT_EQ(d->val_images[2][1][3][4].item<uint8_t>(), TestPixel(1002, 1, 3, 4));
  EXPECT_EQ(d->val_labels[2].item<int64_t>(), 1002 % 10);

  DatasetOptions limited = Options(DatasetFormat::kCifar10, dir.path());
  limited.limit_train = 6;
  limited.image_size = 16;
  d = LoadDataset(limited);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->train_images.sizes(), (std::vector<int64_t>{6, 3, 16, 16}));
  EXPECT_EQ(d->train_labels[5].item<int64_t>(), 5);
}

TEST(CifarTest, MalformedFiles) {
  TempDir dir;
  data_test::WriteCifarDataset(dir.path(), 4, 3);
  std::filesystem::remove(dir / "data_batch_3.bin");
  ExpectError(LoadDataset(Options(DatasetFormat::kCifar10, dir.path())),
              absl::StatusCode::kNotFound, dir / "data_batch_3.bin");

  WriteFile(dir / "data_batch_3.bin", data_test::CifarBatch(0, 4).substr(0, 3073 * 2 + 100));
  absl::StatusOr<DatasetSplits> d = LoadDataset(Options(DatasetFormat::kCifar10, dir.path()));
  ExpectError(d, absl::StatusCode::kDataLoss, dir / "data_batch_3.bin");
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("record 2 at offset 6146"));

  std::string bad = data_test::CifarBatch(0, 4);
  bad[3073 * 1] = 12;
  WriteFile(dir / "data_batch_3.bin", bad);
  d = LoadDataset(Options(DatasetFormat::kCifar10, dir.path()));
  ExpectError(d, absl::StatusCode::kInvalidArgument, dir / "data_batch_3.bin");
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("record 1 (offset 3073)"));
}

// AppendCifarBatch and ParseCifarClassNames, the reader's entry points for bytes in memory
// (fuzz/cifar_reader_fuzzer.cc).
TEST(CifarTest, AppendsBatchesHeldInMemory) {
  RawImages out;
  out.channels = 3;
  out.height = 32;
  out.width = 32;
  ASSERT_TRUE(AppendCifarBatch(data_test::CifarBatch(0, 3), "mem-1", /*limit=*/5, out).ok());
  ASSERT_TRUE(AppendCifarBatch(data_test::CifarBatch(3, 3), "mem-2", /*limit=*/5, out).ok());
  EXPECT_EQ(out.count, 5);
  EXPECT_EQ(out.labels, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  ASSERT_EQ(out.pixels.size(), 5u * 3072);
  EXPECT_EQ(out.pixels[4 * 3072 + 2 * 1024 + 5 * 32 + 7], TestPixel(4, 2, 5, 7));

  // A bad label in the second record leaves `out` as it was.
  std::string bad = data_test::CifarBatch(0, 2);
  bad[3073] = 11;
  const RawImages before = out;
  absl::Status status = AppendCifarBatch(bad, "mem-bad", /*limit=*/0, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("mem-bad at record 1 (offset 3073)"));
  EXPECT_EQ(out.count, before.count);
  EXPECT_EQ(out.labels, before.labels);
  EXPECT_EQ(out.pixels, before.pixels);

  absl::StatusOr<std::vector<std::string>> names =
      ParseCifarClassNames("a\r\n\n b \nc\nd\ne\nf\ng\nh\ni\nj", "mem-meta");
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}));
  ExpectError(ParseCifarClassNames("a\nb\n", "mem-meta"), absl::StatusCode::kInvalidArgument,
              "CIFAR-10 meta file mem-meta lists 2 class names, expected 10");
}

// Tiny-ImageNet-200 tree: 3 classes, 4 training images each (two of them greyscale), 5
// validation images.
void WriteTinyImageNet(const TempDir& dir) {
  const std::vector<std::string> wnids = {"n01443537", "n01629819", "n01641577"};
  std::string wnids_txt;
  std::string words_txt = "n00000001\tunused\n";
  for (size_t c = 0; c < wnids.size(); ++c) {
    wnids_txt += wnids[c] + "\n";
    words_txt += wnids[c] + "\tname " + std::to_string(c) + "\n";
    for (int k = 0; k < 4; ++k) {
      WriteFile(
          dir / ("train/" + wnids[c] + "/images/" + wnids[c] + "_" + std::to_string(k) + ".JPEG"),
          ClassJpeg(static_cast<int64_t>(c), 16, 16, k == 1 ? 1 : 3));
    }
    WriteFile(dir / ("train/" + wnids[c] + "/" + wnids[c] + "_boxes.txt"), "ignored\n");
  }
  WriteFile(dir / "wnids.txt", wnids_txt);
  WriteFile(dir / "words.txt", words_txt);
  std::string annotations;
  const int val_labels[5] = {2, 0, 1, 1, 2};
  for (int i = 0; i < 5; ++i) {
    const std::string name = "val_" + std::to_string(i) + ".JPEG";
    WriteFile(dir / ("val/images/" + name), ClassJpeg(val_labels[i], 16, 16, 3));
    annotations += name + "\t" + wnids[val_labels[i]] + "\t0\t0\t15\t15\n";
  }
  WriteFile(dir / "val/val_annotations.txt", annotations);
}

// Checks that every image's mean colour is its label's class colour.
void ExpectClassColors(const torch::Tensor& images, const torch::Tensor& labels, int channels) {
  const torch::Tensor means = images.to(torch::kFloat).mean({2, 3});
  for (int64_t i = 0; i < images.size(0); ++i) {
    const std::vector<uint8_t> color = ClassColor(labels[i].item<int64_t>());
    if (channels == 3) {
      for (int c = 0; c < 3; ++c) {
        // Greyscale sources carry only the luma; skip images whose channels are all equal.
        if (means[i][0].item<float>() == means[i][1].item<float>()) break;
        EXPECT_NEAR(means[i][c].item<float>(), color[c], 6.0) << "image " << i;
      }
    } else {
      const double grey = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2];
      EXPECT_NEAR(means[i][0].item<float>(), grey, 6.0) << "image " << i;
    }
  }
}

TEST(TinyImageNetTest, ReadsDirectoryLayout) {
  TempDir dir;
  WriteTinyImageNet(dir);
  absl::StatusOr<DatasetSplits> d = LoadDataset(Options(DatasetFormat::kTinyImageNet, dir.path()));
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->train_images.sizes(), (std::vector<int64_t>{12, 3, 16, 16}));
  ASSERT_EQ(d->val_images.sizes(), (std::vector<int64_t>{5, 3, 16, 16}));
  EXPECT_EQ(d->num_classes, 3);
  EXPECT_EQ(d->class_names, (std::vector<std::string>{"name 0", "name 1", "name 2"}));
  // Round-robin order over the classes.
  EXPECT_TRUE(torch::equal(d->train_labels.slice(0, 0, 6),
                           torch::tensor({0, 1, 2, 0, 1, 2}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(d->val_labels, torch::tensor({2, 0, 1, 1, 2}, torch::kInt64)));
  ExpectClassColors(d->train_images, d->train_labels, 3);
  ExpectClassColors(d->val_images, d->val_labels, 3);

  DatasetOptions o = Options(DatasetFormat::kTinyImageNet, dir.path());
  o.image_size = 8;
  o.limit_train = 4;
  o.limit_val = 2;
  o.decode_threads = 3;
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->train_images.sizes(), (std::vector<int64_t>{4, 3, 8, 8}));
  EXPECT_EQ(d->val_images.sizes(), (std::vector<int64_t>{2, 3, 8, 8}));
  EXPECT_TRUE(torch::equal(d->train_labels, torch::tensor({0, 1, 2, 0}, torch::kInt64)));
}

TEST(TinyImageNetTest, MalformedTrees) {
  TempDir dir;
  WriteTinyImageNet(dir);
  const DatasetOptions o = Options(DatasetFormat::kTinyImageNet, dir.path());

  WriteFile(dir / "val/val_annotations.txt", "val_0.JPEG\tn99999999\t0\t0\t1\t1\n");
  absl::StatusOr<DatasetSplits> d = LoadDataset(o);
  ExpectError(d, absl::StatusCode::kInvalidArgument, dir / "val/val_annotations.txt");
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("n99999999"));

  WriteFile(dir / "val/val_annotations.txt", "val_9.JPEG\tn01443537\t0\t0\t1\t1\n");
  ExpectError(LoadDataset(o), absl::StatusCode::kNotFound, dir / "val/images/val_9.JPEG");

  WriteFile(dir / "val/val_annotations.txt", "val_0.JPEG\tn01443537\t0\t0\t1\t1\n");
  const std::string bad_image = dir / "train/n01629819/images/n01629819_2.JPEG";
  WriteFile(bad_image, "this is not a JPEG file");
  ExpectError(LoadDataset(o), absl::StatusCode::kInvalidArgument, bad_image);

  // A textured image, so that most of the file is entropy-coded data, cut short.
  std::vector<uint8_t> texture(64 * 64 * 3);
  for (size_t p = 0; p < texture.size(); ++p) texture[p] = static_cast<uint8_t>((p * 7919) % 251);
  const std::string jpeg = data_test::EncodeJpeg(texture, 64, 64, 3);
  WriteFile(bad_image, jpeg.substr(0, jpeg.size() * 2 / 3));
  ExpectError(LoadDataset(o), absl::StatusCode::kDataLoss, bad_image);

  // A small file whose frame header (SOF0: FF C0, length, precision, height, width) declares
  // 65,000 x 65,000 pixels: refused before anything that size is allocated.
  std::string huge = ClassJpeg(0, 16, 16, 3);
  const size_t sof = huge.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  for (size_t at : {sof + 5, sof + 7}) {
    huge[at] = static_cast<char>(65000 >> 8);
    huge[at + 1] = static_cast<char>(65000 & 0xFF);
  }
  WriteFile(bad_image, huge);
  ExpectError(LoadDataset(o), absl::StatusCode::kInvalidArgument, "declares 65000x65000 pixels");

  std::filesystem::remove_all(dir / "train/n01641577");
  ExpectError(LoadDataset(o), absl::StatusCode::kNotFound, dir / "train/n01641577/images");

  std::filesystem::remove(dir / "wnids.txt");
  ExpectError(LoadDataset(o), absl::StatusCode::kNotFound, dir / "wnids.txt");
}

// Names read from the list files must stay inside the data set's directory.
TEST(TinyImageNetTest, RefusesListedNamesThatLeaveTheirDirectory) {
  TempDir dir;
  WriteTinyImageNet(dir);
  const DatasetOptions o = Options(DatasetFormat::kTinyImageNet, dir.path());
  // An image outside val/images that the annotations could reach.
  WriteFile(dir / "outside.JPEG", ClassJpeg(0, 16, 16, 3));
  for (const std::string& name : std::vector<std::string>{
           "../../outside.JPEG", "/etc/passwd", "sub/val_0.JPEG", "..", std::string("a\0b", 3)}) {
    WriteFile(dir / "val/val_annotations.txt",
              "val_0.JPEG\tn01443537\t0\t0\t1\t1\n" + name + "\tn01443537\t0\t0\t1\t1\n");
    ExpectError(LoadDataset(o), absl::StatusCode::kInvalidArgument,
                "at line 2 of " + (dir / "val/val_annotations.txt") + " is not a plain file name");
  }
  WriteTinyImageNet(dir);
  WriteFile(dir / "wnids.txt", "n01443537\n../n01629819\nn01641577\n");
  ExpectError(LoadDataset(o), absl::StatusCode::kInvalidArgument,
              "class id \"../n01629819\" at line 2 of " + (dir / "wnids.txt"));
}

TEST(ImageFolderTest, ReadsResizesAndInfersChannels) {
  TempDir dir;
  const std::vector<std::string> classes = {"cat", "dog", "eel"};
  for (int c = 0; c < 3; ++c) {
    for (int k = 0; k < 3; ++k) {
      // Varied sizes and extensions; resized to 12x12 at load.
      const int h = 20 + 4 * k;
      const int w = 30 - 2 * k;
      WriteFile(
          dir / ("train/" + classes[c] + "/img" + std::to_string(k) + (k == 2 ? ".JPEG" : ".jpg")),
          ClassJpeg(c, h, w, 3));
    }
    WriteFile(dir / ("val/" + classes[c] + "/v.jpeg"), ClassJpeg(c, 24, 24, 3));
  }
  WriteFile(dir / "train/cat/notes.txt", "ignored");
  DatasetOptions o = Options(DatasetFormat::kImageFolder, dir.path());
  o.image_size = 12;
  absl::StatusOr<DatasetSplits> d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->train_images.sizes(), (std::vector<int64_t>{9, 3, 12, 12}));
  ASSERT_EQ(d->val_images.sizes(), (std::vector<int64_t>{3, 3, 12, 12}));
  EXPECT_EQ(d->class_names, classes);
  ExpectClassColors(d->train_images, d->train_labels, 3);
  ExpectClassColors(d->val_images, d->val_labels, 3);

  o.channels = 1;
  d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->train_images.sizes(), (std::vector<int64_t>{9, 1, 12, 12}));
  ExpectClassColors(d->train_images, d->train_labels, 1);

  // Without image_size the images must share one size.
  o.image_size = 0;
  ExpectError(LoadDataset(o), absl::StatusCode::kInvalidArgument, "set image_size");
}

// A cancel stops decoding before the next image: LoadDataset is CANCELLED, says how far it got
// and writes no cache file; the same options load once the flag is clear.
TEST(ImageFolderTest, CancelStopsDecodingAndWritesNoCache) {
  TempDir dir;
  for (int c = 0; c < 2; ++c) {
    const std::string name = "c" + std::to_string(c);
    for (int k = 0; k < 20; ++k) {
      WriteFile(dir / ("train/" + name + "/" + std::to_string(k) + ".jpg"),
                ClassJpeg(c, 16, 16, 3));
    }
    WriteFile(dir / ("val/" + name + "/a.jpg"), ClassJpeg(c, 16, 16, 3));
  }
  std::atomic<bool> cancel{true};
  DatasetOptions o = Options(DatasetFormat::kImageFolder, dir.path());
  o.cache_dir = dir / "cache";
  o.cancel = &cancel;
  ExpectError(LoadDataset(o), absl::StatusCode::kCancelled,
              "cancelled while decoding the training images (0 of 40 decoded)");
  std::error_code ec;
  std::filesystem::directory_iterator it(o.cache_dir, ec);
  EXPECT_TRUE(ec || it == std::filesystem::directory_iterator()) << "a cache file was written";

  cancel = false;
  absl::StatusOr<DatasetSplits> d = LoadDataset(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->train_images.size(0), 40);
  EXPECT_EQ(d->cache_outcome, CacheOutcome::kWritten);
}

// A class added where the limits take no file from it still changes the cache key: its
// labels' range and names are not those of the cached data set.
TEST(ImageFolderTest, AClassAddedBeyondTheLimitsIsNotServedFromTheCache) {
  TempDir dir;
  for (const std::string& name : {"a", "b"}) {
    for (int k = 0; k < 2; ++k) {
      WriteFile(dir / ("train/" + name + "/" + std::to_string(k) + ".jpg"),
                ClassJpeg(name == "a" ? 0 : 1, 16, 16, 3));
      WriteFile(dir / ("val/" + name + "/" + std::to_string(k) + ".jpg"),
                ClassJpeg(name == "a" ? 0 : 1, 16, 16, 3));
    }
  }
  DatasetOptions o = Options(DatasetFormat::kImageFolder, dir.path());
  o.cache_dir = dir / "cache";
  o.limit_train = 2;  // one file of a, one of b: the listing stops before c
  o.limit_val = 2;
  absl::StatusOr<DatasetSplits> first = LoadDataset(o);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->num_classes, 2);

  WriteFile(dir / "train/c/0.jpg", ClassJpeg(2, 16, 16, 3));
  WriteFile(dir / "val/c/0.jpg", ClassJpeg(2, 16, 16, 3));
  absl::StatusOr<DatasetSplits> second = LoadDataset(o);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->cache_outcome, CacheOutcome::kWritten);
  EXPECT_NE(second->cache_path, first->cache_path);
  EXPECT_EQ(second->num_classes, 3);
  EXPECT_EQ(second->class_names, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(ImageFolderTest, GreyFirstImageMeansOneChannel) {
  TempDir dir;
  for (int c = 0; c < 2; ++c) {
    const std::string name = "c" + std::to_string(c);
    WriteFile(dir / ("train/" + name + "/a.jpg"), ClassJpeg(c, 10, 10, 1));
    WriteFile(dir / ("train/" + name + "/b.jpg"), ClassJpeg(c, 10, 10, 3));
    WriteFile(dir / ("val/" + name + "/a.jpg"), ClassJpeg(c, 10, 10, 3));
  }
  absl::StatusOr<DatasetSplits> d = LoadDataset(Options(DatasetFormat::kImageFolder, dir.path()));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->train_images.sizes(), (std::vector<int64_t>{4, 1, 10, 10}));
  ExpectClassColors(d->train_images, d->train_labels, 1);
  ExpectClassColors(d->val_images, d->val_labels, 1);
}

TEST(ImageFolderTest, MalformedTrees) {
  TempDir dir;
  ExpectError(LoadDataset(Options(DatasetFormat::kImageFolder, dir.path())),
              absl::StatusCode::kNotFound, dir / "train");
  WriteFile(dir / "train/a/x.jpg", ClassJpeg(0, 8, 8, 3));
  ExpectError(LoadDataset(Options(DatasetFormat::kImageFolder, dir.path())),
              absl::StatusCode::kNotFound, dir / "val");
  WriteFile(dir / "val/b/y.jpg", ClassJpeg(0, 8, 8, 3));
  ExpectError(LoadDataset(Options(DatasetFormat::kImageFolder, dir.path())),
              absl::StatusCode::kInvalidArgument, dir / "val/b");
  std::filesystem::remove_all(dir / "val/b");
  WriteFile(dir / "val/a/y.png", "png bytes");
  ExpectError(LoadDataset(Options(DatasetFormat::kImageFolder, dir.path())),
              absl::StatusCode::kUnimplemented, dir / "val/a/y.png");
  std::filesystem::remove(dir / "val/a/y.png");
  WriteFile(dir / "val/a/y.jpg", "");
  ExpectError(LoadDataset(Options(DatasetFormat::kImageFolder, dir.path())),
              absl::StatusCode::kInvalidArgument, dir / "val/a/y.jpg");
}

// A huge (here sparse) image file is refused by size before it is read, whichever thread reads
// it: the first training image (read to infer the size) or any other image.
TEST(ImageFolderTest, RefusesImageFilesOverTheSizeCap) {
  TempDir dir;
  WriteFile(dir / "train/a/x.jpg", ClassJpeg(0, 8, 8, 3));
  WriteFile(dir / "train/a/z.jpg", ClassJpeg(0, 8, 8, 3));
  WriteFile(dir / "val/a/y.jpg", ClassJpeg(0, 8, 8, 3));
  const uint64_t cap = uint64_t{64} << 20;
  std::filesystem::resize_file(dir / "train/a/z.jpg", cap + 1);
  ExpectError(LoadDataset(Options(DatasetFormat::kImageFolder, dir.path())),
              absl::StatusCode::kInvalidArgument, dir / "train/a/z.jpg is 67108865 bytes");
  std::filesystem::resize_file(dir / "train/a/x.jpg", uint64_t{8} << 30);
  DatasetOptions o = Options(DatasetFormat::kImageFolder, dir.path());
  ExpectError(LoadDataset(o), absl::StatusCode::kInvalidArgument,
              dir / "train/a/x.jpg is 8589934592 bytes, more than the 67108864");
  o.image_size = 8;
  ExpectError(LoadDataset(o), absl::StatusCode::kInvalidArgument,
              dir / "train/a/x.jpg is 8589934592 bytes, more than the 67108864");
}

// Offset of the first byte after the start-of-scan segment (FF DA, length) of `jpeg`.
size_t ScanStart(const std::string& jpeg) {
  const size_t sos = jpeg.find("\xFF\xDA");
  EXPECT_NE(sos, std::string::npos);
  const size_t length =
      (static_cast<uint8_t>(jpeg[sos + 2]) << 8) | static_cast<uint8_t>(jpeg[sos + 3]);
  return sos + 2 + length;
}

// Damaged entropy-coded data, which libjpeg decodes with only a warning, is DATA_LOSS.
TEST(ImageFolderTest, CorruptScanDataIsDataLoss) {
  TempDir dir;
  WriteFile(dir / "train/a/x.jpg", ClassJpeg(0, 8, 8, 3));
  WriteFile(dir / "val/a/y.jpg", ClassJpeg(0, 8, 8, 3));
  DatasetOptions o = Options(DatasetFormat::kImageFolder, dir.path());
  o.image_size = 8;
  std::vector<uint8_t> texture(64 * 64 * 3);
  for (size_t p = 0; p < texture.size(); ++p) texture[p] = static_cast<uint8_t>((p * 7919) % 251);
  const std::string jpeg = data_test::EncodeJpeg(texture, 64, 64, 3);
  const size_t scan = ScanStart(jpeg);
  const std::string bad = dir / "train/a/z.jpg";

  // Cut in the middle of the scan, then an end-of-image marker: the scan hits a marker early.
  WriteFile(bad, jpeg.substr(0, scan + (jpeg.size() - scan) / 2) + "\xFF\xD9");
  ExpectError(LoadDataset(o), absl::StatusCode::kDataLoss, "corrupt JPEG " + bad);

  // Scrambled scan bytes (no markers among them), properly ended.
  std::string scrambled = jpeg;
  for (size_t k = scan + 5; k + 2 < scrambled.size(); ++k) {
    uint8_t b = static_cast<uint8_t>(static_cast<uint8_t>(scrambled[k]) * 37 + 11);
    if (b == 0xFF) b = 0xFE;
    scrambled[k] = static_cast<char>(b);
  }
  WriteFile(bad, scrambled);
  ExpectError(LoadDataset(o), absl::StatusCode::kDataLoss, "corrupt JPEG " + bad);

  // Garbage bytes between the scan and the end-of-image marker.
  WriteFile(bad, jpeg.substr(0, jpeg.size() - 2) + "garbage\xFF\xD9");
  ExpectError(LoadDataset(o), absl::StatusCode::kDataLoss, bad);

  // The intact textured image, greyscale and low quality ones decode.
  WriteFile(bad, jpeg);
  EXPECT_TRUE(LoadDataset(o).ok());
  WriteFile(bad,
            data_test::EncodeJpeg(std::vector<uint8_t>(texture.begin(), texture.begin() + 64 * 64),
                                  64, 64, 1, 20));
  EXPECT_TRUE(LoadDataset(o).ok());
}

TEST(SyntheticTest, DeterministicBalancedAndLearnable) {
  DatasetOptions o;
  o.format = DatasetFormat::kSynthetic;
  o.image_size = 16;
  o.channels = 1;
  o.synthetic_num_classes = 5;
  o.synthetic_train_size = 500;
  o.synthetic_val_size = 200;
  o.synthetic_seed = 7;
  absl::StatusOr<DatasetSplits> a = LoadDataset(o);
  absl::StatusOr<DatasetSplits> b = LoadDataset(o);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->train_images.sizes(), (std::vector<int64_t>{500, 1, 16, 16}));
  EXPECT_TRUE(torch::equal(a->train_images, b->train_images));
  EXPECT_TRUE(torch::equal(torch::bincount(a->train_labels), torch::full({5}, 100, torch::kInt64)));
  o.synthetic_seed = 8;
  absl::StatusOr<DatasetSplits> c = LoadDataset(o);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(torch::equal(a->train_images, c->train_images));

  // Learnable: even a nearest-class-mean classifier on raw pixels, which the random shifts
  // blur, is far above chance (0.2).
  const torch::Tensor x = a->train_images.to(torch::kFloat).flatten(1);
  const torch::Tensor means = torch::stack(
      {x.index({a->train_labels == 0}).mean(0), x.index({a->train_labels == 1}).mean(0),
       x.index({a->train_labels == 2}).mean(0), x.index({a->train_labels == 3}).mean(0),
       x.index({a->train_labels == 4}).mean(0)});
  const torch::Tensor v = a->val_images.to(torch::kFloat).flatten(1);
  const torch::Tensor predicted = torch::cdist(v, means).argmin(1);
  const double accuracy = predicted.eq(a->val_labels).to(torch::kFloat).mean().item<double>();
  EXPECT_GT(accuracy, 0.75);
}

TEST(DatasetOptionsTest, ParsesFormatsAndRejectsBadOptions) {
  for (DatasetFormat f :
       {DatasetFormat::kFashionMnist, DatasetFormat::kTinyImageNet, DatasetFormat::kImageFolder,
        DatasetFormat::kCifar10, DatasetFormat::kSynthetic}) {
    absl::StatusOr<DatasetFormat> parsed = ParseDatasetFormat(DatasetFormatName(f));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, f);
  }
  ExpectError(ParseDatasetFormat("mnist"), absl::StatusCode::kInvalidArgument, "fashion_mnist");
  DatasetOptions o;
  o.format = DatasetFormat::kCifar10;
  ExpectError(LoadDataset(o), absl::StatusCode::kInvalidArgument, "dataset.path");
  o.format = DatasetFormat::kSynthetic;
  o.channels = 2;
  ExpectError(LoadDataset(o), absl::StatusCode::kInvalidArgument, "dataset.channels");
}

}  // namespace
}  // namespace compress::pipeline
