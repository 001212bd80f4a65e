// Reading a job spec file: JSON with the field names of proto/compress/v1/job_spec.proto, or
// the same document in the YAML subset of client/yaml_lite.h.
#ifndef COMPRESS_CLIENT_SPEC_FILE_H_
#define COMPRESS_CLIENT_SPEC_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "compress/v1/job_spec.pb.h"

namespace compress::client {

// Parses `text` (the contents of `file_name`) into a JobSpec and checks it with the same
// validation the server applies (worker/spec). The format follows the file name: `.yaml` or
// `.yml` is YAML, `.json` is JSON; any other name is JSON when the text starts (after
// whitespace) with '{', YAML otherwise. A YAML file is turned into JSON first, so both formats
// give the same JobSpec. INVALID_ARGUMENT naming the file and the field, or for YAML syntax
// "FILE:LINE:COLUMN: message".
absl::StatusOr<compress::v1::JobSpec> ParseJobSpecText(const std::string& text,
                                                       const std::string& file_name);

// Reads and parses a spec file. When it cannot be read, the code its errno maps to (NOT_FOUND,
// PERMISSION_DENIED, FAILED_PRECONDITION for a directory) and "cannot read spec file PATH: REASON".
absl::StatusOr<compress::v1::JobSpec> LoadJobSpecFile(const std::string& path);

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_SPEC_FILE_H_
