// Metrics: compressd's Prometheus registry and the families in it.
//
// Names follow Prometheus practice: one prefix, base units, `_total` counters, histograms for
// durations, and no per-job labels (their number would grow without bound). The grpc_server_*
// families follow go-grpc-prometheus, so that dashboards written for Go services work unchanged.
// docs/observability.md lists every family.
#ifndef COMPRESS_SERVER_CORE_METRICS_H_
#define COMPRESS_SERVER_CORE_METRICS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/core/scheduler_observer.h"

namespace compress::server {

// The grpc_server_* series of one gRPC method. Thread-safe; owned by Metrics.
class GrpcMethodMetrics {
 public:
  GrpcMethodMetrics(prometheus::Family<prometheus::Counter>* handled,
                    prometheus::Labels method_labels, prometheus::Counter* started,
                    prometheus::Counter* received, prometheus::Counter* sent,
                    prometheus::Histogram* handling);

  void Started() { started_->Increment(); }
  void MessageReceived() { received_->Increment(); }
  void MessageSent() { sent_->Increment(); }
  // The call ended with `code` (a go-grpc-prometheus code name, see GrpcCodeName) after
  // `seconds`.
  void Handled(const std::string& code, double seconds);

 private:
  // Constant after construction.
  prometheus::Family<prometheus::Counter>* const handled_;
  const prometheus::Labels method_labels_;
  prometheus::Counter* const started_;
  prometheus::Counter* const received_;
  prometheus::Counter* const sent_;
  prometheus::Histogram* const handling_;
};

// Thread-safe (prometheus-cpp's metrics are; the maps of children created on demand are guarded).
// Every family is built once, in the constructor; the per-state and per-phase children are
// created up front, so they show (at 0) from the start.
class Metrics : public SchedulerObserver {
 public:
  // Label keys.
  static constexpr const char* kStateLabel = "state";
  static constexpr const char* kPhaseLabel = "phase";
  static constexpr const char* kWorkerLabel = "worker";
  static constexpr const char* kDeviceLabel = "device";
  static constexpr const char* kGrpcTypeLabel = "grpc_type";
  static constexpr const char* kGrpcServiceLabel = "grpc_service";
  static constexpr const char* kGrpcMethodLabel = "grpc_method";
  static constexpr const char* kGrpcCodeLabel = "grpc_code";
  // The phase label of a phase name outside kPhases.
  static constexpr const char* kOtherPhase = "other";
  // The executor's phases (docs/executor-contract.md); others are counted as kOtherPhase, so a
  // misbehaving executor cannot create series without bound.
  static constexpr const char* kPhases[] = {"teacher", "share", "prune", "distill"};

  Metrics();

  // The registry to expose (prometheus::Exposer::RegisterCollectable).
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // SchedulerObserver.
  void JobCounts(const std::map<JobState, int64_t>& counts) override;
  void JobStateChanged(std::optional<JobState> from, std::optional<JobState> to) override;
  void QueuedForDevice(const std::string& device, int64_t count) override;
  void JobLeased(absl::Duration queue_wait) override;
  void JobFinished(JobState state, std::optional<absl::Duration> duration) override;
  void WorkersConnected(int count) override;
  void PhaseFinished(const std::string& phase, double wall_seconds) override;
  void DeviceReadings(const std::string& worker_id, const std::string& device,
                      const DeviceReport& report) override;
  void LeaseEnded(const std::string& worker_id, const std::string& device, bool expired) override;

  // Bytes of artifacts sent by ReadArtifact, and received by UploadArtifact.
  void ArtifactBytesSent(int64_t bytes);
  void ArtifactBytesReceived(int64_t bytes);
  // Calls holding a file open (FileStreamLimit): the limit, one started, one ended, one refused.
  void FileStreamsAllowed(int max);
  void FileStreamOpened();
  void FileStreamClosed();
  void FileStreamRefused();
  void FileStreamIdleCancelled();

  // The grpc_server_* series of a method, created on first use; the pointer stays valid for the
  // life of this object. `type` is unary, client_stream, server_stream or bidi_stream; `service`
  // the full service name (compress.v1.WorkerService), `method` the method's name.
  GrpcMethodMetrics* GrpcMethod(const std::string& type, const std::string& service,
                                const std::string& method);
  // go-grpc-prometheus's grpc_code value of a canonical code number (0 = "OK", 1 = "Canceled",
  // 3 = "InvalidArgument", ...); "Unknown" outside 0-16.
  static const char* GrpcCodeName(int code);

 private:
  // Constant after construction (the metrics themselves are atomic).
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* jobs_created_;
  std::map<JobState, prometheus::Counter*> jobs_finished_;
  std::map<JobState, prometheus::Gauge*> jobs_;
  // compressd_jobs_queued{device}: "cpu", "cuda", "auto"; built in the constructor.
  std::map<std::string, prometheus::Gauge*> queued_;
  prometheus::Histogram* queue_wait_;
  prometheus::Histogram* job_duration_;
  prometheus::Gauge* workers_connected_;
  std::map<std::string, prometheus::Histogram*> phase_duration_;
  prometheus::Family<prometheus::Gauge>* device_memory_;
  prometheus::Family<prometheus::Gauge>* images_per_second_;
  prometheus::Counter* artifact_bytes_sent_;
  prometheus::Counter* artifact_bytes_received_;
  prometheus::Gauge* file_streams_;
  prometheus::Gauge* file_streams_max_;
  prometheus::Counter* file_streams_refused_;
  prometheus::Counter* file_streams_idle_cancelled_;
  prometheus::Counter* leases_expired_;
  prometheus::Family<prometheus::Counter>* grpc_started_;
  prometheus::Family<prometheus::Counter>* grpc_handled_;
  prometheus::Family<prometheus::Counter>* grpc_received_;
  prometheus::Family<prometheus::Counter>* grpc_sent_;
  prometheus::Family<prometheus::Histogram>* grpc_handling_;

  absl::Mutex mu_;
  // The per-device gauges' children by (worker, device), removed when the lease ends.
  std::map<std::pair<std::string, std::string>, std::pair<prometheus::Gauge*, prometheus::Gauge*>>
      device_gauges_ ABSL_GUARDED_BY(mu_);
  // By (type, service, method).
  std::map<std::tuple<std::string, std::string, std::string>, std::unique_ptr<GrpcMethodMetrics>>
      grpc_methods_ ABSL_GUARDED_BY(mu_);
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_METRICS_H_
