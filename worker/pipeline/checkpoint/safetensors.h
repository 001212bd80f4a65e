// A reader and writer of the safetensors format (https://github.com/huggingface/safetensors):
//
//   [8 bytes: header length L, unsigned little-endian]
//   [L bytes: JSON object {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
//              ..., "__metadata__": {"<key>": "<string>", ...}}, padded with spaces]
//   [data: every tensor's bytes, little-endian, row-major, at [b, e) from the data start]
//
// Reading is strict: a truncated file, a header length past the end, malformed JSON, an
// unknown dtype, a byte range out of bounds, overlapping another or not matching the dtype and
// shape, or bytes that belong to no tensor all fail with DATA_LOSS (or INVALID_ARGUMENT for a
// well-formed file using a dtype this reader does not support), the message naming the file
// and the tensor. Writing pads the header so the data starts 8-byte aligned, and replaces the
// destination atomically (temporary file, fsync, rename).
//
// dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
#ifndef COMPRESS_WORKER_PIPELINE_CHECKPOINT_SAFETENSORS_H_
#define COMPRESS_WORKER_PIPELINE_CHECKPOINT_SAFETENSORS_H_

#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace compress::pipeline {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct SafetensorsContents {
  NamedTensors tensors;                         // CPU tensors, in the order of their data.
  std::map<std::string, std::string> metadata;  // The __metadata__ object, if any.
};

// Parses a whole safetensors file held in memory. `source` names it in error messages.
absl::StatusOr<SafetensorsContents> ParseSafetensors(const std::string& bytes,
                                                     const std::string& source);

// Reads and parses a file. NOT_FOUND if it does not exist, PERMISSION_DENIED if it cannot be
// read, otherwise as ParseSafetensors.
absl::StatusOr<SafetensorsContents> ReadSafetensors(const std::string& path);

// Serialises tensors (any device, any layout; copied to contiguous CPU memory) in the given
// order. INVALID_ARGUMENT for an unsupported dtype, an empty or duplicate name, or the
// reserved name "__metadata__".
absl::StatusOr<std::string> SerializeSafetensors(
    const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {});

// SerializeSafetensors, then WriteFileAtomically (worker/events/durable_file.h) to `path`.
absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Reads a whole file. NOT_FOUND / PERMISSION_DENIED / DATA_LOSS (read error) naming the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_CHECKPOINT_SAFETENSORS_H_
