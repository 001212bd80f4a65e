// Reader for CIFAR-10 in its binary version (cifar-10-binary.tar.gz, unpacked).
//
// Layout: data_batch_1.bin .. data_batch_5.bin (train) and test_batch.bin (validation), each a
// sequence of 3073-byte records: one label byte, then 1024 red, 1024 green, 1024 blue bytes of a
// 32x32 image in row-major order. batches.meta.txt lists the class names, one per line (optional;
// the standard names are used when it is absent). `dir` may also be the parent of
// cifar-10-batches-bin/.
#ifndef COMPRESS_WORKER_PIPELINE_DATA_CIFAR_READER_H_
#define COMPRESS_WORKER_PIPELINE_DATA_CIFAR_READER_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/pipeline/data/raw_dataset.h"

namespace compress::pipeline {

// The files of a CIFAR-10 binary data set.
struct CifarFiles {
  std::vector<std::string> train;  // data_batch_1..5.bin
  std::string val;                 // test_batch.bin
  std::string meta;                // batches.meta.txt, empty when absent
};

// Finds the files in `dir` (or dir/cifar-10-batches-bin). NOT_FOUND names the missing file.
absl::StatusOr<CifarFiles> LocateCifarFiles(const std::string& dir);

// Size and mtime of every file, for the cache key.
absl::StatusOr<std::vector<SourceFile>> CifarSources(const CifarFiles& files);

// Decodes one batch file held in memory (`path` names it in messages) and appends its records to
// `out`, which must be set up for 3x32x32 images, until `out` holds `limit` (0 = no limit). On
// error `out` is left unchanged.
absl::Status AppendCifarBatch(const std::string& batch, const std::string& path, int64_t limit,
                              RawImages& out);

// The class names of batches.meta.txt's text: its non-blank lines, stripped, which must be 10.
absl::StatusOr<std::vector<std::string>> ParseCifarClassNames(absl::string_view text,
                                                              const std::string& path);

// Decodes the data set; reads at most limit_train / limit_val records (0 = all).
absl::StatusOr<RawDataset> ReadCifarDataset(const CifarFiles& files, int64_t limit_train,
                                            int64_t limit_val);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_CIFAR_READER_H_
