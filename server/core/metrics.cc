#include "server/core/metrics.h"

namespace compress::server {

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  jobs_created_ = &prometheus::BuildCounter()
                       .Name("compressd_jobs_created_total")
                       .Help("Jobs accepted by CreateJob (duplicates by request_id excluded).")
                       .Register(*registry_)
                       .Add({});
  auto& finished = prometheus::BuildCounter()
                       .Name("compressd_jobs_finished_total")
                       .Help("Jobs that reached a final state, by state.")
                       .Register(*registry_);
  auto& jobs = prometheus::BuildGauge()
                   .Name("compressd_jobs")
                   .Help("Jobs in the store, by state.")
                   .Register(*registry_);
  for (JobState state : kAllJobStates) {
    jobs_[state] = &jobs.Add({{kStateLabel, JobStateName(state)}});
    if (IsFinished(state)) {
      jobs_finished_[state] = &finished.Add({{kStateLabel, JobStateName(state)}});
    }
  }
  queue_wait_ = &prometheus::BuildHistogram()
                     .Name("compressd_job_queue_wait_seconds")
                     .Help("Time from (re)queueing a job to leasing it to a worker.")
                     .Register(*registry_)
                     .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.1, 0.5, 1, 5, 15, 60,
                                                                      300, 900, 3600, 4 * 3600});
  job_duration_ = &prometheus::BuildHistogram()
                       .Name("compressd_job_duration_seconds")
                       .Help("Time from a job's first lease to its final state.")
                       .Register(*registry_)
                       .Add({}, prometheus::Histogram::BucketBoundaries{
                                    1, 10, 30, 60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600,
                                    12 * 3600, 24 * 3600, 72 * 3600});
  workers_connected_ = &prometheus::BuildGauge()
                            .Name("compressd_workers_connected")
                            .Help("Workers heard from within the last lease window.")
                            .Register(*registry_)
                            .Add({});
}

void Metrics::JobCounts(const std::map<JobState, int64_t>& counts) {
  for (auto& [state, gauge] : jobs_) {
    auto it = counts.find(state);
    gauge->Set(it == counts.end() ? 0.0 : static_cast<double>(it->second));
  }
}

void Metrics::JobStateChanged(std::optional<JobState> from, std::optional<JobState> to) {
  if (!from.has_value()) jobs_created_->Increment();
  if (from.has_value()) jobs_.at(*from)->Decrement();
  if (to.has_value()) jobs_.at(*to)->Increment();
}

void Metrics::JobLeased(absl::Duration queue_wait) {
  queue_wait_->Observe(absl::ToDoubleSeconds(queue_wait));
}

void Metrics::JobFinished(JobState state, std::optional<absl::Duration> duration) {
  if (auto it = jobs_finished_.find(state); it != jobs_finished_.end()) it->second->Increment();
  if (duration.has_value()) job_duration_->Observe(absl::ToDoubleSeconds(*duration));
}

void Metrics::WorkersConnected(int count) { workers_connected_->Set(count); }

}  // namespace compress::server
