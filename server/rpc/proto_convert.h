// Translation between compress.v1 messages and the core's plain structs, and the parsing of
// resource names.
#ifndef COMPRESS_SERVER_RPC_PROTO_CONVERT_H_
#define COMPRESS_SERVER_RPC_PROTO_CONVERT_H_

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "compress/v1/compression_service.pb.h"
#include "compress/v1/job_spec.pb.h"
#include "server/core/job.h"

namespace compress::server {

// "jobs/{job_id}" -> job_id. INVALID_ARGUMENT naming `field` ("name: expected jobs/{job_id},
// got '...'").
absl::StatusOr<std::string> ParseJobName(absl::string_view field, absl::string_view name);
// "jobs/{job_id}/artifacts/{artifact_name}" -> (job_id, artifact_name).
absl::StatusOr<std::pair<std::string, std::string>> ParseArtifactName(absl::string_view field,
                                                                      absl::string_view name);
std::string JobName(const std::string& job_id);

// The spec as JSON with proto field names (the form worker/spec and the executor read).
absl::StatusOr<std::string> SpecToJson(const v1::JobSpec& spec);

v1::JobState StateToProto(JobState state);
// `spec`, when given, is the job's spec as a message (the request that created the job): it is
// copied instead of parsing job.spec_json, which was printed from it.
void JobToProto(const Job& job, v1::Job* out, const v1::JobSpec* spec = nullptr);
void EventToProto(const JobEvent& event, v1::JobEvent* out);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_PROTO_CONVERT_H_
