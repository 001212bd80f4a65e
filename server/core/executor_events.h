// Translation of executor event lines (worker/events, relayed by workers) into job events.
#ifndef COMPRESS_SERVER_CORE_EXECUTOR_EVENTS_H_
#define COMPRESS_SERVER_CORE_EXECUTOR_EVENTS_H_

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "server/core/job.h"

namespace compress::server {

// The latest readings of its device an executor reported in a batch of metric events (their
// `device_memory_bytes` and `images_per_second` values); each is nullopt when none came.
struct DeviceReport {
  std::optional<double> device_memory_bytes;
  std::optional<double> images_per_second;
};

// What a batch of executor lines changes about a job.
struct ExecutorUpdate {
  // phase_started, phase_finished, metric and log lines become events of the same kind; an
  // `error` line becomes an error log; an `artifact` line an info log (the artifact event itself
  // is recorded when the worker has uploaded it and it can be read). A line that does not parse
  // becomes a warning log quoting it, so a misbehaving executor cannot stall its job.
  std::vector<JobEvent> events;
  // The phase of the last phase_started line, if any.
  std::optional<std::string> current_phase;
  // The report of the last `report` line, if any, as KeptReport keeps it.
  std::optional<std::string> report_json;
  // (phase, wall seconds) of each phase_finished line, in order.
  std::vector<std::pair<std::string, double>> phases_finished;
  // The device readings of the batch's metric lines.
  DeviceReport device;
};

// The most bytes of an executor's report a job's record keeps.
inline constexpr size_t kMaxReportJsonBytes = size_t{1} << 20;

// What a job's record keeps of an executor's report (a `report` event line's, or CompleteAttempt's
// report_json): the report itself when it is a JSON object of at most `max_bytes`, else a note
// {"report_omitted": {"bytes", "limit_bytes", "reason"}} saying why not (clients parse the report
// as an object; the work is not failed over it, and the report's file is normally an artifact
// too). An empty report stays empty.
std::string KeptReport(const std::string& report_json, size_t max_bytes = kMaxReportJsonBytes);

// Translates `lines` written by attempt `attempt`. Events without a time, or with one that is
// not positive or after 9999-12-31T23:59:59Z, get `now`.
ExecutorUpdate TranslateExecutorLines(const std::vector<std::string>& lines, int attempt,
                                      absl::Time now);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_EXECUTOR_EVENTS_H_
