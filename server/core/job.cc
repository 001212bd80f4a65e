#include "server/core/job.h"

#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace compress::server {
namespace {

constexpr std::pair<EventKind, const char*> kEventKindNames[] = {
    {EventKind::kStateChange, "state_change"},
    {EventKind::kPhaseStarted, "phase_started"},
    {EventKind::kPhaseFinished, "phase_finished"},
    {EventKind::kMetric, "metric"},
    {EventKind::kLog, "log"},
    {EventKind::kArtifact, "artifact"},
};

JobEvent MakeEvent(int attempt, EventKind kind, const nlohmann::json& payload, absl::Time time) {
  JobEvent event;
  event.attempt = attempt;
  event.kind = kind;
  event.time = time;
  event.payload_json = DumpJson(payload);
  return event;
}

// The random source of job and lease ids.
absl::BitGen& IdBits() {
  thread_local absl::BitGen gen;
  return gen;
}

}  // namespace

std::string DumpJson(const nlohmann::json& json) {
  return json.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

std::string NewJobId(absl::Time now) {
  static constexpr char kAlphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
  uint64_t millis = static_cast<uint64_t>(absl::ToUnixMillis(now));
  uint64_t random = absl::Uniform<uint64_t>(IdBits(), 0, uint64_t{1} << 30);
  std::string id(16, '0');
  for (int i = 9; i >= 0; --i) {
    id[i] = kAlphabet[millis & 31];
    millis >>= 5;
  }
  for (int i = 15; i >= 10; --i) {
    id[i] = kAlphabet[random & 31];
    random >>= 5;
  }
  return id;
}

std::string NewLeaseId() {
  absl::BitGen& bits = IdBits();
  return absl::StrCat(absl::Hex(absl::Uniform<uint64_t>(bits), absl::kZeroPad16),
                      absl::Hex(absl::Uniform<uint64_t>(bits), absl::kZeroPad16));
}

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "QUEUED";
    case JobState::kRunning:
      return "RUNNING";
    case JobState::kCancelling:
      return "CANCELLING";
    case JobState::kSucceeded:
      return "SUCCEEDED";
    case JobState::kFailed:
      return "FAILED";
    case JobState::kCancelled:
      return "CANCELLED";
  }
  return "JOB_STATE_UNSPECIFIED";
}

std::optional<JobState> JobStateFromName(absl::string_view name) {
  for (JobState state : kAllJobStates) {
    if (name == JobStateName(state)) return state;
  }
  return std::nullopt;
}

bool IsValidLabelKey(absl::string_view key) {
  if (key.empty() || static_cast<int>(key.size()) > kMaxLabelKeyLength || key[0] < 'a' ||
      key[0] > 'z') {
    return false;
  }
  for (char c : key) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
          c == '/')) {
      return false;
    }
  }
  return true;
}

std::string LabelKeyRule() {
  return absl::StrCat("1-", kMaxLabelKeyLength,
                      " characters of [a-z0-9_.-/] starting with a lowercase letter");
}

bool IsFinished(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

bool IsLeased(JobState state) {
  return state == JobState::kRunning || state == JobState::kCancelling;
}

const char* EventKindName(EventKind kind) {
  for (const auto& [k, name] : kEventKindNames) {
    if (k == kind) return name;
  }
  return "log";
}

std::optional<EventKind> EventKindFromName(absl::string_view name) {
  for (const auto& [k, n] : kEventKindNames) {
    if (name == n) return k;
  }
  return std::nullopt;
}

JobEvent StateChangeEvent(JobState state, absl::string_view reason, absl::Time time) {
  return MakeEvent(/*attempt=*/0, EventKind::kStateChange,
                   {{"state", JobStateName(state)}, {"reason", std::string(reason)}}, time);
}

JobEvent LogEvent(int attempt, absl::string_view level, absl::string_view message,
                  absl::Time time) {
  return MakeEvent(attempt, EventKind::kLog,
                   {{"level", std::string(level)}, {"message", std::string(message)}}, time);
}

JobEvent ArtifactEvent(int attempt, const Artifact& artifact, absl::Time time) {
  return MakeEvent(
      attempt, EventKind::kArtifact,
      {{"name", artifact.name}, {"size_bytes", artifact.size_bytes}, {"sha256", artifact.sha256}},
      time);
}

}  // namespace compress::server
