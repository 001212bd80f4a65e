// Reading a job spec file: JSON with the field names of proto/compress/v1/job_spec.proto.
#ifndef COMPRESS_CLIENT_SPEC_FILE_H_
#define COMPRESS_CLIENT_SPEC_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "compress/v1/job_spec.pb.h"

namespace compress::client {

// Parses `text` (the contents of `file_name`) into a JobSpec and checks it with the same
// validation the server applies (worker/spec). INVALID_ARGUMENT naming the file and the field.
absl::StatusOr<compress::v1::JobSpec> ParseJobSpecText(const std::string& text,
                                                       const std::string& file_name);

// Reads and parses a spec file. NOT_FOUND when it cannot be read.
absl::StatusOr<compress::v1::JobSpec> LoadJobSpecFile(const std::string& path);

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_SPEC_FILE_H_
