#include "server/core/executor_events.h"

#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/events/event.h"

namespace compress::server {
namespace {

// Non-finite values have no JSON form; they are left out.
nlohmann::json FiniteValues(const std::map<std::string, double>& values) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, value] : values) {
    if (std::isfinite(value)) out[name] = value;
  }
  return out;
}

// 9999-12-31T23:59:59Z, the latest second a protobuf Timestamp holds.
constexpr double kLatestEventSeconds = 253402300799.0;

double Finite(double value) { return std::isfinite(value) ? value : 0.0; }

// values[name] when it is there, finite and not negative.
std::optional<double> NonNegative(const std::map<std::string, double>& values, const char* name) {
  auto it = values.find(name);
  if (it == values.end() || !std::isfinite(it->second) || it->second < 0) return std::nullopt;
  return it->second;
}

}  // namespace

std::string KeptReport(const std::string& report_json, size_t max_bytes) {
  if (report_json.empty()) return report_json;
  const char* reason = nullptr;
  if (report_json.size() > max_bytes) {
    reason = "larger than a job's record keeps";
  } else if (!nlohmann::json::parse(report_json, nullptr, /*allow_exceptions=*/false).is_object()) {
    reason = "not a JSON object";
  }
  if (reason == nullptr) return report_json;
  return nlohmann::json{
      {"report_omitted",
       {{"bytes", report_json.size()}, {"limit_bytes", max_bytes}, {"reason", reason}}}}
      .dump();
}

ExecutorUpdate TranslateExecutorLines(const std::vector<std::string>& lines, int attempt,
                                      absl::Time now) {
  ExecutorUpdate update;
  for (const std::string& line : lines) {
    JobEvent event;
    event.attempt = attempt;
    event.time = now;
    absl::StatusOr<events::Event> parsed = events::Parse(line);
    if (!parsed.ok()) {
      event.kind = EventKind::kLog;
      event.payload_json = DumpJson({{"level", "warning"},
                                     {"message", absl::StrCat("unreadable executor event (",
                                                              parsed.status().message(), ")")}});
      update.events.push_back(std::move(event));
      continue;
    }
    const events::Event& e = *parsed;
    // A time a Timestamp cannot hold (after 9999-12-31T23:59:59Z, which clients cannot render,
    // and far enough out that the conversion would overflow) is treated as a missing one.
    if (e.time > 0 && e.time <= kLatestEventSeconds) {
      event.time = absl::FromUnixMicros(static_cast<int64_t>(e.time * 1e6));
    }
    nlohmann::json payload;
    switch (e.type) {
      case events::EventType::kPhaseStarted:
        event.kind = EventKind::kPhaseStarted;
        payload = {{"phase", e.phase}};
        update.current_phase = e.phase;
        break;
      case events::EventType::kPhaseFinished:
        event.kind = EventKind::kPhaseFinished;
        payload = {{"phase", e.phase},
                   {"wall_seconds", Finite(e.wall_seconds)},
                   {"values", FiniteValues(e.values)}};
        if (std::isfinite(e.wall_seconds) && e.wall_seconds >= 0) {
          update.phases_finished.emplace_back(e.phase, e.wall_seconds);
        }
        break;
      case events::EventType::kMetric:
        event.kind = EventKind::kMetric;
        payload = {{"phase", e.phase},
                   {"step", e.step},
                   {"epoch", Finite(e.epoch)},
                   {"values", FiniteValues(e.values)}};
        if (e.progress >= 0 && std::isfinite(e.progress)) payload["progress"] = e.progress;
        if (std::optional<double> v = NonNegative(e.values, "device_memory_bytes")) {
          update.device.device_memory_bytes = v;
        }
        if (std::optional<double> v = NonNegative(e.values, "images_per_second")) {
          update.device.images_per_second = v;
        }
        break;
      case events::EventType::kLog:
        event.kind = EventKind::kLog;
        payload = {{"level", e.level.empty() ? "info" : e.level}, {"message", e.message}};
        break;
      case events::EventType::kArtifact:
        event.kind = EventKind::kLog;
        payload = {{"level", "info"},
                   {"message", absl::StrCat("artifact ", e.name, " written (", e.size_bytes,
                                            " bytes, sha256 ", e.sha256, ")")}};
        break;
      case events::EventType::kReport:
        update.report_json = KeptReport(DumpJson(e.report));
        continue;
      case events::EventType::kError:
        event.kind = EventKind::kLog;
        payload = {{"level", "error"}, {"message", absl::StrCat(e.code, ": ", e.message)}};
        break;
    }
    event.payload_json = DumpJson(payload);
    update.events.push_back(std::move(event));
  }
  return update;
}

}  // namespace compress::server
