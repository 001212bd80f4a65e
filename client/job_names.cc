#include "client/job_names.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace compress::client {

absl::StatusOr<std::string> JobName(const std::string& arg) {
  absl::string_view id = arg;
  absl::ConsumePrefix(&id, "jobs/");
  if (id.empty() || absl::StrContains(id, '/')) {
    return absl::InvalidArgumentError(absl::StrCat("job \"", arg, "\": expected ID or jobs/ID"));
  }
  return absl::StrCat("jobs/", id);
}

std::string JobId(const std::string& job_name) {
  absl::string_view id = job_name;
  absl::ConsumePrefix(&id, "jobs/");
  return std::string(id);
}

std::string ArtifactResourceName(const std::string& job_name, const std::string& artifact) {
  return absl::StrCat(job_name, "/artifacts/", artifact);
}

}  // namespace compress::client
