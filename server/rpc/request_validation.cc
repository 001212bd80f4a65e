#include "server/rpc/request_validation.h"

#include <algorithm>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/rpc/proto_convert.h"
#include "worker/spec/job_spec.h"

namespace compress::server {
namespace {

constexpr char kTokenVersion[] = "v1";

// INVALID_ARGUMENT naming `field` when `text` holds a control character (below 0x20, or 0x7f):
// listings print labels and request ids as they are, where a newline or a NUL would forge or cut
// a line.
absl::Status RefuseControlCharacters(absl::string_view field, absl::string_view text) {
  const auto control = std::find_if(text.begin(), text.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
  if (control == text.end()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": contains the control character 0x",
                   absl::Hex(static_cast<unsigned char>(*control), absl::kZeroPad2), " at offset ",
                   control - text.begin()));
}

absl::Status ValidateLabels(const google::protobuf::Map<std::string, std::string>& labels) {
  if (static_cast<int>(labels.size()) > kMaxLabels) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels: at most ", kMaxLabels, " labels, got ", labels.size()));
  }
  for (const auto& [key, value] : labels) {
    if (!IsValidLabelKey(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels: key '", key, "' must be ", LabelKeyRule()));
    }
    if (static_cast<int>(value.size()) > kMaxLabelValueLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels.", key, ": at most ", kMaxLabelValueLength, " characters"));
    }
    if (absl::Status s = RefuseControlCharacters(absl::StrCat("labels.", key), value); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ValidCreateJob> ValidateCreateJobRequest(const v1::CreateJobRequest& request,
                                                        const DataRoots& data_roots) {
  if (static_cast<int>(request.request_id().size()) > kMaxRequestIdLength) {
    return absl::InvalidArgumentError(absl::StrCat("request_id: at most ", kMaxRequestIdLength,
                                                   " characters, got ",
                                                   request.request_id().size()));
  }
  if (absl::Status s = RefuseControlCharacters("request_id", request.request_id()); !s.ok()) {
    return s;
  }
  if (request.max_attempts() < 0 || request.max_attempts() > Scheduler::kMaxAttemptsLimit) {
    return absl::InvalidArgumentError(absl::StrCat("max_attempts: must be in [0, ",
                                                   Scheduler::kMaxAttemptsLimit, "], got ",
                                                   request.max_attempts()));
  }
  if (absl::Status s = ValidateLabels(request.labels()); !s.ok()) return s;
  absl::StatusOr<std::string> spec_json = SpecToJson(request.spec());
  if (!spec_json.ok()) return spec_json.status();
  absl::StatusOr<spec::JobSpec> spec = spec::ParseJobSpec(*spec_json);
  if (!spec.ok()) return spec.status();
  if (absl::Status s = data_roots.Check("spec.dataset.path", spec->dataset.path); !s.ok()) {
    return s;
  }
  if (absl::Status s =
          data_roots.Check("spec.teacher.checkpoint_path", spec->teacher.checkpoint_path);
      !s.ok()) {
    return s;
  }
  ValidCreateJob valid;
  JobRequest& job = valid.job;
  job.spec_json = *std::move(spec_json);
  job.labels.insert(request.labels().begin(), request.labels().end());
  job.priority = request.priority();
  job.request_id = request.request_id();
  job.max_attempts = request.max_attempts();
  valid.teacher_blob_sha256 = spec->teacher.blob_sha256;
  return valid;
}

std::string EncodePageToken(int64_t cursor, const std::string& filter) {
  return absl::WebSafeBase64Escape(absl::StrCat(kTokenVersion, "\n", cursor, "\n", filter));
}

absl::StatusOr<ListJobsQuery> ValidateListJobsRequest(const v1::ListJobsRequest& request) {
  ListJobsQuery query;
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must not be negative, got ", request.page_size()));
  }
  if (request.page_size() > 0) query.page_size = std::min(request.page_size(), kMaxPageSize);
  absl::StatusOr<JobFilter> filter = ParseJobFilter(request.filter());
  if (!filter.ok()) return filter.status();
  query.filter = *std::move(filter);
  if (!request.page_token().empty()) {
    std::string decoded;
    std::vector<std::string> parts;
    if (absl::WebSafeBase64Unescape(request.page_token(), &decoded)) {
      parts = absl::StrSplit(decoded, absl::MaxSplits('\n', 2));
    }
    if (parts.size() != 3 || parts[0] != kTokenVersion ||
        !absl::SimpleAtoi(parts[1], &query.after_cursor) || query.after_cursor < 0) {
      return absl::InvalidArgumentError("page_token: not a token from ListJobs");
    }
    if (parts[2] != request.filter()) {
      return absl::InvalidArgumentError(
          "page_token: it was issued for another filter; keep the filter while paging");
    }
  }
  return query;
}

}  // namespace compress::server
