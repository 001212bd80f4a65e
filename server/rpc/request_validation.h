// Validation of CompressionService requests, with errors that name the offending field.
#ifndef COMPRESS_SERVER_RPC_REQUEST_VALIDATION_H_
#define COMPRESS_SERVER_RPC_REQUEST_VALIDATION_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "compress/v1/compression_service.pb.h"
#include "server/core/data_roots.h"
#include "server/core/job_filter.h"
#include "server/core/scheduler.h"

namespace compress::server {

// Limits of CreateJob (and kMaxLabels and the label key rule, in server/core/job.h; max_attempts
// is bounded by Scheduler::kMaxAttemptsLimit, which also bounds compressd's --max_attempts).
// Label values and the request id hold no control character (below 0x20, and 0x7f).
inline constexpr int kMaxRequestIdLength = 128;
inline constexpr int kMaxLabelValueLength = 256;

// ListJobs page sizes.
inline constexpr int kDefaultPageSize = 50;
inline constexpr int kMaxPageSize = 1000;

// A CreateJob request that passed validation.
struct ValidCreateJob {
  // What the scheduler needs (the tenant is left for the caller to fill in), with the spec as
  // JSON with proto field names.
  JobRequest job;
  // spec.teacher.blob_sha256; empty when the spec names no blob.
  std::string teacher_blob_sha256;
};

// Checks the request and the spec (worker/spec's ParseJobSpec: "spec.prune.round_to: ..."), and
// that spec.dataset.path and spec.teacher.checkpoint_path resolve under `data_roots`.
absl::StatusOr<ValidCreateJob> ValidateCreateJobRequest(const v1::CreateJobRequest& request,
                                                        const DataRoots& data_roots);

// A parsed ListJobs request.
struct ListJobsQuery {
  JobFilter filter;
  int page_size = kDefaultPageSize;
  int64_t after_cursor = 0;
};
absl::StatusOr<ListJobsQuery> ValidateListJobsRequest(const v1::ListJobsRequest& request);

// The opaque page token for a cursor under a filter (a token only works with its filter).
std::string EncodePageToken(int64_t cursor, const std::string& filter);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_REQUEST_VALIDATION_H_
