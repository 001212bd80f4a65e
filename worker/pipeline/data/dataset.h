// Data sets of the compression pipeline: options, the decoded splits, and LoadDataset, which
// reads any supported format (Fashion-MNIST IDX, CIFAR-10 binary, Tiny-ImageNet-200,
// ImageFolder, synthetic) into uint8 tensors, resizing once at load and optionally going
// through an on-disk decode cache. Formats and layouts: docs/data.md.
#ifndef COMPRESS_WORKER_PIPELINE_DATA_DATASET_H_
#define COMPRESS_WORKER_PIPELINE_DATA_DATASET_H_

#include <torch/types.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace compress::pipeline {

enum class DatasetFormat {
  kFashionMnist,  // "fashion_mnist": IDX files, gzip or raw
  kTinyImageNet,  // "tiny_imagenet": Tiny-ImageNet-200 directory layout, JPEG
  kImageFolder,   // "image_folder": train/<class>/*.jpg and val/<class>/*.jpg
  kCifar10,       // "cifar10": CIFAR-10 binary batches
  kSynthetic,     // "synthetic": generated, learnable patterns
};

// "fashion_mnist", "tiny_imagenet", "image_folder", "cifar10", "synthetic".
absl::string_view DatasetFormatName(DatasetFormat format);
// Inverse of DatasetFormatName; INVALID_ARGUMENT lists the accepted names.
absl::StatusOr<DatasetFormat> ParseDatasetFormat(absl::string_view name);

struct DatasetOptions {
  // Which reader to use.
  DatasetFormat format = DatasetFormat::kSynthetic;
  // Root directory of the data set (unused for synthetic data).
  std::string path;
  // Resize target: images become image_size x image_size once at load (centre-square crop, then
  // area averaging when shrinking or bilinear when enlarging). 0 = native size; for directory
  // formats all images must then share one size. Synthetic data is generated at this size
  // (0 = 32).
  int image_size = 0;
  // Channels of the loaded images: 1 (grey) or 3 (RGB), converting as needed; 0 = the data
  // set's own (ImageFolder: the first training image's; synthetic: 3).
  int channels = 0;
  // Directory of the decode cache; empty = no cache. Created when missing.
  std::string cache_dir;
  // At most this many training / validation examples (0 = all). Binary formats take the first
  // records; directory formats take files round-robin over the classes.
  int64_t limit_train = 0;
  int64_t limit_val = 0;
  // Threads decoding JPEG files (0 = hardware concurrency).
  int decode_threads = 0;
  // When non-null and set, decoding JPEG files stops once the images in hand are decoded and
  // LoadDataset returns CANCELLED (nothing is written to the cache). Binary formats and the
  // cache read are not interrupted: they take seconds.
  const std::atomic<bool>* cancel = nullptr;
  // Synthetic data only: number of classes, split sizes and the generator's seed.
  int64_t synthetic_num_classes = 10;
  int64_t synthetic_train_size = 2000;
  int64_t synthetic_val_size = 500;
  uint64_t synthetic_seed = 0;
};

// What the decode cache did for one LoadDataset call.
enum class CacheOutcome {
  kDisabled,     // no cache_dir
  kHit,          // loaded from the cache file
  kWritten,      // decoded from the sources and written to a new cache file
  kRebuilt,      // a cache file existed but was unreadable or corrupt; decoded and rewritten
  kWriteFailed,  // decoded; the cache file could not be written (see cache_detail)
};

// Decoded splits. Images are uint8 [N, C, H, W] (contiguous, CPU), labels int64 [N] in
// [0, num_classes).
struct DatasetSplits {
  torch::Tensor train_images;
  torch::Tensor train_labels;
  torch::Tensor val_images;
  torch::Tensor val_labels;
  int64_t num_classes = 0;
  // One name per class, index = label.
  std::vector<std::string> class_names;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  // Decode cache bookkeeping: outcome, cache file (empty without cache) and, for kRebuilt and
  // kWriteFailed, why.
  CacheOutcome cache_outcome = CacheOutcome::kDisabled;
  std::string cache_path;
  std::string cache_detail;
};

// INVALID_ARGUMENT naming the offending field when options are inconsistent.
absl::Status ValidateDatasetOptions(const DatasetOptions& options);

// Loads both splits. NOT_FOUND for a missing file or directory, DATA_LOSS for truncated files,
// INVALID_ARGUMENT for bad magic numbers, labels out of range, mismatched counts and undecodable
// images; every message names the path (and the record and offset inside binary files).
absl::StatusOr<DatasetSplits> LoadDataset(const DatasetOptions& options);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_DATASET_H_
