#include "server/rpc/proto_convert.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/core/artifact_store.h"

namespace compress::server {
namespace {

void SetTime(absl::Time time, google::protobuf::Timestamp* out) {
  *out = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(time));
}

// Payloads were written by the core with the messages' field names; fields a newer server wrote
// and this one does not know are skipped.
void ParsePayload(const std::string& json, google::protobuf::Message* out) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  // A payload that does not parse leaves the message empty rather than failing the stream.
  (void)google::protobuf::util::JsonStringToMessage(json, out, options);
}

}  // namespace

absl::StatusOr<std::string> ParseJobName(absl::string_view field, absl::string_view name) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  if (parts.size() != 2 || parts[0] != "jobs" || !ArtifactStore::ValidateName("", parts[1]).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": expected jobs/{job_id}, got '", name, "'"));
  }
  return std::string(parts[1]);
}

absl::StatusOr<std::pair<std::string, std::string>> ParseArtifactName(absl::string_view field,
                                                                      absl::string_view name) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  if (parts.size() != 4 || parts[0] != "jobs" || parts[2] != "artifacts" ||
      !ArtifactStore::ValidateName("", parts[1]).ok() ||
      !ArtifactStore::ValidateName("", parts[3]).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": expected jobs/{job_id}/artifacts/{artifact_name}, got '", name, "'"));
  }
  return std::make_pair(std::string(parts[1]), std::string(parts[3]));
}

std::string JobName(const std::string& job_id) { return absl::StrCat("jobs/", job_id); }

absl::StatusOr<std::string> SpecToJson(const v1::JobSpec& spec) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  if (auto status = google::protobuf::util::MessageToJsonString(spec, &json, options);
      !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("spec: ", status.message().as_string()));
  }
  return json;
}

v1::JobState StateToProto(JobState state) { return static_cast<v1::JobState>(state); }

void JobToProto(const Job& job, v1::Job* out, const v1::JobSpec* spec) {
  out->Clear();
  out->set_name(JobName(job.id));
  if (spec != nullptr) {
    *out->mutable_spec() = *spec;
    // As the stored JSON, which holds only the fields this server knows.
    out->mutable_spec()->DiscardUnknownFields();
  } else {
    ParsePayload(job.spec_json, out->mutable_spec());
  }
  out->set_state(StateToProto(job.state));
  for (const auto& [key, value] : job.labels) (*out->mutable_labels())[key] = value;
  out->set_priority(job.priority);
  out->set_request_id(job.request_id);
  SetTime(job.create_time, out->mutable_create_time());
  if (job.start_time.has_value()) SetTime(*job.start_time, out->mutable_start_time());
  if (job.end_time.has_value()) SetTime(*job.end_time, out->mutable_end_time());
  out->set_attempt_count(job.attempt_count);
  out->set_max_attempts(job.max_attempts);
  out->set_current_phase(job.current_phase);
  out->set_error_code(job.error_code);
  out->set_error_message(job.error_message);
  for (const Artifact& artifact : job.artifacts) {
    v1::Artifact* a = out->add_artifacts();
    a->set_name(artifact.name);
    a->set_size_bytes(artifact.size_bytes);
    a->set_sha256(artifact.sha256);
  }
  out->set_report_json(job.report_json);
  out->set_last_event_sequence(job.last_event_sequence);
}

void EventToProto(const JobEvent& event, v1::JobEvent* out) {
  out->Clear();
  out->set_sequence(event.sequence);
  SetTime(event.time, out->mutable_time());
  out->set_attempt(event.attempt);
  switch (event.kind) {
    case EventKind::kStateChange:
      ParsePayload(event.payload_json, out->mutable_state_change());
      break;
    case EventKind::kPhaseStarted:
      ParsePayload(event.payload_json, out->mutable_phase_started());
      break;
    case EventKind::kPhaseFinished:
      ParsePayload(event.payload_json, out->mutable_phase_finished());
      break;
    case EventKind::kMetric:
      ParsePayload(event.payload_json, out->mutable_metric());
      break;
    case EventKind::kLog:
      ParsePayload(event.payload_json, out->mutable_log());
      break;
    case EventKind::kArtifact:
      ParsePayload(event.payload_json, out->mutable_artifact());
      break;
  }
}

}  // namespace compress::server
