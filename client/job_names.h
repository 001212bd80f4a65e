// Resource names of the API: "jobs/{id}" and "jobs/{id}/artifacts/{name}".
#ifndef COMPRESS_CLIENT_JOB_NAMES_H_
#define COMPRESS_CLIENT_JOB_NAMES_H_

#include <string>

#include "absl/status/statusor.h"

namespace compress::client {

// "ID" or "jobs/ID" -> "jobs/ID". INVALID_ARGUMENT for an empty id or one with a '/'.
absl::StatusOr<std::string> JobName(const std::string& arg);

// "jobs/ID" -> "ID".
std::string JobId(const std::string& job_name);

// "jobs/ID/artifacts/NAME".
std::string ArtifactResourceName(const std::string& job_name, const std::string& artifact);

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_JOB_NAMES_H_
