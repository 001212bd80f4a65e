// The executor's event format: one JSON object per line on the executor's stdout.
//
// compress-run writes these lines and compress-worker reads them, and both use this library, so
// the writer and the reader cannot drift apart. No torch, no protobuf here. The format is
// documented in docs/executor-contract.md.
#ifndef COMPRESS_WORKER_EVENTS_EVENT_H_
#define COMPRESS_WORKER_EVENTS_EVENT_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace compress::events {

enum class EventType {
  kPhaseStarted,   // "phase_started": phase
  kPhaseFinished,  // "phase_finished": phase, wall_seconds, values
  kMetric,         // "metric": phase, step, epoch, progress, values
  kLog,            // "log": level, message
  kArtifact,       // "artifact": name, path, sha256, size_bytes
  kReport,         // "report": report (the final report.json object)
  kError,          // "error": code (canonical name), message; the executor's last line on failure
};

// The wire name of a type ("phase_started", ...).
absl::string_view EventTypeName(EventType type);

// One event. Which fields are meaningful depends on `type` (see EventType); the others keep
// their defaults and are not written.
struct Event {
  EventType type = EventType::kLog;
  // Seconds since the Unix epoch when the event was made.
  double time = 0;
  std::string phase;
  int64_t step = 0;
  double epoch = 0;
  // Progress of the phase in [0, 1]; negative when unknown.
  double progress = -1;
  double wall_seconds = 0;
  std::map<std::string, double> values;
  std::string level;    // log: "debug", "info", "warning", "error"
  std::string message;  // log, error
  std::string code;     // error: canonical status code name, e.g. "INVALID_ARGUMENT"
  std::string name;     // artifact: file name inside the work dir, e.g. "model.safetensors"
  std::string path;     // artifact: absolute path
  std::string sha256;   // artifact: lowercase hex
  int64_t size_bytes = 0;
  nlohmann::json report;  // report
};

// Builders stamping the current time.
Event PhaseStarted(std::string phase);
Event PhaseFinished(std::string phase, double wall_seconds, std::map<std::string, double> values);
Event Metric(std::string phase, int64_t step, double epoch, double progress,
             std::map<std::string, double> values);
Event Log(std::string level, std::string message);
Event ArtifactReady(std::string name, std::string path, std::string sha256, int64_t size_bytes);
Event Report(nlohmann::json report);
Event Error(const absl::Status& status);

// One line of JSON, without the trailing newline. Non-finite values are written as null.
std::string Serialize(const Event& event);

// Deepest nesting of JSON arrays and objects a line may have (protobuf's JSON parser allows
// the same); deeper lines are malformed.
inline constexpr int kMaxNestingDepth = 100;

// Parses one line. INVALID_ARGUMENT naming the field for malformed input; unknown fields are
// ignored so that newer executors can add fields.
absl::StatusOr<Event> Parse(absl::string_view line);

// The canonical code whose name is `name` ("NOT_FOUND" -> kNotFound); kUnknown if none.
absl::StatusCode StatusCodeFromName(absl::string_view name);

// Writes events as lines to a stdio stream, flushing each line so that the reader sees it at
// once. Thread-safe: the trainer's threads and the main thread may write concurrently.
class EventWriter {
 public:
  // Does not take ownership of `out`, which must outlive the writer.
  explicit EventWriter(std::FILE* out) : out_(out) {}
  void Write(const Event& event);

 private:
  absl::Mutex mu_;
  std::FILE* const out_ ABSL_PT_GUARDED_BY(mu_);
};

}  // namespace compress::events

#endif  // COMPRESS_WORKER_EVENTS_EVENT_H_
