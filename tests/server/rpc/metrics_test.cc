// compressd's metrics through the gRPC services in process: one job's calls move the job,
// phase, device, artifact and grpc_server_* series, and the exposition passes promtool.
#include "server/core/metrics.h"

#include <grpcpp/grpcpp.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "compress/v1/worker_service.grpc.pb.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/core/artifact_store.h"
#include "server/core/clock.h"
#include "server/core/job_store.h"
#include "server/core/scheduler.h"
#include "server/rpc/compression_service.h"
#include "server/rpc/file_stream_limit.h"
#include "server/rpc/metrics_interceptor.h"
#include "server/rpc/thread_pool.h"
#include "server/rpc/worker_service.h"
#include "tests/common/test_dir.h"
#include "worker/events/event.h"
#include "worker/events/program_usage.h"
#include "worker/events/sha256.h"

namespace compress::server {
namespace {

constexpr char kCompression[] = "compress.v1.CompressionService";
constexpr char kWorkers[] = "compress.v1.WorkerService";

// The series of an exposition ("name{labels}" -> value).
std::map<std::string, double> ParseExposition(const std::string& text) {
  std::map<std::string, double> series;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line[0] == '#') continue;
    size_t space = line.rfind(' ');
    double value = 0;
    if (space != std::string::npos && absl::SimpleAtod(line.substr(space + 1), &value)) {
      series[line.substr(0, space)] = value;
    }
  }
  return series;
}

std::string GrpcSeries(const std::string& name, const std::string& type, const std::string& service,
                       const std::string& method, const std::string& code = "") {
  std::string labels;
  if (!code.empty()) labels = absl::StrCat("grpc_code=\"", code, "\",");
  return absl::StrCat(name, "{", labels, "grpc_method=\"", method, "\",grpc_service=\"", service,
                      "\",grpc_type=\"", type, "\"}");
}

// A PATH directory holding `program`, or "".
std::string FindOnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path == nullptr ? "/usr/bin:/bin" : path;
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = absl::StrCat(dirs.substr(start, end - start), "/", program);
    if (end > start && access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *JobStore::Open({dir_.File("jobs.db")});
    artifacts_ = *ArtifactStore::Open({dir_.path()});
    Scheduler::Options options;
    options.observer = &metrics_;
    scheduler_ = *Scheduler::Create(store_.get(), options);
    scheduler_->StartBackgroundThread();
    pool_ = std::make_unique<ThreadPool>(4);
    file_streams_ = std::make_unique<FileStreamLimit>(FileStreamLimit::Options{8, absl::InfiniteDuration(), &metrics_});
    CompressionServiceImpl::Options compression_options;
    compression_options.metrics = &metrics_;
    compression_options.file_streams = file_streams_.get();
    compression_ = std::make_unique<CompressionServiceImpl>(scheduler_.get(), artifacts_.get(),
                                                            pool_.get(), compression_options);
    WorkerServiceImpl::Options worker_options;
    worker_options.metrics = &metrics_;
    worker_options.file_streams = file_streams_.get();
    worker_ = std::make_unique<WorkerServiceImpl>(scheduler_.get(), artifacts_.get(), pool_.get(),
                                                  worker_options);
    const google::protobuf::DescriptorPool* pool =
        google::protobuf::DescriptorPool::generated_pool();
    std::vector<GrpcMethodInfo> methods = MethodsOf(*pool->FindServiceByName(kCompression));
    for (const GrpcMethodInfo& m : MethodsOf(*pool->FindServiceByName(kWorkers))) {
      methods.push_back(m);
    }
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(compression_.get());
    builder.RegisterService(worker_.get());
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
    factories.push_back(std::make_unique<MetricsInterceptorFactory>(&metrics_, methods));
    builder.experimental().SetInterceptorCreators(std::move(factories));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
    api_ = v1::CompressionService::NewStub(channel_);
    workers_ = v1::WorkerService::NewStub(channel_);
  }

  void TearDown() override {
    scheduler_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
    pool_.reset();
  }

  std::string Exposition() {
    return prometheus::TextSerializer().Serialize(metrics_.registry()->Collect());
  }

  std::map<std::string, double> Scrape() { return ParseExposition(Exposition()); }

  static std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return context;
  }

  // Runs a job from creation to success: events with a finished phase and device readings,
  // an upload of `data` in `chunks` data messages, completion, and a read of the artifact.
  void RunJob(const std::string& data, int chunks) {
    v1::CreateJobRequest create;
    create.mutable_spec()->mutable_dataset()->set_format("synthetic");
    create.mutable_spec()->mutable_teacher()->mutable_train()->set_epochs(1);
    v1::Job job;
    ASSERT_TRUE(api_->CreateJob(Context().get(), create, &job).ok());

    v1::LeaseJobRequest lease_request;
    lease_request.set_worker_id("w1");
    lease_request.mutable_device()->set_name("cuda:0");
    lease_request.set_wait_seconds(5);
    v1::LeaseJobResponse lease_response;
    ASSERT_TRUE(workers_->LeaseJob(Context().get(), lease_request, &lease_response).ok());
    ASSERT_TRUE(lease_response.has_lease());
    lease_ = lease_response.lease();

    v1::ReportEventsRequest report;
    report.set_worker_id("w1");
    report.set_job(lease_.job());
    report.set_attempt(lease_.attempt());
    report.add_event_json(events::Serialize(events::PhaseStarted("teacher")));
    report.add_event_json(events::Serialize(events::Metric(
        "teacher", 10, 0.5, 0.5,
        {{"loss", 0.5}, {"images_per_second", 812.5}, {"device_memory_bytes", 3.0e9}})));
    report.add_event_json(
        events::Serialize(events::PhaseFinished("teacher", 12.5, {{"top1", 0.9}})));
    report.add_event_json(events::Serialize(events::PhaseFinished("mystery", 2.0, {})));
    v1::ReportEventsResponse report_response;
    ASSERT_TRUE(workers_->ReportEvents(Context().get(), report, &report_response).ok());
    while_running_ = Scrape();

    auto context = Context();
    v1::Artifact artifact;
    auto writer = workers_->UploadArtifact(context.get(), &artifact);
    v1::UploadArtifactRequest header;
    header.mutable_header()->set_worker_id("w1");
    header.mutable_header()->set_job(lease_.job());
    header.mutable_header()->set_attempt(lease_.attempt());
    header.mutable_header()->set_artifact_name("model.bin");
    header.mutable_header()->set_size_bytes(static_cast<int64_t>(data.size()));
    header.mutable_header()->set_sha256(Sha256Hex(data));
    ASSERT_TRUE(writer->Write(header));
    size_t chunk = data.size() / chunks;
    for (int i = 0; i < chunks; ++i) {
      v1::UploadArtifactRequest message;
      message.set_data(data.substr(i * chunk, i + 1 == chunks ? std::string::npos : chunk));
      ASSERT_TRUE(writer->Write(message));
    }
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());

    v1::CompleteAttemptRequest complete;
    complete.set_worker_id("w1");
    complete.set_job(lease_.job());
    complete.set_attempt(lease_.attempt());
    complete.set_outcome(v1::ATTEMPT_SUCCEEDED);
    v1::CompleteAttemptResponse complete_response;
    ASSERT_TRUE(workers_->CompleteAttempt(Context().get(), complete, &complete_response).ok());

    v1::ReadArtifactRequest read;
    read.set_name(job.name() + "/artifacts/model.bin");
    read.set_chunk_size(static_cast<int32_t>(chunk));
    auto read_context = Context();
    auto reader = api_->ReadArtifact(read_context.get(), read);
    v1::ReadArtifactResponse message;
    std::string received;
    while (reader->Read(&message)) received += message.data();
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_EQ(received, data);
  }

  TestDir dir_;
  Metrics metrics_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<FileStreamLimit> file_streams_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<CompressionServiceImpl> compression_;
  std::unique_ptr<WorkerServiceImpl> worker_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::CompressionService::Stub> api_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
  v1::Lease lease_;
  std::map<std::string, double> while_running_;
};

TEST_F(MetricsTest, FamiliesExistBeforeAnyCall) {
  std::map<std::string, double> series = Scrape();
  for (const char* name :
       {"compressd_jobs_created_total", "compressd_workers_connected",
        "compressd_job_queue_wait_seconds_count", "compressd_job_duration_seconds_count",
        "compressd_artifact_bytes_sent_total", "compressd_artifact_bytes_received_total",
        "compressd_file_streams", "compressd_file_streams_refused_total"}) {
    ASSERT_EQ(series.count(name), 1u) << name;
    EXPECT_EQ(series[name], 0) << name;
  }
  EXPECT_EQ(series["compressd_file_streams_max"], 8);
  EXPECT_EQ(series.count("compressd_jobs{state=\"QUEUED\"}"), 1u);
  EXPECT_EQ(series[absl::StrCat("compressd_build_info{version=\"", ProjectVersion(), "\"}")], 1);
  EXPECT_EQ(series.count("compressd_jobs_finished_total{state=\"FAILED\"}"), 1u);
  for (const char* phase : Metrics::kPhases) {
    EXPECT_EQ(
        series.count(absl::StrCat("compressd_phase_duration_seconds_count{phase=\"", phase, "\"}")),
        1u)
        << phase;
  }
  // Every method's series are there at 0 before its first call.
  EXPECT_EQ(series[GrpcSeries("grpc_server_started_total", "unary", kCompression, "CreateJob")], 0);
  EXPECT_EQ(series.count(GrpcSeries("grpc_server_msg_sent_total", "server_stream", kCompression,
                                    "WatchJob")),
            1u);
  EXPECT_EQ(series.count(GrpcSeries("grpc_server_handling_seconds_count", "client_stream", kWorkers,
                                    "UploadArtifact")),
            1u);
}

TEST_F(MetricsTest, AJobMovesEveryFamily) {
  const std::string data(300'000, 'x');
  RunJob(data, 3);
  std::map<std::string, double> after = Scrape();

  // Jobs, queue wait, duration.
  EXPECT_EQ(after["compressd_jobs_created_total"], 1);
  EXPECT_EQ(after["compressd_jobs{state=\"SUCCEEDED\"}"], 1);
  EXPECT_EQ(after["compressd_jobs{state=\"QUEUED\"}"], 0);
  EXPECT_EQ(after["compressd_jobs_finished_total{state=\"SUCCEEDED\"}"], 1);
  EXPECT_EQ(after["compressd_job_queue_wait_seconds_count"], 1);
  EXPECT_EQ(after["compressd_job_duration_seconds_count"], 1);
  EXPECT_EQ(while_running_["compressd_jobs{state=\"RUNNING\"}"], 1);
  EXPECT_EQ(while_running_["compressd_workers_connected"], 1);

  // Phases: the known one under its name, the unknown one as "other".
  EXPECT_EQ(after["compressd_phase_duration_seconds_count{phase=\"teacher\"}"], 1);
  EXPECT_DOUBLE_EQ(after["compressd_phase_duration_seconds_sum{phase=\"teacher\"}"], 12.5);
  EXPECT_EQ(after["compressd_phase_duration_seconds_bucket{phase=\"teacher\",le=\"15\"}"], 1);
  EXPECT_EQ(after["compressd_phase_duration_seconds_bucket{phase=\"teacher\",le=\"5\"}"], 0);
  EXPECT_EQ(after["compressd_phase_duration_seconds_count{phase=\"other\"}"], 1);
  EXPECT_EQ(after.count("compressd_phase_duration_seconds_count{phase=\"mystery\"}"), 0u);

  // Device gauges while the lease is held, gone once it ended.
  const std::string device_labels = "{device=\"cuda:0\",worker=\"w1\"}";
  EXPECT_EQ(while_running_["compressd_worker_device_memory_used_bytes" + device_labels], 3.0e9);
  EXPECT_EQ(while_running_["compressd_train_images_per_second" + device_labels], 812.5);
  EXPECT_EQ(after.count("compressd_worker_device_memory_used_bytes" + device_labels), 0u);
  EXPECT_EQ(after.count("compressd_train_images_per_second" + device_labels), 0u);

  // Artifact bytes both ways.
  EXPECT_EQ(after["compressd_artifact_bytes_received_total"], data.size());
  EXPECT_EQ(after["compressd_artifact_bytes_sent_total"], data.size());

  // The upload and the read gave their file-transfer slots back (each in its OnDone, just after
  // its client saw the end).
  absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (Scrape()["compressd_file_streams"] != 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(Scrape()["compressd_file_streams"], 0);
  EXPECT_EQ(after["compressd_file_streams_refused_total"], 0);

  // gRPC: calls, codes, messages, latencies.
  EXPECT_EQ(after[GrpcSeries("grpc_server_started_total", "unary", kCompression, "CreateJob")], 1);
  EXPECT_EQ(
      after[GrpcSeries("grpc_server_handled_total", "unary", kCompression, "CreateJob", "OK")], 1);
  EXPECT_EQ(
      after[GrpcSeries("grpc_server_handling_seconds_count", "unary", kCompression, "CreateJob")],
      1);
  EXPECT_EQ(after[GrpcSeries("grpc_server_msg_received_total", "unary", kWorkers, "LeaseJob")], 1);
  EXPECT_EQ(after[GrpcSeries("grpc_server_msg_sent_total", "unary", kWorkers, "LeaseJob")], 1);
  // The header and three data messages in, one response out.
  EXPECT_EQ(after[GrpcSeries("grpc_server_msg_received_total", "client_stream", kWorkers,
                             "UploadArtifact")],
            4);
  EXPECT_EQ(after[GrpcSeries("grpc_server_handled_total", "client_stream", kWorkers,
                             "UploadArtifact", "OK")],
            1);
  // Three chunks of 100000 bytes; the last carries the size and sha256.
  EXPECT_EQ(after[GrpcSeries("grpc_server_msg_sent_total", "server_stream", kCompression,
                             "ReadArtifact")],
            3);
  EXPECT_EQ(after[GrpcSeries("grpc_server_handled_total", "server_stream", kCompression,
                             "ReadArtifact", "OK")],
            1);
}

TEST_F(MetricsTest, FailedCallsCountByCode) {
  v1::GetJobRequest bad_name;
  bad_name.set_name("job/x");
  v1::Job job;
  EXPECT_EQ(api_->GetJob(Context().get(), bad_name, &job).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::GetJobRequest missing;
  missing.set_name("jobs/0000000000000000");
  EXPECT_EQ(api_->GetJob(Context().get(), missing, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(api_->GetJob(Context().get(), missing, &job).error_code(), grpc::StatusCode::NOT_FOUND);

  std::map<std::string, double> series = Scrape();
  EXPECT_EQ(series[GrpcSeries("grpc_server_started_total", "unary", kCompression, "GetJob")], 3);
  EXPECT_EQ(series[GrpcSeries("grpc_server_handled_total", "unary", kCompression, "GetJob",
                              "InvalidArgument")],
            1);
  EXPECT_EQ(
      series[GrpcSeries("grpc_server_handled_total", "unary", kCompression, "GetJob", "NotFound")],
      2);
  EXPECT_EQ(
      series.count(GrpcSeries("grpc_server_handled_total", "unary", kCompression, "GetJob", "OK")),
      0u);
}

// A scheduler reporting to a Metrics object, on a manual clock, without the RPC layer.
class MetricsSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *JobStore::Open({dir_.File("jobs.db")});
    Scheduler::Options options;
    options.clock = &clock_;
    options.observer = &metrics_;
    options.lease_duration = absl::Seconds(30);
    scheduler_ = *Scheduler::Create(store_.get(), options);
  }
  void TearDown() override { scheduler_->Shutdown(); }

  std::map<std::string, double> Scrape() {
    return ParseExposition(prometheus::TextSerializer().Serialize(metrics_.registry()->Collect()));
  }

  TestDir dir_;
  std::unique_ptr<JobStore> store_;
  Metrics metrics_;
  ManualClock clock_;
  std::unique_ptr<Scheduler> scheduler_;
};

// A lease that expires counts in compressd_leases_expired_total and drops its device gauges.
TEST_F(MetricsSchedulerTest, ExpiredLeaseCountsAndDropsDeviceGauges) {
  JobRequest request;
  request.spec_json = "{}";
  ASSERT_TRUE(scheduler_->CreateJob(request).ok());
  absl::StatusOr<std::optional<Lease>> lease = scheduler_->LeaseNext("w9", "cuda:1");
  ASSERT_TRUE(lease.ok() && lease->has_value());
  ASSERT_TRUE(scheduler_
                  ->ReportEvents((*lease)->job_id, (*lease)->attempt, {"w9"},
                                 {events::Serialize(events::Metric(
                                     "distill", 1, 0.1, 0.1, {{"device_memory_bytes", 1024}}))})
                  .ok());
  const std::string gauge =
      "compressd_worker_device_memory_used_bytes{device=\"cuda:1\",worker=\"w9\"}";
  std::map<std::string, double> before = Scrape();
  EXPECT_EQ(before[gauge], 1024);
  // No images_per_second reading came, so that gauge was not created.
  EXPECT_EQ(before.count("compressd_train_images_per_second{device=\"cuda:1\",worker=\"w9\"}"), 0u);
  EXPECT_EQ(before["compressd_leases_expired_total"], 0);

  clock_.Advance(absl::Seconds(31));
  scheduler_->ProcessTimeouts();
  std::map<std::string, double> after = Scrape();
  EXPECT_EQ(after["compressd_leases_expired_total"], 1);
  EXPECT_EQ(after.count(gauge), 0u);
  EXPECT_EQ(after["compressd_jobs{state=\"QUEUED\"}"], 1);  // requeued
}

// compressd_jobs_queued{device} follows the queue of each device need: creation, lease, cancel
// and requeue.
TEST_F(MetricsSchedulerTest, QueuedJobsByDevice) {
  const std::string cpu = "compressd_jobs_queued{device=\"cpu\"}";
  const std::string cuda = "compressd_jobs_queued{device=\"cuda\"}";
  const std::string any = "compressd_jobs_queued{device=\"auto\"}";
  EXPECT_EQ(Scrape()[cuda], 0);
  std::vector<std::string> ids;
  for (const char* spec :
       {R"({"resources":{"device":"cuda"}})", R"({"resources":{"device":"cuda"}})",
        R"({"resources":{"device":"cpu"}})", "{}"}) {
    JobRequest request;
    request.spec_json = spec;
    absl::StatusOr<CreatedJob> created = scheduler_->CreateJob(request);
    ASSERT_TRUE(created.ok()) << created.status();
    ids.push_back(created->job.id);
    clock_.Advance(absl::Milliseconds(1));  // queue order = creation order
  }
  std::map<std::string, double> series = Scrape();
  EXPECT_EQ(series[cuda], 2);
  EXPECT_EQ(series[cpu], 1);
  EXPECT_EQ(series[any], 1);

  absl::StatusOr<std::optional<Lease>> lease = scheduler_->LeaseNext("w1", "cuda:0");
  ASSERT_TRUE(lease.ok() && lease->has_value());
  EXPECT_EQ(Scrape()[cuda], 1);
  ASSERT_TRUE(scheduler_->CancelJob(ids[2]).ok());
  EXPECT_EQ(Scrape()[cpu], 0);
  clock_.Advance(absl::Seconds(31));
  scheduler_->ProcessTimeouts();  // the cuda lease expires: requeued
  EXPECT_EQ(Scrape()[cuda], 2);
}

TEST(GrpcCodeNameTest, MatchesGoNames) {
  EXPECT_STREQ(Metrics::GrpcCodeName(0), "OK");
  EXPECT_STREQ(Metrics::GrpcCodeName(1), "Canceled");
  EXPECT_STREQ(Metrics::GrpcCodeName(4), "DeadlineExceeded");
  EXPECT_STREQ(Metrics::GrpcCodeName(16), "Unauthenticated");
  EXPECT_STREQ(Metrics::GrpcCodeName(17), "Unknown");
}

TEST_F(MetricsTest, ExpositionPassesPromtool) {
  const std::string promtool = FindOnPath("promtool");
  if (promtool.empty()) GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  RunJob(std::string(1000, 'y'), 2);
  const std::string file = dir_.File("metrics.txt");
  {
    std::ofstream out(file);
    out << Exposition();
  }
  const std::string command =
      absl::StrCat(promtool, " check metrics < ", file, " > ", file, ".log 2>&1");
  int status = std::system(command.c_str());
  std::ifstream log(file + ".log");
  std::string output((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(status)) << command;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
}

}  // namespace
}  // namespace compress::server
