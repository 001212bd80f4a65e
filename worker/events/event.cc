#include "worker/events/event.h"

#include <chrono>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace compress::events {
namespace {

constexpr std::pair<EventType, absl::string_view> kTypeNames[] = {
    {EventType::kPhaseStarted, "phase_started"},
    {EventType::kPhaseFinished, "phase_finished"},
    {EventType::kMetric, "metric"},
    {EventType::kLog, "log"},
    {EventType::kArtifact, "artifact"},
    {EventType::kReport, "report"},
    {EventType::kError, "error"},
};

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Event Stamped(EventType type) {
  Event event;
  event.type = type;
  event.time = NowSeconds();
  return event;
}

nlohmann::json Number(double value) {
  return std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
}

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("event field '", field, "': ", what));
}

// Reads an optional field of the expected JSON kind into `out`.
absl::Status ReadString(const nlohmann::json& j, const char* field, std::string& out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return FieldError(field, "expected a string");
  out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const nlohmann::json& j, const char* field, double& out) {
  auto it = j.find(field);
  if (it == j.end()) return absl::OkStatus();
  if (it->is_null()) {
    out = std::nan("");
    return absl::OkStatus();
  }
  if (!it->is_number()) return FieldError(field, "expected a number");
  out = it->get<double>();
  return absl::OkStatus();
}

absl::Status ReadInt(const nlohmann::json& j, const char* field, int64_t& out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) return FieldError(field, "expected an integer");
  out = it->get<int64_t>();
  return absl::OkStatus();
}

}  // namespace

absl::string_view EventTypeName(EventType type) {
  for (const auto& [t, name] : kTypeNames) {
    if (t == type) return name;
  }
  return "unknown";
}

Event PhaseStarted(std::string phase) {
  Event e = Stamped(EventType::kPhaseStarted);
  e.phase = std::move(phase);
  return e;
}

Event PhaseFinished(std::string phase, double wall_seconds, std::map<std::string, double> values) {
  Event e = Stamped(EventType::kPhaseFinished);
  e.phase = std::move(phase);
  e.wall_seconds = wall_seconds;
  e.values = std::move(values);
  return e;
}

Event Metric(std::string phase, int64_t step, double epoch, double progress,
             std::map<std::string, double> values) {
  Event e = Stamped(EventType::kMetric);
  e.phase = std::move(phase);
  e.step = step;
  e.epoch = epoch;
  e.progress = progress;
  e.values = std::move(values);
  return e;
}

Event Log(std::string level, std::string message) {
  Event e = Stamped(EventType::kLog);
  e.level = std::move(level);
  e.message = std::move(message);
  return e;
}

Event ArtifactReady(std::string name, std::string path, std::string sha256, int64_t size_bytes) {
  Event e = Stamped(EventType::kArtifact);
  e.name = std::move(name);
  e.path = std::move(path);
  e.sha256 = std::move(sha256);
  e.size_bytes = size_bytes;
  return e;
}

Event Report(nlohmann::json report) {
  Event e = Stamped(EventType::kReport);
  e.report = std::move(report);
  return e;
}

Event Error(const absl::Status& status) {
  Event e = Stamped(EventType::kError);
  e.code = absl::StatusCodeToString(status.code());
  e.message = std::string(status.message());
  return e;
}

std::string Serialize(const Event& event) {
  nlohmann::json j;
  j["type"] = EventTypeName(event.type);
  j["time"] = Number(event.time);
  auto values = [&event] {
    nlohmann::json v = nlohmann::json::object();
    for (const auto& [key, value] : event.values) v[key] = Number(value);
    return v;
  };
  switch (event.type) {
    case EventType::kPhaseStarted:
      j["phase"] = event.phase;
      break;
    case EventType::kPhaseFinished:
      j["phase"] = event.phase;
      j["wall_seconds"] = Number(event.wall_seconds);
      j["values"] = values();
      break;
    case EventType::kMetric:
      j["phase"] = event.phase;
      j["step"] = event.step;
      j["epoch"] = Number(event.epoch);
      if (event.progress >= 0) j["progress"] = Number(event.progress);
      j["values"] = values();
      break;
    case EventType::kLog:
      j["level"] = event.level;
      j["message"] = event.message;
      break;
    case EventType::kArtifact:
      j["name"] = event.name;
      j["path"] = event.path;
      j["sha256"] = event.sha256;
      j["size_bytes"] = event.size_bytes;
      break;
    case EventType::kReport:
      j["report"] = event.report;
      break;
    case EventType::kError:
      j["code"] = event.code;
      j["message"] = event.message;
      break;
  }
  // Replace invalid UTF-8 (a log line may carry arbitrary bytes) rather than fail.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<Event> Parse(absl::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  // nlohmann-json parses iteratively but copies and dumps values recursively: a "report" nested
  // 200000 levels deep (a 400-KB line) overflowed the reader's stack while being copied.
  bool too_deep = false;
  nlohmann::json j = nlohmann::json::parse(
      line,
      [&too_deep](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
        if (depth > kMaxNestingDepth) too_deep = true;
        return true;
      },
      /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat("event line is not valid JSON: '", line.substr(0, 200), "'"));
  }
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat("event line nests JSON deeper than ", kMaxNestingDepth, " levels"));
  }
  if (!j.is_object()) return absl::InvalidArgumentError("event line is not a JSON object");
  std::string type_name;
  if (absl::Status s = ReadString(j, "type", type_name); !s.ok()) return s;
  Event event;
  bool known = false;
  for (const auto& [t, name] : kTypeNames) {
    if (name == type_name) {
      event.type = t;
      known = true;
    }
  }
  if (!known) return FieldError("type", absl::StrCat("unknown event type '", type_name, "'"));
  for (absl::Status s :
       {ReadDouble(j, "time", event.time), ReadString(j, "phase", event.phase),
        ReadInt(j, "step", event.step), ReadDouble(j, "epoch", event.epoch),
        ReadDouble(j, "progress", event.progress),
        ReadDouble(j, "wall_seconds", event.wall_seconds), ReadString(j, "level", event.level),
        ReadString(j, "message", event.message), ReadString(j, "code", event.code),
        ReadString(j, "name", event.name), ReadString(j, "path", event.path),
        ReadString(j, "sha256", event.sha256), ReadInt(j, "size_bytes", event.size_bytes)}) {
    if (!s.ok()) return s;
  }
  if (auto it = j.find("values"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return FieldError("values", "expected an object");
    for (const auto& [key, value] : it->items()) {
      if (value.is_null()) {
        event.values[key] = std::nan("");
      } else if (value.is_number()) {
        event.values[key] = value.get<double>();
      } else {
        return FieldError(absl::StrCat("values.", key), "expected a number");
      }
    }
  }
  if (auto it = j.find("report"); it != j.end()) event.report = *it;
  if (event.type == EventType::kPhaseStarted || event.type == EventType::kPhaseFinished ||
      event.type == EventType::kMetric) {
    if (event.phase.empty()) return FieldError("phase", "missing");
  }
  if (event.type == EventType::kArtifact && event.name.empty())
    return FieldError("name", "missing");
  if (event.type == EventType::kError && event.code.empty()) return FieldError("code", "missing");
  return event;
}

absl::StatusCode StatusCodeFromName(absl::string_view name) {
  for (int code = 0; code <= 16; ++code) {
    auto c = static_cast<absl::StatusCode>(code);
    if (absl::StatusCodeToString(c) == name) return c;
  }
  return absl::StatusCode::kUnknown;
}

void EventWriter::Write(const Event& event) {
  std::string line = Serialize(event);
  line.push_back('\n');
  absl::MutexLock lock(&mu_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace compress::events
