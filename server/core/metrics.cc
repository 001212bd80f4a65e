#include "server/core/metrics.h"

#include <algorithm>
#include <iterator>

#include "worker/events/program_usage.h"

namespace compress::server {
namespace {

// go-grpc-prometheus's code names (Go's codes.Code.String()), indexed by the code number.
constexpr const char* kGrpcCodeNames[] = {
    "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated"};

// Prometheus's default buckets, extended for long polls (LeaseJob, up to 30 s) and streams
// (WatchJob, as long as a job runs).
const prometheus::Histogram::BucketBoundaries& HandlingBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600};
  return *buckets;
}

}  // namespace

GrpcMethodMetrics::GrpcMethodMetrics(prometheus::Family<prometheus::Counter>* handled,
                                     prometheus::Labels method_labels, prometheus::Counter* started,
                                     prometheus::Counter* received, prometheus::Counter* sent,
                                     prometheus::Histogram* handling)
    : handled_(handled),
      method_labels_(std::move(method_labels)),
      started_(started),
      received_(received),
      sent_(sent),
      handling_(handling) {}

void GrpcMethodMetrics::Handled(const std::string& code, double seconds) {
  prometheus::Labels labels = method_labels_;
  labels[Metrics::kGrpcCodeLabel] = code;
  // Family::Add returns the existing child when there is one (under the family's lock).
  handled_->Add(labels).Increment();
  handling_->Observe(seconds);
}

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::BuildGauge()
      .Name("compressd_build_info")
      .Help("Always 1; the label version is compressd's version.")
      .Register(*registry_)
      .Add({{"version", ProjectVersion()}})
      .Set(1);
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
  auto& queued = prometheus::BuildGauge()
                     .Name("compressd_jobs_queued")
                     .Help("QUEUED jobs by the device their spec needs (cpu, cuda, auto: any).")
                     .Register(*registry_);
  for (const char* device : {"cpu", "cuda", "auto"}) {
    queued_[device] = &queued.Add({{"device", device}});
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
  auto& phases = prometheus::BuildHistogram()
                     .Name("compressd_phase_duration_seconds")
                     .Help("Wall time of executor phases (phase_finished events), by phase.")
                     .Register(*registry_);
  const prometheus::Histogram::BucketBoundaries phase_buckets{
      1, 5, 15, 30, 60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 12 * 3600, 24 * 3600};
  for (const char* phase : kPhases) {
    phase_duration_[phase] = &phases.Add({{kPhaseLabel, phase}}, phase_buckets);
  }
  phase_duration_[kOtherPhase] = &phases.Add({{kPhaseLabel, kOtherPhase}}, phase_buckets);
  device_memory_ = &prometheus::BuildGauge()
                        .Name("compressd_worker_device_memory_used_bytes")
                        .Help(
                            "Device memory in use by the job running on a worker's device, as "
                            "its executor last reported it.")
                        .Register(*registry_);
  images_per_second_ = &prometheus::BuildGauge()
                            .Name("compressd_train_images_per_second")
                            .Help(
                                "Training throughput of the job running on a worker's device, "
                                "as its executor last reported it.")
                            .Register(*registry_);
  artifact_bytes_sent_ = &prometheus::BuildCounter()
                              .Name("compressd_artifact_bytes_sent_total")
                              .Help("Artifact bytes sent to clients by ReadArtifact.")
                              .Register(*registry_)
                              .Add({});
  artifact_bytes_received_ = &prometheus::BuildCounter()
                                  .Name("compressd_artifact_bytes_received_total")
                                  .Help("Artifact bytes received from workers by UploadArtifact.")
                                  .Register(*registry_)
                                  .Add({});
  file_streams_ = &prometheus::BuildGauge()
                       .Name("compressd_file_streams")
                       .Help(
                           "Calls holding a file open now: ReadArtifact, ReadBlob, UploadArtifact "
                           "and UploadBlob.")
                       .Register(*registry_)
                       .Add({});
  file_streams_max_ = &prometheus::BuildGauge()
                           .Name("compressd_file_streams_max")
                           .Help("How many such calls may run at once (--max_file_streams).")
                           .Register(*registry_)
                           .Add({});
  file_streams_refused_ = &prometheus::BuildCounter()
                               .Name("compressd_file_streams_refused_total")
                               .Help(
                                   "Such calls refused (RESOURCE_EXHAUSTED) because "
                                   "--max_file_streams were running.")
                               .Register(*registry_)
                               .Add({});
  file_streams_idle_cancelled_ = &prometheus::BuildCounter()
                                      .Name("compressd_file_streams_idle_cancelled_total")
                                      .Help(
                                          "Such calls cancelled because they moved no chunk for "
                                          "--file_stream_idle_timeout.")
                                      .Register(*registry_)
                                      .Add({});
  leases_expired_ = &prometheus::BuildCounter()
                         .Name("compressd_leases_expired_total")
                         .Help(
                             "Leases that expired without a heartbeat: the worker was lost or "
                             "stalled, and its job was requeued or failed.")
                         .Register(*registry_)
                         .Add({});
  grpc_started_ = &prometheus::BuildCounter()
                       .Name("grpc_server_started_total")
                       .Help("Total number of RPCs started on the server.")
                       .Register(*registry_);
  grpc_handled_ = &prometheus::BuildCounter()
                       .Name("grpc_server_handled_total")
                       .Help(
                           "Total number of RPCs completed on the server, regardless of success "
                           "or failure.")
                       .Register(*registry_);
  grpc_received_ = &prometheus::BuildCounter()
                        .Name("grpc_server_msg_received_total")
                        .Help("Total number of RPC stream messages received on the server.")
                        .Register(*registry_);
  grpc_sent_ = &prometheus::BuildCounter()
                    .Name("grpc_server_msg_sent_total")
                    .Help("Total number of gRPC stream messages sent by the server.")
                    .Register(*registry_);
  grpc_handling_ = &prometheus::BuildHistogram()
                        .Name("grpc_server_handling_seconds")
                        .Help(
                            "Histogram of response latency (seconds) of gRPC that had been "
                            "application-level handled by the server.")
                        .Register(*registry_);
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

void Metrics::QueuedForDevice(const std::string& device, int64_t count) {
  auto it = queued_.find(device);
  if (it != queued_.end()) it->second->Set(static_cast<double>(count));
}

void Metrics::JobLeased(absl::Duration queue_wait) {
  queue_wait_->Observe(absl::ToDoubleSeconds(queue_wait));
}

void Metrics::JobFinished(JobState state, std::optional<absl::Duration> duration) {
  if (auto it = jobs_finished_.find(state); it != jobs_finished_.end()) it->second->Increment();
  if (duration.has_value()) job_duration_->Observe(absl::ToDoubleSeconds(*duration));
}

void Metrics::WorkersConnected(int count) { workers_connected_->Set(count); }

void Metrics::PhaseFinished(const std::string& phase, double wall_seconds) {
  auto it = phase_duration_.find(phase);
  if (it == phase_duration_.end()) it = phase_duration_.find(kOtherPhase);
  it->second->Observe(wall_seconds);
}

void Metrics::DeviceReadings(const std::string& worker_id, const std::string& device,
                             const DeviceReport& report) {
  if (!report.device_memory_bytes.has_value() && !report.images_per_second.has_value()) return;
  const prometheus::Labels labels{{kWorkerLabel, worker_id}, {kDeviceLabel, device}};
  absl::MutexLock lock(&mu_);
  auto& [memory, images] = device_gauges_[{worker_id, device}];
  if (report.device_memory_bytes.has_value()) {
    if (memory == nullptr) memory = &device_memory_->Add(labels);
    memory->Set(*report.device_memory_bytes);
  }
  if (report.images_per_second.has_value()) {
    if (images == nullptr) images = &images_per_second_->Add(labels);
    images->Set(*report.images_per_second);
  }
}

void Metrics::LeaseEnded(const std::string& worker_id, const std::string& device, bool expired) {
  if (expired) leases_expired_->Increment();
  absl::MutexLock lock(&mu_);
  auto it = device_gauges_.find({worker_id, device});
  if (it == device_gauges_.end()) return;
  auto [memory, images] = it->second;
  if (memory != nullptr) device_memory_->Remove(memory);
  if (images != nullptr) images_per_second_->Remove(images);
  device_gauges_.erase(it);
}

void Metrics::ArtifactBytesSent(int64_t bytes) {
  artifact_bytes_sent_->Increment(static_cast<double>(bytes));
}

void Metrics::ArtifactBytesReceived(int64_t bytes) {
  artifact_bytes_received_->Increment(static_cast<double>(bytes));
}

void Metrics::FileStreamsAllowed(int max) { file_streams_max_->Set(max); }

void Metrics::FileStreamOpened() { file_streams_->Increment(); }

void Metrics::FileStreamClosed() { file_streams_->Decrement(); }

void Metrics::FileStreamRefused() { file_streams_refused_->Increment(); }

void Metrics::FileStreamIdleCancelled() { file_streams_idle_cancelled_->Increment(); }

GrpcMethodMetrics* Metrics::GrpcMethod(const std::string& type, const std::string& service,
                                       const std::string& method) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<GrpcMethodMetrics>& entry = grpc_methods_[{type, service, method}];
  if (entry == nullptr) {
    prometheus::Labels labels{
        {kGrpcTypeLabel, type}, {kGrpcServiceLabel, service}, {kGrpcMethodLabel, method}};
    entry = std::make_unique<GrpcMethodMetrics>(
        grpc_handled_, labels, &grpc_started_->Add(labels), &grpc_received_->Add(labels),
        &grpc_sent_->Add(labels), &grpc_handling_->Add(labels, HandlingBuckets()));
  }
  return entry.get();
}

const char* Metrics::GrpcCodeName(int code) {
  if (code < 0 || code >= static_cast<int>(std::size(kGrpcCodeNames))) return "Unknown";
  return kGrpcCodeNames[code];
}

}  // namespace compress::server
