// The ListJobs filter: the AIP-160 subset `state = RUNNING AND labels.team = "vision"`.
#ifndef COMPRESS_SERVER_CORE_JOB_FILTER_H_
#define COMPRESS_SERVER_CORE_JOB_FILTER_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/core/job.h"

namespace compress::server {

// A conjunction of clauses; an empty filter matches every job.
struct JobFilter {
  std::optional<JobState> state;
  // Every label must be present with exactly this value.
  std::map<std::string, std::string> labels;
  // Only jobs of this tenant; nullopt = every tenant. Set by the server from the caller's
  // identity, never parsed from the filter text.
  std::optional<std::string> tenant;

  bool Matches(const Job& job) const;
};

// Parses `text`: clauses joined by `AND`, each `state = NAME` (NAME one of QUEUED, RUNNING,
// CANCELLING, SUCCEEDED, FAILED, CANCELLED) or `labels.KEY = "VALUE"` (KEY a valid label key,
// IsValidLabelKey; VALUE in double quotes, with \" and \\ as escapes), at most kMaxLabels of
// those. INVALID_ARGUMENT naming "filter" and
// the offending position.
absl::StatusOr<JobFilter> ParseJobFilter(absl::string_view text);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_JOB_FILTER_H_
