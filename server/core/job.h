// The plain data of compressd's core: jobs, their events and artifacts.
//
// These structs mirror the resources of compress.v1 (proto/compress/v1/compression_service.proto)
// without depending on protobuf; server/rpc translates between the two.
#ifndef COMPRESS_SERVER_CORE_JOB_H_
#define COMPRESS_SERVER_CORE_JOB_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace compress::server {

// Job states, numbered as compress.v1.JobState.
enum class JobState {
  kQueued = 1,
  kRunning = 2,
  kCancelling = 3,
  kSucceeded = 4,
  kFailed = 5,
  kCancelled = 6,
};

inline constexpr JobState kAllJobStates[] = {JobState::kQueued,     JobState::kRunning,
                                             JobState::kCancelling, JobState::kSucceeded,
                                             JobState::kFailed,     JobState::kCancelled};

// "QUEUED", "RUNNING", ... as in the proto enum.
const char* JobStateName(JobState state);
// The state named `name`, or nullopt.
std::optional<JobState> JobStateFromName(absl::string_view name);
// SUCCEEDED, FAILED and CANCELLED: the job will not change any more.
bool IsFinished(JobState state);
// RUNNING and CANCELLING: a worker holds a lease on the job.
bool IsLeased(JobState state);

// The most labels a job may have: CreateJob refuses more, and a ListJobs filter may test no more.
inline constexpr int kMaxLabels = 64;
// The longest label key.
inline constexpr int kMaxLabelKeyLength = 63;
// Whether `key` may be a label key: 1-kMaxLabelKeyLength characters of [a-z0-9_.-/] starting with
// a lowercase letter. CreateJob refuses other keys, so a ListJobs filter naming one is refused too.
bool IsValidLabelKey(absl::string_view key);
// The rule of IsValidLabelKey, for messages: "1-63 characters of [a-z0-9_.-/] starting with a
// lowercase letter".
std::string LabelKeyRule();

struct Artifact {
  // A file name inside the job's artifact directory (see ArtifactStore::ValidateName).
  std::string name;
  int64_t size_bytes = 0;
  // Lowercase hex.
  std::string sha256;
};

struct Job {
  // A short time-ordered id, safe as a file name: [0-9a-z]{16}.
  std::string id;
  // The tenant that created the job (see docs/server.md, "Tenants"); empty for jobs created
  // without authentication (--insecure) and for jobs stored before tenants existed.
  std::string tenant;
  // The JobSpec as JSON with proto field names, as the client sent it.
  std::string spec_json;
  JobState state = JobState::kQueued;
  std::map<std::string, std::string> labels;
  int priority = 0;
  // Empty when the client gave none.
  std::string request_id;
  absl::Time create_time = absl::UnixEpoch();
  // When the job last entered the queue (creation or requeue).
  absl::Time queue_time = absl::UnixEpoch();
  // First lease and the moment it finished; nullopt until then.
  std::optional<absl::Time> start_time;
  std::optional<absl::Time> end_time;
  int attempt_count = 0;
  int max_attempts = 1;
  std::string current_phase;
  // Canonical code name and message of the failure or cancellation.
  std::string error_code;
  std::string error_message;
  // The executor's report (a JSON object), once it sent one.
  std::string report_json;
  // The worker holding the current lease; empty when none.
  std::string lease_owner;
  // Sequence number of the job's newest event (0 when it has none).
  int64_t last_event_sequence = 0;
  // How many of the current attempt's numbered executor event lines are stored (the highest
  // line number received, see Scheduler::ReportEvents); 0 when an attempt starts.
  int64_t attempt_lines = 0;
  // Filled by JobStore::GetJob and ListJobs.
  std::vector<Artifact> artifacts;
  // The store's creation order (jobs.seq): increasing with every job created; set when read
  // from the store, 0 before.
  int64_t creation_order = 0;
};

// A new job id: 16 characters of lowercase Crockford base32, the first 10 encoding the
// millisecond of `now` (so ids sort by creation time), the rest random. Safe as a file name.
std::string NewJobId(absl::Time now);
// A new lease id (Lease::lease_id): 128 random bits as 32 lowercase hex digits. It tells leases of
// the same attempt number apart; it is not a secret (workers are authenticated by their tokens).
std::string NewLeaseId();

// Kinds of job events, as the oneof of compress.v1.JobEvent.
enum class EventKind {
  kStateChange,    // payload: {"state": "RUNNING", "reason": "..."}
  kPhaseStarted,   // payload: {"phase": "..."}
  kPhaseFinished,  // payload: {"phase": "...", "wall_seconds": 1.5, "values": {...}}
  kMetric,         // payload: {"phase", "step", "epoch", "values", "progress"}
  kLog,            // payload: {"level": "info", "message": "..."}
  kArtifact,       // payload: {"name", "size_bytes", "sha256"}
};

// "state_change", "phase_started", ... (the names the store writes).
const char* EventKindName(EventKind kind);
std::optional<EventKind> EventKindFromName(absl::string_view name);

// An event of a job. The payload is a JSON object whose field names are those of the
// corresponding compress.v1 message (StateChange, PhaseEvent, MetricPoint, LogLine, Artifact).
struct JobEvent {
  std::string job_id;
  // 1, 2, 3, ... per job, with no gaps; assigned by the store.
  int64_t sequence = 0;
  // The attempt that produced it; 0 for the server's own events.
  int attempt = 0;
  absl::Time time = absl::UnixEpoch();
  EventKind kind = EventKind::kLog;
  std::string payload_json;
};

// `json` as compact text; invalid UTF-8 in strings (say, from an executor's stderr) is replaced
// rather than thrown on.
std::string DumpJson(const nlohmann::json& json);

// Payload builders.
JobEvent StateChangeEvent(JobState state, absl::string_view reason, absl::Time time);
JobEvent LogEvent(int attempt, absl::string_view level, absl::string_view message, absl::Time time);
JobEvent ArtifactEvent(int attempt, const Artifact& artifact, absl::Time time);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_JOB_H_
