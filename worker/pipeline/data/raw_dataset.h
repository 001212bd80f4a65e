// Plain (torch-free) containers the data set readers fill: decoded uint8 images in NCHW order
// with their labels, and the identity of the source files a decoded set came from.
#ifndef COMPRESS_WORKER_PIPELINE_DATA_RAW_DATASET_H_
#define COMPRESS_WORKER_PIPELINE_DATA_RAW_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

namespace compress::pipeline {

// One split of decoded images. Invariant: pixels.size() == count * channels * height * width,
// laid out [count, channels, height, width]; labels.size() == count.
struct RawImages {
  int64_t count = 0;
  int channels = 0;
  int height = 0;
  int width = 0;
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;

  int64_t ImageBytes() const { return int64_t{channels} * height * width; }
};

// A decoded data set as the readers produce it, before it becomes tensors.
struct RawDataset {
  RawImages train;
  RawImages val;
  int64_t num_classes = 0;
  // One name per class, index = label.
  std::vector<std::string> class_names;
};

// A file a data set is decoded from; name, size and modification time make up the cache key.
struct SourceFile {
  std::string path;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_RAW_DATASET_H_
