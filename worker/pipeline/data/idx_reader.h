// Reader for Fashion-MNIST (and MNIST) in the IDX format, gzip-compressed or raw.
//
// Layout (as Debian's dataset-fashion-mnist installs it under /usr/share/datasets/fashion-mnist):
//   train-images-idx3-ubyte[.gz]  magic 0x00000803, count, rows, cols (big-endian u32), pixels
//   train-labels-idx1-ubyte[.gz]  magic 0x00000801, count, labels (one byte each)
//   t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]  the validation (test) split
#ifndef COMPRESS_WORKER_PIPELINE_DATA_IDX_READER_H_
#define COMPRESS_WORKER_PIPELINE_DATA_IDX_READER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/pipeline/data/raw_dataset.h"

namespace compress::pipeline {

// The four files of an IDX data set, each the .gz file when present, else the raw one.
struct IdxFiles {
  std::string train_images;
  std::string train_labels;
  std::string val_images;
  std::string val_labels;
};

// Finds the four files in `dir`. NOT_FOUND names the directory and the missing file.
absl::StatusOr<IdxFiles> LocateIdxFiles(const std::string& dir);

// Size and mtime of the four files, for the cache key.
absl::StatusOr<std::vector<SourceFile>> IdxSources(const IdxFiles& files);

// Decodes one images file and its labels file; reads at most `limit` records (0 = all).
// Labels must be below `num_classes`.
absl::StatusOr<RawImages> ReadIdxSplit(const std::string& images_path,
                                       const std::string& labels_path, int64_t limit,
                                       int64_t num_classes);

// ReadIdxSplit on files already in memory: the bytes of an images file and of a labels file, each
// gzip-compressed or raw. The paths only name the files in error messages.
absl::StatusOr<RawImages> ParseIdxSplit(const std::string& images_file,
                                        const std::string& images_path,
                                        const std::string& labels_file,
                                        const std::string& labels_path, int64_t limit,
                                        int64_t num_classes);

// Decodes the whole data set (10 classes, Fashion-MNIST class names).
absl::StatusOr<RawDataset> ReadIdxDataset(const IdxFiles& files, int64_t limit_train,
                                          int64_t limit_val);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_IDX_READER_H_
