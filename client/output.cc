#include "client/output.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"

namespace compress::client {

std::string ToJson(const google::protobuf::Message& message, bool multiline) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = multiline;
  std::string json;
  google::protobuf::util::MessageToJsonString(message, &json, options);
  while (!json.empty() && json.back() == '\n') json.pop_back();
  return json;
}

std::string StateName(compress::v1::JobState state) { return compress::v1::JobState_Name(state); }

bool IsFinished(compress::v1::JobState state) {
  return state == compress::v1::SUCCEEDED || state == compress::v1::FAILED ||
         state == compress::v1::CANCELLED;
}

std::string HumanBytes(int64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0) return absl::StrCat(bytes, " B");
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string FormatTimestamp(const google::protobuf::Timestamp& time) {
  if (time.seconds() == 0 && time.nanos() == 0) return "-";
  absl::Time t = absl::FromUnixSeconds(time.seconds()) + absl::Nanoseconds(time.nanos());
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

namespace {

std::string Labels(const compress::v1::Job& job) {
  std::vector<std::string> labels;
  for (const auto& [key, value] : job.labels()) labels.push_back(absl::StrCat(key, "=", value));
  std::sort(labels.begin(), labels.end());
  return labels.empty() ? "-" : absl::StrJoin(labels, ",");
}

}  // namespace

std::string FormatJob(const compress::v1::Job& job) {
  std::string text;
  absl::StrAppend(&text, "name:        ", job.name(), "\n");
  absl::StrAppend(&text, "state:       ", StateName(job.state()), "\n");
  if (!job.current_phase().empty())
    absl::StrAppend(&text, "phase:       ", job.current_phase(), "\n");
  absl::StrAppend(&text, "attempts:    ", job.attempt_count(), " of ", job.max_attempts(), "\n");
  absl::StrAppend(&text, "priority:    ", job.priority(), "\n");
  absl::StrAppend(&text, "labels:      ", Labels(job), "\n");
  absl::StrAppend(&text, "created:     ", FormatTimestamp(job.create_time()), "\n");
  absl::StrAppend(&text, "started:     ", FormatTimestamp(job.start_time()), "\n");
  absl::StrAppend(&text, "ended:       ", FormatTimestamp(job.end_time()), "\n");
  if (!job.error_code().empty() || !job.error_message().empty()) {
    absl::StrAppend(&text, "error:       ", job.error_code(), ": ", job.error_message(), "\n");
  }
  absl::StrAppend(&text, "events:      ", job.last_event_sequence(), "\n");
  if (job.artifacts_size() > 0) {
    absl::StrAppend(&text, "artifacts:\n");
    for (const compress::v1::Artifact& artifact : job.artifacts()) {
      absl::StrAppend(&text, absl::StrFormat("  %-24s %10s  sha256 %s\n", artifact.name(),
                                             HumanBytes(artifact.size_bytes()), artifact.sha256()));
    }
  }
  return text;
}

std::string FormatJobTable(const std::vector<compress::v1::Job>& jobs) {
  std::string text = absl::StrFormat("%-32s %-10s %-8s %-8s %-20s %s\n", "NAME", "STATE", "PHASE",
                                     "ATTEMPTS", "CREATED", "LABELS");
  for (const compress::v1::Job& job : jobs) {
    absl::StrAppend(
        &text,
        absl::StrFormat("%-32s %-10s %-8s %-8s %-20s %s\n", job.name(), StateName(job.state()),
                        job.current_phase().empty() ? "-" : job.current_phase(),
                        absl::StrCat(job.attempt_count(), "/", job.max_attempts()),
                        FormatTimestamp(job.create_time()), Labels(job)));
  }
  return text;
}

}  // namespace compress::client
