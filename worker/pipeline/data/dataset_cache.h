// The decode cache: decoded splits stored in one binary file, so that a data set is decoded
// once. File layout (little-endian): 8-byte magic "CMPDSC01", u64 key length + key text,
// u64 num_classes, u64 name count + (u64 length + bytes) per class name, then for train and val:
// u64 count, channels, height, width, count*C*H*W pixel bytes, count int64 labels; last a u32
// CRC-32 (zlib) of everything after the magic. The key text (format, options, every source file's
// relative name, size and mtime) is stored in full and compared on load, so a hash collision
// cannot return the wrong data.
#ifndef COMPRESS_WORKER_PIPELINE_DATA_DATASET_CACHE_H_
#define COMPRESS_WORKER_PIPELINE_DATA_DATASET_CACHE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/pipeline/data/dataset.h"

namespace compress::pipeline {

// 64-bit FNV-1a of `text` as 16 hex digits (stable across runs and machines, unlike absl::Hash).
std::string StableHashHex(const std::string& text);

// Reads a cache file; NOT_FOUND when absent, DATA_LOSS when truncated or corrupt (bad magic,
// sizes, CRC or labels), FAILED_PRECONDITION when its key differs from `key`.
absl::StatusOr<DatasetSplits> ReadDatasetCache(const std::string& path, const std::string& key);

// Writes `splits` under `key` atomically: a temporary file in the same directory, renamed over
// `path` once complete. Creates the directory when missing.
absl::Status WriteDatasetCache(const std::string& path, const std::string& key,
                               const DatasetSplits& splits);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_DATASET_CACHE_H_
