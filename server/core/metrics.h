// Metrics: compressd's Prometheus registry and the families in it.
//
// Names follow Prometheus practice: one prefix, base units, `_total` counters, histograms for
// durations, and no per-job labels (their number would grow without bound).
#ifndef COMPRESS_SERVER_CORE_METRICS_H_
#define COMPRESS_SERVER_CORE_METRICS_H_

#include <map>
#include <memory>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/core/scheduler_observer.h"

namespace compress::server {

// Thread-safe (prometheus-cpp's metrics are). Every family is built once, in the constructor;
// the per-state children are created up front, so every state shows (at 0) from the start.
class Metrics : public SchedulerObserver {
 public:
  // The label that carries a job state name ("QUEUED", ...).
  static constexpr const char* kStateLabel = "state";

  Metrics();

  // The registry to expose (prometheus::Exposer::RegisterCollectable).
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void JobCounts(const std::map<JobState, int64_t>& counts) override;
  void JobStateChanged(std::optional<JobState> from, std::optional<JobState> to) override;
  void JobLeased(absl::Duration queue_wait) override;
  void JobFinished(JobState state, std::optional<absl::Duration> duration) override;
  void WorkersConnected(int count) override;

 private:
  // Constant after construction (the metrics themselves are atomic).
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* jobs_created_;
  std::map<JobState, prometheus::Counter*> jobs_finished_;
  std::map<JobState, prometheus::Gauge*> jobs_;
  prometheus::Histogram* queue_wait_;
  prometheus::Histogram* job_duration_;
  prometheus::Gauge* workers_connected_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_METRICS_H_
