// The gRPC services in process, on a loopback port, through real channels and stubs.
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <stdio.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "client/dial.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "compress/v1/worker_service.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/core/artifact_store.h"
#include "server/core/job_store.h"
#include "server/core/scheduler.h"
#include "server/rpc/compression_service.h"
#include "server/rpc/file_stream_limit.h"
#include "server/rpc/keepalive.h"
#include "server/rpc/thread_pool.h"
#include "server/rpc/worker_service.h"
#include "tests/common/test_dir.h"
#include "tests/server/rpc/freezing_proxy.h"
#include "worker/events/event.h"
#include "worker/events/sha256.h"

namespace compress::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Holds up the next rename into an artifacts/ directory once armed, until released: lets a test
// run other calls while an upload is in its last step. `rename` below is this test program's.
class RenameGate {
 public:
  static RenameGate& Get() {
    static RenameGate* gate = new RenameGate;
    return *gate;
  }

  void Arm() {
    absl::MutexLock lock(&mu_);
    armed_ = true;
    reached_ = false;
    released_ = false;
  }
  // Whether a rename reached the gate within `timeout`.
  bool AwaitReached(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&reached_), timeout);
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }
  // Lets every rename through, held up or not.
  void Disarm() {
    absl::MutexLock lock(&mu_);
    armed_ = false;
    released_ = true;
  }
  // Called by rename: holds up an armed rename into `to`.
  void Pass(const char* to) {
    if (std::strstr(to, "/artifacts/") == nullptr) return;
    absl::MutexLock lock(&mu_);
    if (!armed_) return;
    armed_ = false;
    reached_ = true;
    mu_.Await(absl::Condition(&released_));
  }

 private:
  absl::Mutex mu_;
  bool armed_ ABSL_GUARDED_BY(mu_) = false;
  bool reached_ ABSL_GUARDED_BY(mu_) = false;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

class ServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *JobStore::Open({dir_.File("jobs.db")});
    artifacts_ = *ArtifactStore::Open({dir_.path()});
    Scheduler::Options options;
    options.lease_duration = absl::Seconds(30);
    scheduler_ = *Scheduler::Create(store_.get(), options);
    scheduler_->StartBackgroundThread();
    pool_ = std::make_unique<ThreadPool>(4);
    CompressionServiceImpl::Options compression_options;
    if (max_list_response_bytes_ > 0) {
      compression_options.max_list_response_bytes = max_list_response_bytes_;
    }
    WorkerServiceImpl::Options worker_options;
    if (max_file_streams_ > 0) {
      file_streams_ = std::make_unique<FileStreamLimit>(
          FileStreamLimit::Options{max_file_streams_, file_stream_idle_timeout_});
      compression_options.file_streams = file_streams_.get();
      worker_options.file_streams = file_streams_.get();
    }
    compression_ = std::make_unique<CompressionServiceImpl>(scheduler_.get(), artifacts_.get(),
                                                            pool_.get(), compression_options);
    worker_ = std::make_unique<WorkerServiceImpl>(scheduler_.get(), artifacts_.get(), pool_.get(),
                                                  worker_options);
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(compression_.get());
    builder.RegisterService(worker_.get());
    if (configure_server_) configure_server_(&builder);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    port_ = port;
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
    EXPECT_EQ(scheduler_->notifier().SubscriberCount(), 0) << "a WatchJob reactor leaked";
  }

  static v1::CreateJobRequest ValidRequest() {
    v1::CreateJobRequest request;
    request.mutable_spec()->mutable_dataset()->set_format("synthetic");
    request.mutable_spec()->mutable_teacher()->mutable_train()->set_epochs(1);
    return request;
  }

  // Deadline-bounded context.
  static std::unique_ptr<grpc::ClientContext> Context(int seconds = 10) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return context;
  }

  v1::Job CreateJob(v1::CreateJobRequest request = ValidRequest()) {
    v1::Job job;
    grpc::Status status = api_->CreateJob(Context().get(), request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  grpc::Status CreateJobStatus(const v1::CreateJobRequest& request) {
    v1::Job job;
    return api_->CreateJob(Context().get(), request, &job);
  }

  v1::Lease Lease(const std::string& worker_id = "w1") {
    v1::LeaseJobRequest request;
    request.set_worker_id(worker_id);
    request.mutable_device()->set_name("cpu");
    request.set_wait_seconds(5);
    v1::LeaseJobResponse response;
    grpc::Status status = workers_->LeaseJob(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(response.has_lease());
    return response.lease();
  }

  grpc::Status UploadArtifact(const v1::Lease& lease, const std::string& worker_id,
                              const std::string& name, const std::string& data,
                              const std::string& sha256, v1::Artifact* out) {
    auto context = Context();
    auto writer = workers_->UploadArtifact(context.get(), out);
    v1::UploadArtifactRequest header;
    header.mutable_header()->set_worker_id(worker_id);
    header.mutable_header()->set_job(lease.job());
    header.mutable_header()->set_attempt(lease.attempt());
    header.mutable_header()->set_lease_id(lease.lease_id());
    header.mutable_header()->set_artifact_name(name);
    header.mutable_header()->set_size_bytes(static_cast<int64_t>(data.size()));
    header.mutable_header()->set_sha256(sha256);
    writer->Write(header);
    for (size_t offset = 0; offset < data.size(); offset += 300'000) {
      v1::UploadArtifactRequest chunk;
      chunk.set_data(data.substr(offset, 300'000));
      if (!writer->Write(chunk)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  grpc::Status Complete(const v1::Lease& lease, v1::AttemptOutcome outcome,
                        const std::string& worker_id = "w1") {
    v1::CompleteAttemptRequest request;
    request.set_worker_id(worker_id);
    request.set_job(lease.job());
    request.set_attempt(lease.attempt());
    request.set_lease_id(lease.lease_id());
    request.set_outcome(outcome);
    v1::CompleteAttemptResponse response;
    return workers_->CompleteAttempt(Context().get(), request, &response);
  }

  // Heartbeat for `lease` from `worker_id`, naming the lease's id.
  grpc::Status Heartbeat(const v1::Lease& lease, const std::string& worker_id = "w1") {
    v1::HeartbeatRequest request;
    request.set_worker_id(worker_id);
    request.set_job(lease.job());
    request.set_attempt(lease.attempt());
    request.set_lease_id(lease.lease_id());
    v1::HeartbeatResponse response;
    return workers_->Heartbeat(Context().get(), request, &response);
  }

  // ReportEvents of one log line for `lease` from `worker_id`, naming the lease's id.
  grpc::Status ReportLog(const v1::Lease& lease, const std::string& message,
                         const std::string& worker_id = "w1") {
    v1::ReportEventsRequest request;
    request.set_worker_id(worker_id);
    request.set_job(lease.job());
    request.set_attempt(lease.attempt());
    request.set_lease_id(lease.lease_id());
    request.add_event_json(events::Serialize(events::Log("info", message)));
    v1::ReportEventsResponse response;
    return workers_->ReportEvents(Context().get(), request, &response);
  }

  // The events the store holds for job `name` ("jobs/ID").
  size_t StoredEvents(const std::string& name) {
    absl::StatusOr<std::vector<JobEvent>> events = store_->ListEvents(name.substr(5), 0, 1000);
    EXPECT_TRUE(events.ok()) << events.status();
    return events.ok() ? events->size() : 0;
  }

  // Reads a WatchJob stream to its end.
  grpc::Status Watch(const std::string& name, int64_t after, std::vector<v1::JobEvent>* events,
                     int seconds = 20) {
    v1::WatchJobRequest request;
    request.set_name(name);
    request.set_after_sequence(after);
    auto context = Context(seconds);
    auto reader = api_->WatchJob(context.get(), request);
    v1::JobEvent event;
    while (reader->Read(&event)) events->push_back(event);
    return reader->Finish();
  }

  // Whether `done()` became true within `limit`, polling every 5 ms.
  static bool Await(const std::function<bool()>& done, absl::Duration limit = absl::Seconds(10)) {
    const absl::Time give_up = absl::Now() + limit;
    while (!done()) {
      if (absl::Now() > give_up) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }

  // Reads artifact `name` ("jobs/ID/artifacts/NAME") whole with ReadArtifact: its bytes in
  // `data`, the sha256 its last message names in `sha256`.
  grpc::Status ReadWholeArtifact(const std::string& name, std::string* data, std::string* sha256) {
    v1::ReadArtifactRequest request;
    request.set_name(name);
    auto context = Context(60);
    auto reader = api_->ReadArtifact(context.get(), request);
    v1::ReadArtifactResponse chunk;
    data->clear();
    while (reader->Read(&chunk)) {
      *data += chunk.data();
      if (!chunk.sha256().empty()) *sha256 = chunk.sha256();
    }
    return reader->Finish();
  }

  // The health service's answer for the whole server: 1 = SERVING, 2 = NOT_SERVING.
  int HealthStatus() {
    grpc::GenericStub stub(channel_);
    grpc::CompletionQueue cq;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::ByteBuffer request;
    grpc::Slice empty("");
    request = grpc::ByteBuffer(&empty, 1);
    grpc::ByteBuffer response;
    grpc::Status status;
    auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
    call->StartCall();
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    cq.Next(&tag, &ok);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<grpc::Slice> slices;
    response.Dump(&slices);
    std::string bytes;
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    // HealthCheckResponse { ServingStatus status = 1; }: tag 0x08, then the value.
    return bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : -1;
  }

  // Set by a subclass's constructor: a limit on file transfers (0 = none).
  int max_file_streams_ = 0;
  // Set by a subclass's constructor: the bound of a ListJobs response (0 = the default).
  int64_t max_list_response_bytes_ = 0;
  // Set by a subclass's constructor: more settings of the server.
  std::function<void(grpc::ServerBuilder*)> configure_server_;
  int port_ = 0;
  absl::Duration file_stream_idle_timeout_ = absl::InfiniteDuration();
  TestDir dir_;
  std::unique_ptr<FileStreamLimit> file_streams_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<CompressionServiceImpl> compression_;
  std::unique_ptr<WorkerServiceImpl> worker_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::CompressionService::Stub> api_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
};

// The services with room for one file transfer at a time.
class FileStreamLimitTest : public ServicesTest {
 protected:
  FileStreamLimitTest() { max_file_streams_ = 1; }

  // Whether every slot was given back within 10 s: a call gives its slot back in OnDone, just
  // after its client saw the end.
  bool AwaitNoTransfers() {
    return Await([this] { return file_streams_->in_use() == 0; });
  }

  // A job whose artifact model.bin (`data`) is 64 MiB, far more than gRPC's flow-control
  // windows hold, and a read of it in 64 KiB chunks whose client took one chunk and reads no
  // more: the read stays open, holding its place.
  struct StalledRead {
    v1::Lease lease;
    std::string name;  // jobs/ID/artifacts/model.bin
    std::string data;
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientReader<v1::ReadArtifactResponse>> reader;
  };
  void OpenStalledRead(StalledRead* read) {
    v1::Job job = CreateJob();
    read->lease = Lease();
    read->data.assign(64 << 20, 'd');
    v1::Artifact artifact;
    ASSERT_TRUE(
        UploadArtifact(read->lease, "w1", "model.bin", read->data, Sha256Hex(read->data), &artifact)
            .ok());
    ASSERT_TRUE(AwaitNoTransfers());
    read->name = job.name() + "/artifacts/model.bin";
    v1::ReadArtifactRequest request;
    request.set_name(read->name);
    request.set_chunk_size(64 << 10);
    read->context = Context(60);
    read->reader = api_->ReadArtifact(read->context.get(), request);
    v1::ReadArtifactResponse chunk;
    ASSERT_TRUE(read->reader->Read(&chunk));
  }
};

// The services with an idle timeout of 1 s on file transfers (long enough that a read which
// keeps reading is not taken for stalled on a loaded machine).
class IdleFileStreamTest : public FileStreamLimitTest {
 protected:
  IdleFileStreamTest() {
    max_file_streams_ = 4;
    file_stream_idle_timeout_ = absl::Seconds(1);
  }
};

// A read whose client stops reading and an upload whose client stops sending are cancelled once
// idle for the timeout, giving their places back.
TEST_F(IdleFileStreamTest, StalledTransfersAreCancelled) {
  StalledRead read;
  ASSERT_NO_FATAL_FAILURE(OpenStalledRead(&read));
  const v1::Lease& lease = read.lease;

  v1::Artifact ignored;
  auto upload_context = Context(60);
  auto writer = workers_->UploadArtifact(upload_context.get(), &ignored);
  v1::UploadArtifactRequest header;
  header.mutable_header()->set_worker_id("w1");
  header.mutable_header()->set_job(lease.job());
  header.mutable_header()->set_attempt(lease.attempt());
  header.mutable_header()->set_lease_id(lease.lease_id());
  header.mutable_header()->set_artifact_name("stalled.bin");
  header.mutable_header()->set_size_bytes(1000);
  ASSERT_TRUE(writer->Write(header));

  const absl::Time start = absl::Now();
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(file_streams_->in_use(), 2);
  ASSERT_TRUE(AwaitNoTransfers());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(900));
  v1::ReadArtifactResponse chunk;
  while (read.reader->Read(&chunk)) {
  }
  EXPECT_EQ(read.reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  writer->WritesDone();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);

  // The artifact is still whole, and a read that keeps reading is not cancelled.
  std::string received, sha;
  ASSERT_TRUE(ReadWholeArtifact(read.name, &received, &sha).ok());
  EXPECT_TRUE(received == read.data);
}

// The server with keepalive pings every 300 ms, answered within 300 ms.
class ServerKeepaliveTest : public ServicesTest {
 protected:
  ServerKeepaliveTest() {
    configure_server_ = [](grpc::ServerBuilder* builder) {
      ApplyKeepalive({absl::Milliseconds(300), absl::Milliseconds(300)}, builder);
    };
  }

  bool AwaitSubscribers(int count) {
    return Await([this, count] { return scheduler_->notifier().SubscriberCount() == count; });
  }
};

// A watcher whose connection goes silent without closing (its machine vanished) is dropped by the
// server's keepalive: its watch ends and unsubscribes.
TEST_F(ServerKeepaliveTest, AWatcherThatVanishedIsDropped) {
  v1::Job job = CreateJob();
  FreezingProxy proxy(port_);
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", proxy.port()),
                                     grpc::InsecureChannelCredentials());
  auto api = v1::CompressionService::NewStub(channel);
  v1::WatchJobRequest request;
  request.set_name(job.name());
  auto context = Context(30);
  auto reader = api->WatchJob(context.get(), request);
  v1::JobEvent event;
  ASSERT_TRUE(reader->Read(&event));  // the job's QUEUED event; the watch then waits
  ASSERT_TRUE(AwaitSubscribers(1));
  proxy.Freeze();
  EXPECT_TRUE(AwaitSubscribers(0)) << "the server kept the vanished watcher";
  context->TryCancel();
  while (reader->Read(&event)) {
  }
  reader->Finish();
}

// The server accepts client pings at any rate here, so that only the freeze can end the call.
class ClientKeepaliveTest : public ServicesTest {
 protected:
  ClientKeepaliveTest() {
    configure_server_ = [](grpc::ServerBuilder* builder) {
      builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 0);
      builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    };
  }
};

// A watch through a channel with client keepalive fails UNAVAILABLE soon after the server's side
// of its connection went silent, instead of waiting for its deadline.
TEST_F(ClientKeepaliveTest, AWatchOfAServerThatVanishedFailsUnavailable) {
  v1::Job job = CreateJob();
  FreezingProxy proxy(port_);
  grpc::ChannelArguments args;
  client::SetKeepalive(&args, absl::Milliseconds(300), absl::Milliseconds(300));
  auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", proxy.port()),
                                           grpc::InsecureChannelCredentials(), args);
  auto api = v1::CompressionService::NewStub(channel);
  v1::WatchJobRequest request;
  request.set_name(job.name());
  auto context = Context(30);
  auto reader = api->WatchJob(context.get(), request);
  v1::JobEvent event;
  ASSERT_TRUE(reader->Read(&event));
  proxy.Freeze();
  const absl::Time frozen = absl::Now();
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_LT(absl::Now() - frozen, absl::Seconds(10));
}

TEST(FileStreamLimitUnitTest, SlotsAreCountedAndGivenBackOnce) {
  FileStreamLimit limit(2);
  absl::StatusOr<FileStreamLimit::Slot> a =
      limit.Acquire("ReadArtifact", FileStreamLimit::Party::kClient);
  absl::StatusOr<FileStreamLimit::Slot> b =
      limit.Acquire("ReadArtifact", FileStreamLimit::Party::kClient);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(limit.in_use(), 2);
  absl::StatusOr<FileStreamLimit::Slot> c =
      limit.Acquire("UploadBlob", FileStreamLimit::Party::kClient);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("UploadBlob"));
  {
    FileStreamLimit::Slot moved = *std::move(a);
    FileStreamLimit::Slot empty;
    empty = std::move(moved);
    EXPECT_EQ(limit.in_use(), 2);
  }
  EXPECT_EQ(limit.in_use(), 1);
  *b = FileStreamLimit::Slot();
  EXPECT_EQ(limit.in_use(), 0);
  EXPECT_TRUE(AcquireFileStream(nullptr, "ReadBlob", FileStreamLimit::Party::kWorker).ok());

  EXPECT_EQ(FileStreamLimit::DefaultMax(1024), 448);
  EXPECT_EQ(FileStreamLimit::DefaultMax(100), 16);
  EXPECT_EQ(FileStreamLimit::DefaultMax(1 << 20), 4096);
}

// A quarter of the places are kept for workers: clients are refused once they hold the rest, and
// the message says so; a worker may take the last place.
TEST(FileStreamLimitUnitTest, AQuarterIsKeptForWorkers) {
  FileStreamLimit limit(8);
  EXPECT_EQ(limit.client_max(), 6);
  std::vector<FileStreamLimit::Slot> held;
  for (int i = 0; i < 6; ++i) {
    absl::StatusOr<FileStreamLimit::Slot> slot =
        limit.Acquire("ReadArtifact", FileStreamLimit::Party::kClient);
    ASSERT_TRUE(slot.ok()) << i;
    held.push_back(*std::move(slot));
  }
  absl::StatusOr<FileStreamLimit::Slot> client =
      limit.Acquire("ReadArtifact", FileStreamLimit::Party::kClient);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(client.status().message(),
              HasSubstr("clients may take 6 of its 8 (--max_file_streams; the rest are kept for "
                        "workers)"));
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<FileStreamLimit::Slot> slot =
        limit.Acquire("UploadArtifact", FileStreamLimit::Party::kWorker);
    ASSERT_TRUE(slot.ok()) << i;
    held.push_back(*std::move(slot));
  }
  absl::StatusOr<FileStreamLimit::Slot> worker =
      limit.Acquire("UploadArtifact", FileStreamLimit::Party::kWorker);
  EXPECT_EQ(worker.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(worker.status().message(), HasSubstr("its limit (--max_file_streams=8)"));
  held.clear();
  EXPECT_EQ(limit.in_use(), 0);
  EXPECT_EQ(FileStreamLimit(1).client_max(), 1);
  EXPECT_EQ(FileStreamLimit(4).client_max(), 3);
}

// While one read holds the only slot, every other transfer is refused RESOURCE_EXHAUSTED naming
// the call and the flag; once it ends, a read goes through again.
TEST_F(FileStreamLimitTest, TransfersBeyondTheLimitAreRefusedUntilOneEnds) {
  StalledRead stalled;
  ASSERT_NO_FATAL_FAILURE(OpenStalledRead(&stalled));
  EXPECT_EQ(file_streams_->in_use(), 1);

  auto expect_refused = [](const grpc::Status& status, const std::string& call) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << call;
    EXPECT_THAT(status.error_message(), HasSubstr(call));
    EXPECT_THAT(status.error_message(), HasSubstr("--max_file_streams"));
  };
  std::string received, sha;
  expect_refused(ReadWholeArtifact(stalled.name, &received, &sha), "ReadArtifact");
  v1::Artifact artifact;
  expect_refused(UploadArtifact(stalled.lease, "w1", "other.bin", "x", Sha256Hex("x"), &artifact),
                 "UploadArtifact");
  {
    v1::ReadBlobRequest read;
    read.set_worker_id("w1");
    read.set_sha256(Sha256Hex("x"));
    auto blob_context = Context();
    auto blob_reader = workers_->ReadBlob(blob_context.get(), read);
    v1::ReadArtifactResponse ignored;
    while (blob_reader->Read(&ignored)) {
    }
    expect_refused(blob_reader->Finish(), "ReadBlob");
  }
  {
    v1::Blob blob;
    auto blob_context = Context();
    auto writer = api_->UploadBlob(blob_context.get(), &blob);
    v1::UploadBlobRequest part;
    part.set_data("x");
    writer->Write(part);
    writer->WritesDone();
    expect_refused(writer->Finish(), "UploadBlob");
  }
  EXPECT_EQ(file_streams_->in_use(), 1);

  stalled.context->TryCancel();
  v1::ReadArtifactResponse chunk;
  while (stalled.reader->Read(&chunk)) {
  }
  EXPECT_EQ(stalled.reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(AwaitNoTransfers());
  ASSERT_TRUE(ReadWholeArtifact(stalled.name, &received, &sha).ok());
  EXPECT_TRUE(received == stalled.data);
  EXPECT_EQ(sha, Sha256Hex(stalled.data));
}

TEST_F(ServicesTest, CreateJobValidationNamesTheField) {
  v1::CreateJobRequest no_dataset = ValidRequest();
  no_dataset.mutable_spec()->clear_dataset();
  grpc::Status status = CreateJobStatus(no_dataset);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.dataset.format"));

  v1::CreateJobRequest bad_prune = ValidRequest();
  bad_prune.mutable_spec()->mutable_prune()->set_enabled(true);
  bad_prune.mutable_spec()->mutable_prune()->set_target_macs_reduction(1.5);
  status = CreateJobStatus(bad_prune);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.prune.target_macs_reduction"));

  v1::CreateJobRequest long_id = ValidRequest();
  long_id.set_request_id(std::string(129, 'r'));
  status = CreateJobStatus(long_id);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("request_id: "));

  v1::CreateJobRequest bad_label = ValidRequest();
  (*bad_label.mutable_labels())["Bad Key"] = "x";
  status = CreateJobStatus(bad_label);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("labels: "));

  v1::CreateJobRequest attempts = ValidRequest();
  attempts.set_max_attempts(-1);
  EXPECT_THAT(CreateJobStatus(attempts).error_message(), HasSubstr("max_attempts: "));
}

// Label values and request ids are printed as they are (compressctl list): a control character
// in one is refused, naming the label key or the field, the byte and its offset.
TEST_F(ServicesTest, CreateJobRefusesControlCharactersInLabelValuesAndRequestIds) {
  struct Case {
    std::string key;
    std::string value;
    std::string request_id;
    std::string message;
  };
  for (const Case& c : {
           Case{"team", std::string("vi\0sion", 7), "",
                "labels.team: contains the control "
                "character 0x00 at offset 2"},
           Case{"team", "vision\nteam2 forged", "",
                "labels.team: contains the control character 0x0a at offset 6"},
           Case{"team", "a\x7f", "",
                "labels.team: contains the control character 0x7f at offset 1"},
           Case{"team", "\t", "", "labels.team: contains the control character 0x09 at offset 0"},
           Case{"", "", std::string("req\0-1", 6),
                "request_id: contains the control character 0x00 at offset 3"},
           Case{"", "", "req\r\n", "request_id: contains the control character 0x0d at offset 3"},
       }) {
    v1::CreateJobRequest request = ValidRequest();
    if (!c.key.empty()) (*request.mutable_labels())[c.key] = c.value;
    request.set_request_id(c.request_id);
    grpc::Status status = CreateJobStatus(request);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_EQ(status.error_message(), c.message);
  }
  // Printable text, also beyond ASCII, is accepted.
  v1::CreateJobRequest printable = ValidRequest();
  (*printable.mutable_labels())["team"] = "vision ~ \"ü\" 視覚";
  printable.set_request_id("req 1 ~ ü");
  EXPECT_TRUE(CreateJobStatus(printable).ok());
}

// CreateJob's max_attempts has the scheduler's bound, the one of compressd's --max_attempts.
TEST_F(ServicesTest, CreateJobMaxAttemptsHasTheSchedulersBound) {
  v1::CreateJobRequest most = ValidRequest();
  most.set_max_attempts(Scheduler::kMaxAttemptsLimit);
  EXPECT_EQ(CreateJob(most).max_attempts(), Scheduler::kMaxAttemptsLimit);
  v1::CreateJobRequest too_many = ValidRequest();
  too_many.set_max_attempts(Scheduler::kMaxAttemptsLimit + 1);
  grpc::Status status = CreateJobStatus(too_many);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr(absl::StrCat("max_attempts: must be in [0, ", Scheduler::kMaxAttemptsLimit,
                                     "], got ", Scheduler::kMaxAttemptsLimit + 1)));
}

TEST_F(ServicesTest, CreateJobStoresTheSpecAndDuplicateRequestIdReturnsTheFirstJob) {
  v1::CreateJobRequest request = ValidRequest();
  request.set_request_id("req-42");
  request.set_priority(7);
  (*request.mutable_labels())["team"] = "vision";
  v1::Job first = CreateJob(request);
  EXPECT_THAT(first.name(), ::testing::StartsWith("jobs/"));
  EXPECT_EQ(first.state(), v1::QUEUED);
  EXPECT_EQ(first.spec().dataset().format(), "synthetic");
  EXPECT_EQ(first.spec().teacher().train().epochs(), 1);
  EXPECT_EQ(first.priority(), 7);
  EXPECT_EQ(first.max_attempts(), 3);
  EXPECT_EQ(first.labels().at("team"), "vision");
  EXPECT_EQ(first.last_event_sequence(), 1);
  v1::Job second = CreateJob(request);
  EXPECT_EQ(second.name(), first.name());
  v1::ListJobsResponse list;
  ASSERT_TRUE(api_->ListJobs(Context().get(), {}, &list).ok());
  EXPECT_EQ(list.jobs_size(), 1);
}

// CreateJob answers with the spec as stored (what GetJob returns: no fields the server does not
// know); a repeated request_id with another spec answers with the first job's.
TEST_F(ServicesTest, CreateJobAnswersWithTheStoredSpec) {
  v1::CreateJobRequest request = ValidRequest();
  request.set_request_id("spec-1");
  request.mutable_spec()->mutable_resources()->set_device("cpu");
  request.mutable_spec()
      ->GetReflection()
      ->MutableUnknownFields(request.mutable_spec())
      ->AddVarint(999, 7);
  v1::Job created = CreateJob(request);
  v1::GetJobRequest get;
  get.set_name(created.name());
  v1::Job stored;
  ASSERT_TRUE(api_->GetJob(Context().get(), get, &stored).ok());
  EXPECT_EQ(created.spec().SerializeAsString(), stored.spec().SerializeAsString());
  EXPECT_EQ(created.spec().resources().device(), "cpu");
  EXPECT_TRUE(created.spec().GetReflection()->GetUnknownFields(created.spec()).empty());

  request.mutable_spec()->mutable_resources()->set_device("auto");
  v1::Job again = CreateJob(request);
  EXPECT_EQ(again.name(), created.name());
  EXPECT_EQ(again.spec().resources().device(), "cpu");
}

TEST_F(ServicesTest, GetListCancelDeleteStatusCodes) {
  v1::Job job;
  v1::GetJobRequest get;
  get.set_name("job/abc");
  grpc::Status status = api_->GetJob(Context().get(), get, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("name: expected jobs/{job_id}, got 'job/abc'"));
  get.set_name("jobs/../../etc");
  EXPECT_EQ(api_->GetJob(Context().get(), get, &job).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  get.set_name("jobs/nosuchjob");
  EXPECT_EQ(api_->GetJob(Context().get(), get, &job).error_code(), grpc::StatusCode::NOT_FOUND);

  std::vector<std::string> names;
  for (int i = 0; i < 5; ++i) {
    v1::CreateJobRequest request = ValidRequest();
    (*request.mutable_labels())["team"] = i % 2 == 0 ? "vision" : "nlp";
    names.push_back(CreateJob(request).name());
  }
  get.set_name(names[0]);
  ASSERT_TRUE(api_->GetJob(Context().get(), get, &job).ok());
  EXPECT_EQ(job.name(), names[0]);

  // Pages of two, filtered.
  v1::ListJobsRequest list;
  list.set_page_size(2);
  list.set_filter("labels.team = \"vision\" AND state = QUEUED");
  std::vector<std::string> listed;
  for (int page = 0; page < 5; ++page) {
    v1::ListJobsResponse response;
    ASSERT_TRUE(api_->ListJobs(Context().get(), list, &response).ok());
    for (const v1::Job& j : response.jobs()) listed.push_back(j.name());
    if (response.next_page_token().empty()) break;
    list.set_page_token(response.next_page_token());
  }
  EXPECT_EQ(listed, (std::vector<std::string>{names[0], names[2], names[4]}));
  v1::ListJobsResponse response;
  list.set_filter("state = RUNNING");
  status = api_->ListJobs(Context().get(), list, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("page_token"));
  list.clear_page_token();
  list.set_filter("priority > 3");
  status = api_->ListJobs(Context().get(), list, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("filter: "));
  // More label clauses than a job may have labels (SQLite would refuse the query as too deep).
  std::string many;
  for (int i = 0; i < 1000; ++i) {
    absl::StrAppend(&many, i == 0 ? "" : " AND ", "labels.k", i, " = \"v\"");
  }
  list.set_filter(many);
  status = api_->ListJobs(Context().get(), list, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("filter: more than 64 labels clauses"));
  // A label key CreateJob refuses: no job has it, so the filter is refused rather than empty.
  list.set_filter("labels.Team = \"vision\"");
  status = api_->ListJobs(Context().get(), list, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "filter: label key 'Team' is not one a job can have (1-63 characters of "
            "[a-z0-9_.-/] starting with a lowercase letter) at position 7 (supported: state = "
            "NAME AND labels.KEY = \"VALUE\")");
  list.set_filter("");
  list.set_page_size(-1);
  EXPECT_EQ(api_->ListJobs(Context().get(), list, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Cancel: queued -> CANCELLED; again -> FAILED_PRECONDITION.
  v1::CancelJobRequest cancel;
  cancel.set_name(names[1]);
  ASSERT_TRUE(api_->CancelJob(Context().get(), cancel, &job).ok());
  EXPECT_EQ(job.state(), v1::CANCELLED);
  EXPECT_EQ(api_->CancelJob(Context().get(), cancel, &job).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  cancel.set_name("jobs/nosuchjob");
  EXPECT_EQ(api_->CancelJob(Context().get(), cancel, &job).error_code(),
            grpc::StatusCode::NOT_FOUND);

  // Delete: unfinished -> FAILED_PRECONDITION; finished -> gone.
  google::protobuf::Empty empty;
  v1::DeleteJobRequest del;
  del.set_name(names[0]);
  EXPECT_EQ(api_->DeleteJob(Context().get(), del, &empty).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  del.set_name(names[1]);
  ASSERT_TRUE(api_->DeleteJob(Context().get(), del, &empty).ok());
  get.set_name(names[1]);
  EXPECT_EQ(api_->GetJob(Context().get(), get, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(api_->DeleteJob(Context().get(), del, &empty).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// The services with a small bound on ListJobs responses.
class ListJobsBoundTest : public ServicesTest {
 protected:
  static constexpr int64_t kBound = 64 << 10;

  ListJobsBoundTest() { max_list_response_bytes_ = kBound; }

  // Gives the stored job `name` ("jobs/ID") a report and an error message of about these sizes.
  void Enlarge(const std::string& name, int report_bytes, int error_bytes) {
    absl::StatusOr<Job> job = store_->GetJob(name.substr(5));
    ASSERT_TRUE(job.ok()) << job.status();
    job->report_json = nlohmann::json{{"note", std::string(report_bytes, 'r')}}.dump();
    job->error_message = std::string(error_bytes, 'e');
    ASSERT_TRUE(store_->Write(job->id, &*job, {}).ok());
  }

  // Pages through ListJobs on `api` with `request` until the last page: the responses in order.
  static std::vector<v1::ListJobsResponse> ListAll(v1::CompressionService::Stub* api,
                                                   v1::ListJobsRequest request) {
    std::vector<v1::ListJobsResponse> responses;
    while (responses.size() < 100) {
      v1::ListJobsResponse response;
      grpc::Status status = api->ListJobs(Context().get(), request, &response);
      EXPECT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
      if (!status.ok()) break;
      responses.push_back(response);
      if (response.next_page_token().empty()) break;
      request.set_page_token(response.next_page_token());
    }
    return responses;
  }

  static std::vector<std::string> Names(const std::vector<v1::ListJobsResponse>& responses) {
    std::vector<std::string> names;
    for (const v1::ListJobsResponse& response : responses) {
      for (const v1::Job& job : response.jobs()) names.push_back(job.name());
    }
    return names;
  }
};

// Jobs with large reports and errors are listed in responses that each stay within the bound,
// so a client whose receive limit is the bound reads every page, and each job comes exactly once
// in creation order. A page ends only where the next job would not fit.
TEST_F(ListJobsBoundTest, ResponsesStayWithinTheBoundAndListEveryJobOnce) {
  std::vector<std::string> names;
  std::vector<std::string> vision;
  for (int i = 0; i < 24; ++i) {
    v1::CreateJobRequest request = ValidRequest();
    (*request.mutable_labels())["team"] = i % 3 == 0 ? "nlp" : "vision";
    names.push_back(CreateJob(request).name());
    if (i % 3 != 0) vision.push_back(names.back());
    // From a few bytes to 40 KiB: one job fits a page alone, several small ones share one.
    Enlarge(names.back(), (i * 7919) % (30 << 10), (i % 4) * (10 << 10));
  }
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(static_cast<int>(kBound));
  auto small_channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_),
                                                 grpc::InsecureChannelCredentials(), arguments);
  auto small_api = v1::CompressionService::NewStub(small_channel);

  for (const std::string& filter : {std::string(), std::string("labels.team = \"vision\"")}) {
    SCOPED_TRACE(filter);
    for (int page_size : {0, 5, 1000}) {
      SCOPED_TRACE(page_size);
      v1::ListJobsRequest request;
      request.set_page_size(page_size);
      request.set_filter(filter);
      std::vector<v1::ListJobsResponse> responses = ListAll(small_api.get(), request);
      EXPECT_EQ(Names(responses), filter.empty() ? names : vision);
      int64_t total = 0;
      for (size_t i = 0; i < responses.size(); ++i) {
        const v1::ListJobsResponse& response = responses[i];
        total += static_cast<int64_t>(response.ByteSizeLong());
        EXPECT_LE(static_cast<int64_t>(response.ByteSizeLong()), kBound);
        ASSERT_GT(response.jobs_size(), 0);
        const int full = page_size > 0 ? page_size : 50;
        EXPECT_LE(response.jobs_size(), full);
        // A page that ends before page_size does so because the next job would not fit (give
        // or take the page token, and the store's reading of a page by the jobs' text).
        if (i + 1 < responses.size() && response.jobs_size() < full) {
          v1::ListJobsResponse with_next = response;
          *with_next.add_jobs() = responses[i + 1].jobs(0);
          EXPECT_GT(static_cast<int64_t>(with_next.ByteSizeLong()), kBound - 1024);
        }
      }
      // The jobs take several responses' worth of bytes.
      EXPECT_GT(total, 3 * kBound);
    }
  }
}

// A job larger than the bound comes alone in its response; the jobs around it are still listed
// once.
TEST_F(ListJobsBoundTest, AJobOverTheBoundComesAlone) {
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) {
    names.push_back(CreateJob().name());
    Enlarge(names.back(), i == 3 ? (200 << 10) : (20 << 10), 0);
  }
  v1::ListJobsRequest request;
  request.set_page_size(100);
  std::vector<v1::ListJobsResponse> responses = ListAll(api_.get(), request);
  EXPECT_EQ(Names(responses), names);
  int alone = 0;
  for (const v1::ListJobsResponse& response : responses) {
    if (response.ByteSizeLong() <= static_cast<size_t>(kBound)) continue;
    ASSERT_EQ(response.jobs_size(), 1);
    EXPECT_EQ(response.jobs(0).name(), names[3]);
    EXPECT_GT(response.jobs(0).report_json().size(), size_t{200 << 10});
    ++alone;
  }
  EXPECT_EQ(alone, 1);
}

// Watchers take live events from the scheduler's notifications when they follow what they
// have sent. With events written by concurrent ReportEvents calls (whose notifications may
// arrive out of order), and one watcher that stops reading until the writes end (so that its
// queue fills and it falls back to store reads), every watcher gets every event exactly once,
// in order.
TEST_F(ServicesTest, WatchersOfConcurrentWritesGetEveryEventOnceInOrder) {
  v1::Job job = CreateJob();
  v1::Lease lease = Lease();
  constexpr int kWatchers = 8, kWriters = 4, kCalls = 100, kLines = 5;
  std::vector<std::vector<v1::JobEvent>> seen(kWatchers + 1);
  std::vector<grpc::Status> statuses(kWatchers + 1);
  std::vector<std::thread> watchers;
  for (int w = 0; w < kWatchers; ++w) {
    watchers.emplace_back([&, w] { statuses[w] = Watch(job.name(), 0, &seen[w], 60); });
  }
  absl::Notification writes_done;
  watchers.emplace_back([&] {
    v1::WatchJobRequest request;
    request.set_name(job.name());
    auto context = Context(60);
    auto reader = api_->WatchJob(context.get(), request);
    v1::JobEvent event;
    bool first = true;
    while (reader->Read(&event)) {
      seen[kWatchers].push_back(event);
      if (first) writes_done.WaitForNotification();
      first = false;
    }
    statuses[kWatchers] = reader->Finish();
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      for (int call = 0; call < kCalls; ++call) {
        v1::ReportEventsRequest report;
        report.set_worker_id("w1");
        report.set_job(lease.job());
        report.set_attempt(lease.attempt());
        for (int line = 0; line < kLines; ++line) {
          report.add_event_json(events::Serialize(
              events::Metric("teacher", (t * kCalls + call) * kLines + line, 0, -1,
                             {{"padding_to_fill_flow_control_windows_0123456789", 1.0}})));
        }
        v1::ReportEventsResponse response;
        grpc::Status status = workers_->ReportEvents(Context().get(), report, &response);
        ASSERT_TRUE(status.ok()) << status.error_message();
      }
    });
  }
  for (std::thread& writer : writers) writer.join();
  writes_done.Notify();
  ASSERT_TRUE(Complete(lease, v1::ATTEMPT_SUCCEEDED).ok());
  for (std::thread& watcher : watchers) watcher.join();

  // created, leased, the executor's events, succeeded
  const size_t expected = 2 + kWriters * kCalls * kLines + 1;
  for (int w = 0; w <= kWatchers; ++w) {
    SCOPED_TRACE(w == kWatchers ? "the watcher that paused" : absl::StrCat("watcher ", w));
    EXPECT_TRUE(statuses[w].ok()) << statuses[w].error_message();
    ASSERT_EQ(seen[w].size(), expected);
    for (size_t i = 0; i < seen[w].size(); ++i) {
      ASSERT_EQ(seen[w][i].sequence(), static_cast<int64_t>(i + 1));
    }
    EXPECT_EQ(seen[w].back().state_change().state(), v1::SUCCEEDED);
  }
}

TEST_F(ServicesTest, WorkerFlowWatchFollowsLiveAndResumes) {
  v1::Job job = CreateJob();
  // A watcher that starts before anything happens and follows the job to its end.
  std::vector<v1::JobEvent> live;
  grpc::Status live_status;
  std::thread watcher([&] { live_status = Watch(job.name(), 0, &live); });

  v1::Lease lease = Lease();
  EXPECT_EQ(lease.job(), job.name());
  EXPECT_EQ(lease.attempt(), 1);
  EXPECT_THAT(lease.spec_json(), HasSubstr("\"format\":\"synthetic\""));
  EXPECT_EQ(lease.lease_seconds(), 30);

  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id("w1");
  heartbeat.set_job(lease.job());
  heartbeat.set_attempt(lease.attempt());
  v1::HeartbeatResponse heartbeat_response;
  ASSERT_TRUE(workers_->Heartbeat(Context().get(), heartbeat, &heartbeat_response).ok());
  EXPECT_FALSE(heartbeat_response.cancel_requested());

  v1::ReportEventsRequest report;
  report.set_worker_id("w1");
  report.set_job(lease.job());
  report.set_attempt(lease.attempt());
  report.add_event_json(events::Serialize(events::PhaseStarted("distill")));
  report.add_event_json(
      events::Serialize(events::Metric("distill", 5, 0.5, 0.5, {{"loss", 0.25}})));
  report.add_event_json(events::Serialize(events::Report({{"top1", 0.75}})));
  v1::ReportEventsResponse report_response;
  ASSERT_TRUE(workers_->ReportEvents(Context().get(), report, &report_response).ok());

  v1::Artifact artifact;
  ASSERT_TRUE(
      UploadArtifact(lease, "w1", "model.bin", "weights", Sha256Hex("weights"), &artifact).ok());
  ASSERT_TRUE(Complete(lease, v1::ATTEMPT_SUCCEEDED).ok());
  watcher.join();

  ASSERT_TRUE(live_status.ok()) << live_status.error_message();
  ASSERT_EQ(live.size(), 6u);  // queued, running, phase, metric, artifact, succeeded
  for (size_t i = 0; i < live.size(); ++i) EXPECT_EQ(live[i].sequence(), i + 1);
  EXPECT_EQ(live[0].state_change().state(), v1::QUEUED);
  EXPECT_EQ(live[1].state_change().state(), v1::RUNNING);
  EXPECT_EQ(live[2].phase_started().phase(), "distill");
  EXPECT_EQ(live[2].attempt(), 1);
  EXPECT_EQ(live[3].metric().step(), 5);
  EXPECT_DOUBLE_EQ(live[3].metric().values().at("loss"), 0.25);
  EXPECT_DOUBLE_EQ(live[3].metric().progress(), 0.5);
  EXPECT_EQ(live[4].artifact().name(), "model.bin");
  EXPECT_EQ(live[4].artifact().sha256(), Sha256Hex("weights"));
  EXPECT_EQ(live[5].state_change().state(), v1::SUCCEEDED);

  // Resuming from a sequence gives exactly the rest.
  std::vector<v1::JobEvent> resumed;
  ASSERT_TRUE(Watch(job.name(), 3, &resumed).ok());
  ASSERT_EQ(resumed.size(), 3u);
  EXPECT_EQ(resumed[0].sequence(), 4);

  v1::GetJobRequest get;
  get.set_name(job.name());
  ASSERT_TRUE(api_->GetJob(Context().get(), get, &job).ok());
  EXPECT_EQ(job.state(), v1::SUCCEEDED);
  EXPECT_EQ(job.current_phase(), "distill");
  EXPECT_THAT(job.report_json(), HasSubstr("0.75"));
  ASSERT_EQ(job.artifacts_size(), 1);
  EXPECT_EQ(job.artifacts(0).size_bytes(), 7);
  EXPECT_TRUE(job.has_start_time() && job.has_end_time());
}

// A report_json over 1 MiB, or one that is not a JSON object, is kept as a note saying why; the
// attempt succeeds either way.
TEST_F(ServicesTest, CompleteAttemptKeepsANoteForAReportTooLargeOrNotAnObject) {
  struct Case {
    std::string report;
    std::string kept;
  };
  const std::string big = absl::StrCat(R"({"pad":")", std::string(1 << 20, 'x'), R"("})");
  const std::vector<Case> cases = {
      {big, R"({"report_omitted":{"bytes":1048586,"limit_bytes":1048576,)"
            R"("reason":"larger than a job's record keeps"}})"},
      {R"({"top1": 0.5)",
       R"({"report_omitted":{"bytes":12,"limit_bytes":1048576,"reason":"not a JSON object"}})"},
      {"[1, 2]",
       R"({"report_omitted":{"bytes":6,"limit_bytes":1048576,"reason":"not a JSON object"}})"},
      {R"({"top1": 0.5})", R"({"top1": 0.5})"},
  };
  for (const Case& c : cases) {
    v1::Job job = CreateJob();
    v1::Lease lease = Lease();
    v1::CompleteAttemptRequest request;
    request.set_worker_id("w1");
    request.set_job(lease.job());
    request.set_attempt(lease.attempt());
    request.set_lease_id(lease.lease_id());
    request.set_outcome(v1::ATTEMPT_SUCCEEDED);
    request.set_report_json(c.report);
    v1::CompleteAttemptResponse response;
    ASSERT_TRUE(workers_->CompleteAttempt(Context().get(), request, &response).ok());
    v1::GetJobRequest get;
    get.set_name(job.name());
    ASSERT_TRUE(api_->GetJob(Context().get(), get, &job).ok());
    EXPECT_EQ(job.state(), v1::SUCCEEDED);
    EXPECT_EQ(job.report_json(), c.kept);
  }
}

TEST_F(ServicesTest, WatchHandlesClientCancellation) {
  v1::Job job = CreateJob();
  grpc::ClientContext context;
  v1::WatchJobRequest request;
  request.set_name(job.name());
  auto reader = api_->WatchJob(&context, request);
  v1::JobEvent event;
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.sequence(), 1);
  context.TryCancel();
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // TearDown checks that the reactor unsubscribed.
  std::vector<v1::JobEvent> events;
  EXPECT_EQ(Watch("jobs/nosuchjob", 0, &events).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServicesTest, ReadArtifactInChunksWithOffsetAndSha) {
  v1::Job job = CreateJob();
  v1::Lease lease = Lease();
  std::string data;
  for (int i = 0; i < 2'500'000; ++i) data.push_back(static_cast<char>((i * 7) % 256));
  v1::Artifact artifact;
  ASSERT_TRUE(
      UploadArtifact(lease, "w1", "model.safetensors", data, Sha256Hex(data), &artifact).ok());
  EXPECT_EQ(artifact.sha256(), Sha256Hex(data));

  v1::ReadArtifactRequest request;
  request.set_name(job.name() + "/artifacts/model.safetensors");
  request.set_chunk_size(1 << 20);
  auto context = Context();
  auto reader = api_->ReadArtifact(context.get(), request);
  v1::ReadArtifactResponse chunk;
  std::string received;
  std::vector<int64_t> offsets;
  std::string sha;
  while (reader->Read(&chunk)) {
    offsets.push_back(chunk.offset());
    received += chunk.data();
    if (!chunk.sha256().empty()) {
      sha = chunk.sha256();
      EXPECT_EQ(chunk.size_bytes(), 2'500'000);
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 1 << 20, 2 << 20}));
  EXPECT_EQ(received, data);
  EXPECT_EQ(sha, Sha256Hex(data));
  EXPECT_EQ(Sha256Hex(received), sha);

  // Resuming at an offset.
  request.set_offset(2'000'000);
  request.set_chunk_size(0);
  context = Context();
  reader = api_->ReadArtifact(context.get(), request);
  received.clear();
  while (reader->Read(&chunk)) received += chunk.data();
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(received, data.substr(2'000'000));

  request.set_offset(2'500'001);
  context = Context();
  reader = api_->ReadArtifact(context.get(), request);
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::OUT_OF_RANGE);
  request.set_offset(0);
  request.set_name(job.name() + "/artifacts/missing.bin");
  context = Context();
  reader = api_->ReadArtifact(context.get(), request);
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  request.set_name(job.name() + "/artifacts/../jobs.db");
  context = Context();
  reader = api_->ReadArtifact(context.get(), request);
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServicesTest, UploadArtifactChecksShaAndAttempt) {
  CreateJob();
  v1::Lease lease = Lease();
  v1::Artifact artifact;
  grpc::Status status = UploadArtifact(lease, "w1", "a.bin", "abc", Sha256Hex("abd"), &artifact);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS);
  status = UploadArtifact(lease, "w2", "a.bin", "abc", Sha256Hex("abc"), &artifact);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
  v1::Lease stale = lease;
  stale.set_attempt(7);
  status = UploadArtifact(stale, "w1", "a.bin", "abc", Sha256Hex("abc"), &artifact);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
  status = UploadArtifact(lease, "w1", "../a.bin", "abc", Sha256Hex("abc"), &artifact);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("header.artifact_name"));
}

// An upload retried after compressd recorded it (its answer was lost) is OK and makes no second
// "artifact ready" event; another content under the same name replaces the file and the record,
// with an event of its own.
TEST_F(ServicesTest, UploadArtifactRetriedMakesOneEvent) {
  v1::Job job = CreateJob();
  v1::Lease lease = Lease();
  auto artifact_events = [&] {
    std::vector<std::string> sha256s;
    absl::StatusOr<std::vector<JobEvent>> events =
        store_->ListEvents(job.name().substr(5), 0, 1000);
    EXPECT_TRUE(events.ok()) << events.status();
    if (!events.ok()) return sha256s;
    for (const JobEvent& event : *events) {
      if (event.kind != EventKind::kArtifact) continue;
      sha256s.push_back(nlohmann::json::parse(event.payload_json).at("sha256"));
    }
    return sha256s;
  };
  v1::Artifact artifact;
  for (int i = 0; i < 2; ++i) {
    grpc::Status status =
        UploadArtifact(lease, "w1", "model.bin", "weights", Sha256Hex("weights"), &artifact);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(artifact.sha256(), Sha256Hex("weights"));
    EXPECT_EQ(artifact.size_bytes(), 7);
  }
  EXPECT_THAT(artifact_events(), ::testing::ElementsAre(Sha256Hex("weights")));
  std::string data, sha256;
  ASSERT_TRUE(ReadWholeArtifact(job.name() + "/artifacts/model.bin", &data, &sha256).ok());
  EXPECT_EQ(data, "weights");

  ASSERT_TRUE(
      UploadArtifact(lease, "w1", "model.bin", "better", Sha256Hex("better"), &artifact).ok());
  EXPECT_THAT(artifact_events(), ::testing::ElementsAre(Sha256Hex("weights"), Sha256Hex("better")));
  ASSERT_TRUE(ReadWholeArtifact(job.name() + "/artifacts/model.bin", &data, &sha256).ok());
  EXPECT_EQ(data, "better");
  EXPECT_EQ(sha256, Sha256Hex("better"));
}

TEST_F(ServicesTest, UploadBlobVerifiesShaAndWorkersReadIt) {
  const std::string data(100'000, 'z');
  auto upload = [&](const std::string& sha, v1::Blob* blob) {
    auto context = Context();
    auto writer = api_->UploadBlob(context.get(), blob);
    v1::UploadBlobRequest first;
    first.set_sha256(sha);
    first.set_size_bytes(static_cast<int64_t>(data.size()));
    first.set_data(data.substr(0, 60'000));
    writer->Write(first);
    v1::UploadBlobRequest second;
    second.set_data(data.substr(60'000));
    writer->Write(second);
    writer->WritesDone();
    return writer->Finish();
  };
  v1::Blob blob;
  grpc::Status wrong = upload(Sha256Hex("something else"), &blob);
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_THAT(wrong.error_message(), HasSubstr("sha256"));
  EXPECT_EQ(upload("XYZ", &blob).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(upload(Sha256Hex(data), &blob).ok());
  EXPECT_EQ(blob.sha256(), Sha256Hex(data));
  EXPECT_EQ(blob.size_bytes(), 100'000);

  v1::ReadBlobRequest read;
  read.set_worker_id("w1");
  read.set_sha256(blob.sha256());
  read.set_offset(1000);
  auto context = Context();
  auto reader = workers_->ReadBlob(context.get(), read);
  v1::ReadArtifactResponse chunk;
  std::string received;
  while (reader->Read(&chunk)) received += chunk.data();
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(received, data.substr(1000));
}

// Only an upload's first message may state the sha256 and size: one in a later message (a
// client's integrity check) is refused naming the field and the message, and nothing is stored.
TEST_F(ServicesTest, UploadBlobRefusesASha256OrSizeAfterTheFirstMessage) {
  const std::string data = "teacher weights";
  auto upload = [&](const std::vector<v1::UploadBlobRequest>& messages) {
    auto context = Context();
    v1::Blob blob;
    auto writer = api_->UploadBlob(context.get(), &blob);
    for (const v1::UploadBlobRequest& message : messages) {
      if (!writer->Write(message)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  };
  v1::UploadBlobRequest first;
  first.set_data(data.substr(0, 7));
  v1::UploadBlobRequest wrong_sha;
  wrong_sha.set_sha256(Sha256Hex("something else"));
  wrong_sha.set_data(data.substr(7));
  grpc::Status status = upload({first, wrong_sha});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "sha256: set in message 2 of the upload; only the first message may carry sha256 and "
            "size_bytes, later ones carry data only");

  v1::UploadBlobRequest stated = first;
  stated.set_sha256(Sha256Hex(data));
  v1::UploadBlobRequest rest;
  rest.set_data(data.substr(7));
  v1::UploadBlobRequest sized;
  sized.set_size_bytes(static_cast<int64_t>(data.size()));
  status = upload({stated, rest, sized});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), ::testing::StartsWith("size_bytes: set in message 3 "));
  v1::UploadBlobRequest same_sha = rest;
  same_sha.set_sha256(Sha256Hex(data));
  status = upload({stated, same_sha});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), ::testing::StartsWith("sha256: set in message 2 "));

  // Nothing was stored, and the partial files are gone.
  EXPECT_FALSE(fs::exists(dir_.File("blobs/" + Sha256Hex(data))));
  EXPECT_TRUE(Await([&] { return fs::is_empty(dir_.File("tmp")); }));
  ASSERT_TRUE(upload({stated, rest}).ok());
  EXPECT_TRUE(fs::exists(dir_.File("blobs/" + Sha256Hex(data))));
}

TEST_F(ServicesTest, LeaseJobLongPollsAndRetriesAreFenced) {
  std::thread creator([&] {
    absl::SleepFor(absl::Milliseconds(300));
    CreateJob();
  });
  v1::Lease lease = Lease("w1");  // waits for the job created meanwhile
  creator.join();
  EXPECT_EQ(lease.attempt(), 1);
  v1::CompleteAttemptRequest failed;
  failed.set_worker_id("w1");
  failed.set_job(lease.job());
  failed.set_attempt(1);
  failed.set_outcome(v1::ATTEMPT_FAILED);
  failed.set_retryable(true);
  failed.set_error_code("INTERNAL");
  failed.set_error_message("executor crashed");
  v1::CompleteAttemptResponse response;
  ASSERT_TRUE(workers_->CompleteAttempt(Context().get(), failed, &response).ok());
  v1::Lease retry = Lease("w2");
  EXPECT_EQ(retry.job(), lease.job());
  EXPECT_EQ(retry.attempt(), 2);
  EXPECT_EQ(Complete(lease, v1::ATTEMPT_SUCCEEDED).error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(Complete(retry, v1::ATTEMPT_OUTCOME_UNSPECIFIED, "w2").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // No job: an empty lease after the wait.
  v1::LeaseJobRequest request;
  request.set_worker_id("w3");
  request.set_wait_seconds(1);
  v1::LeaseJobResponse empty;
  absl::Time start = absl::Now();
  ASSERT_TRUE(workers_->LeaseJob(Context().get(), request, &empty).ok());
  EXPECT_FALSE(empty.has_lease());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(900));
  request.clear_worker_id();
  EXPECT_EQ(workers_->LeaseJob(Context().get(), request, &empty).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServicesTest, LeaseJobAnswersBeforeTheClientDeadline) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1500));
  v1::LeaseJobRequest request;
  request.set_worker_id("w1");
  request.set_wait_seconds(20);
  v1::LeaseJobResponse response;
  absl::Time start = absl::Now();
  grpc::Status status = workers_->LeaseJob(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(response.has_lease());
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1500));
}

TEST_F(ServicesTest, LeaseJobCancelledByTheClient) {
  grpc::ClientContext context;
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(200));
    context.TryCancel();
  });
  v1::LeaseJobRequest request;
  request.set_worker_id("w1");
  request.set_wait_seconds(20);
  v1::LeaseJobResponse response;
  EXPECT_EQ(workers_->LeaseJob(&context, request, &response).error_code(),
            grpc::StatusCode::CANCELLED);
  canceller.join();
  // Give the server time to see the cancellation; the withdrawn waiter (or, had a job reached
  // it first, the returned lease) leaves the next job to the next worker, as attempt 1.
  absl::SleepFor(absl::Milliseconds(200));
  v1::Job job = CreateJob();
  v1::Lease lease = Lease("w2");
  EXPECT_EQ(lease.job(), job.name());
  EXPECT_EQ(lease.attempt(), 1);
}

// Every lease carries a lease_id of its own: 32 lowercase hex digits.
TEST_F(ServicesTest, EveryLeaseHasItsOwnLeaseId) {
  CreateJob();
  CreateJob();
  v1::Lease a = Lease("w1");
  v1::Lease b = Lease("w1");
  EXPECT_THAT(a.lease_id(), ::testing::MatchesRegex("[0-9a-f]{32}"));
  EXPECT_THAT(b.lease_id(), ::testing::MatchesRegex("[0-9a-f]{32}"));
  EXPECT_NE(a.lease_id(), b.lease_id());
}

// A lease handed back and given again to the same worker id carries the same attempt number
// (its worker was stopping, or its LeaseJob answer could not be sent): calls naming the earlier
// lease's id are ABORTED and store nothing, calls naming the new one work, and calls naming none
// (older agents) are fenced by attempt and worker id alone.
TEST_F(ServicesTest, CallsOfALeaseHandedBackAndGivenAgainAreAborted) {
  v1::Job job = CreateJob();
  v1::Lease first = Lease("w1");
  v1::CompleteAttemptRequest stopping;
  stopping.set_worker_id("w1");
  stopping.set_job(first.job());
  stopping.set_attempt(first.attempt());
  stopping.set_lease_id(first.lease_id());
  stopping.set_outcome(v1::ATTEMPT_FAILED);
  stopping.set_retryable(true);
  stopping.set_stopping(true);
  v1::CompleteAttemptResponse response;
  ASSERT_TRUE(workers_->CompleteAttempt(Context().get(), stopping, &response).ok());
  v1::Lease second = Lease("w1");
  ASSERT_EQ(second.job(), first.job());
  ASSERT_EQ(second.attempt(), first.attempt());
  EXPECT_NE(second.lease_id(), first.lease_id());

  // The LeaseJob answer of `second` was never sent: it goes back, and `third` takes the attempt.
  ASSERT_TRUE(
      scheduler_->ReturnLease(second.job().substr(5), second.attempt(), {"w1", second.lease_id()})
          .ok());
  v1::Lease third = Lease("w1");
  ASSERT_EQ(third.job(), first.job());
  ASSERT_EQ(third.attempt(), first.attempt());

  const size_t events = StoredEvents(job.name());
  v1::GetJobRequest get;
  get.set_name(job.name());
  for (const v1::Lease* stale : {&first, &second}) {
    grpc::Status status = ReportLog(*stale, "stale");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
    EXPECT_THAT(status.error_message(), HasSubstr("was handed back and the attempt given again"));
    EXPECT_EQ(Heartbeat(*stale).error_code(), grpc::StatusCode::ABORTED);
    v1::Artifact artifact;
    EXPECT_EQ(UploadArtifact(*stale, "w1", "model.bin", "stale", Sha256Hex("stale"), &artifact)
                  .error_code(),
              grpc::StatusCode::ABORTED);
    status = Complete(*stale, v1::ATTEMPT_SUCCEEDED);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
    EXPECT_THAT(status.error_message(), HasSubstr(absl::StrCat("attempt ", stale->attempt())));
    // The first lease's stopping completion, retried because its answer was lost, is answered
    // as the first was and does not requeue the job.
    EXPECT_TRUE(workers_->CompleteAttempt(Context().get(), stopping, &response).ok());
    // Changed, it is a completion of a lease that is gone.
    v1::CompleteAttemptRequest changed = stopping;
    changed.set_error_message("changed");
    EXPECT_EQ(workers_->CompleteAttempt(Context().get(), changed, &response).error_code(),
              grpc::StatusCode::ABORTED);
  }
  EXPECT_EQ(StoredEvents(job.name()), events);
  ASSERT_TRUE(api_->GetJob(Context().get(), get, &job).ok());
  EXPECT_EQ(job.state(), v1::RUNNING);
  EXPECT_EQ(job.artifacts_size(), 0);

  v1::Lease unnamed = third;
  unnamed.clear_lease_id();
  EXPECT_TRUE(Heartbeat(unnamed).ok());
  EXPECT_TRUE(ReportLog(unnamed, "from an agent without lease ids").ok());
  EXPECT_TRUE(ReportLog(third, "current").ok());
  EXPECT_TRUE(Heartbeat(third).ok());
  EXPECT_EQ(StoredEvents(job.name()), events + 2);
  v1::Artifact artifact;
  ASSERT_TRUE(
      UploadArtifact(third, "w1", "model.bin", "weights", Sha256Hex("weights"), &artifact).ok());
  ASSERT_TRUE(Complete(third, v1::ATTEMPT_SUCCEEDED).ok());
  ASSERT_TRUE(api_->GetJob(Context().get(), get, &job).ok());
  EXPECT_EQ(job.state(), v1::SUCCEEDED);
  ASSERT_EQ(job.artifacts_size(), 1);
  EXPECT_EQ(job.artifacts(0).sha256(), Sha256Hex("weights"));
}

// compress-worker retries CompleteAttempt when the answer does not arrive: a repeat of a
// completion that was recorded is OK and records nothing; another outcome is ABORTED.
TEST_F(ServicesTest, RepeatedCompleteAttemptIsOkAndRecordedOnce) {
  v1::Job job = CreateJob();
  v1::Lease lease = Lease("w1");
  v1::CompleteAttemptRequest request;
  request.set_worker_id("w1");
  request.set_job(lease.job());
  request.set_attempt(lease.attempt());
  request.set_lease_id(lease.lease_id());
  request.set_outcome(v1::ATTEMPT_SUCCEEDED);
  request.set_report_json(R"({"top1":0.91})");
  v1::CompleteAttemptResponse response;
  ASSERT_TRUE(workers_->CompleteAttempt(Context().get(), request, &response).ok());
  const size_t events = StoredEvents(job.name());
  grpc::Status repeated = workers_->CompleteAttempt(Context().get(), request, &response);
  EXPECT_TRUE(repeated.ok()) << repeated.error_message();
  EXPECT_EQ(StoredEvents(job.name()), events);
  EXPECT_EQ(Complete(lease, v1::ATTEMPT_FAILED).error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(Complete(lease, v1::ATTEMPT_SUCCEEDED, "w2").error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(StoredEvents(job.name()), events);
  v1::GetJobRequest get;
  get.set_name(job.name());
  ASSERT_TRUE(api_->GetJob(Context().get(), get, &job).ok());
  EXPECT_EQ(job.state(), v1::SUCCEEDED);
}

TEST_F(ServicesTest, HealthIsServing) {
  EXPECT_EQ(HealthStatus(), 1);
  server_->GetHealthCheckService()->SetServingStatus(false);
  EXPECT_EQ(HealthStatus(), 2);
}

// A ReadArtifact stream sends the file it opened to the end, with that file's size and sha256,
// while an upload replaces it; a read started afterwards sends the new one.
TEST_F(ServicesTest, ReadArtifactKeepsReadingTheFileItOpened) {
  v1::Job job = CreateJob();
  v1::Lease lease = Lease();
  std::string first(32 << 20, 'a'), second(32 << 20, 'b');
  for (size_t i = 0; i < first.size(); i += 4096) first[i] = static_cast<char>(i / 4096);
  v1::Artifact artifact;
  ASSERT_TRUE(UploadArtifact(lease, "w1", "model.bin", first, Sha256Hex(first), &artifact).ok());

  v1::ReadArtifactRequest request;
  request.set_name(job.name() + "/artifacts/model.bin");
  request.set_chunk_size(64 << 10);
  auto context = Context(60);
  auto reader = api_->ReadArtifact(context.get(), request);
  v1::ReadArtifactResponse chunk;
  ASSERT_TRUE(reader->Read(&chunk));
  std::string received = chunk.data();
  ASSERT_TRUE(UploadArtifact(lease, "w1", "model.bin", second, Sha256Hex(second), &artifact).ok());
  std::string sha;
  int64_t size = 0;
  while (reader->Read(&chunk)) {
    received += chunk.data();
    if (!chunk.sha256().empty()) {
      sha = chunk.sha256();
      size = chunk.size_bytes();
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(received == first) << "the read mixed two versions of the file";
  EXPECT_EQ(sha, Sha256Hex(first));
  EXPECT_EQ(size, static_cast<int64_t>(first.size()));

  ASSERT_TRUE(ReadWholeArtifact(request.name(), &received, &sha).ok());
  EXPECT_TRUE(received == second);
  EXPECT_EQ(sha, Sha256Hex(second));
}

// An upload of attempt 1 held up in its last step while attempt 1 ends and attempt 2 uploads the
// same artifact: attempt 1's file never replaces attempt 2's, and the file on disk is the one
// recorded.
TEST_F(ServicesTest, StaleAttemptsUploadLeavesTheCurrentFileAlone) {
  v1::Job job = CreateJob();
  v1::Lease first = Lease("w1");
  const std::string stale(100'000, 's'), current(100'000, 'c');
  RenameGate::Get().Arm();
  grpc::Status stale_status;
  std::thread stale_upload([&] {
    v1::Artifact out;
    stale_status = UploadArtifact(first, "w1", "model.bin", stale, Sha256Hex(stale), &out);
  });
  if (!RenameGate::Get().AwaitReached(absl::Seconds(10))) {
    RenameGate::Get().Disarm();  // no rename of a later test may be held up
    stale_upload.join();
    FAIL() << "the upload never reached its rename: " << stale_status.error_message();
  }
  grpc::Status current_status;
  absl::Notification current_done;
  std::thread newer([&] {
    v1::CompleteAttemptRequest failed;
    failed.set_worker_id("w1");
    failed.set_job(first.job());
    failed.set_attempt(first.attempt());
    failed.set_outcome(v1::ATTEMPT_FAILED);
    failed.set_retryable(true);
    v1::CompleteAttemptResponse response;
    EXPECT_TRUE(workers_->CompleteAttempt(Context().get(), failed, &response).ok());
    v1::Lease second = Lease("w2");
    EXPECT_EQ(second.attempt(), 2);
    v1::Artifact out;
    current_status = UploadArtifact(second, "w2", "model.bin", current, Sha256Hex(current), &out);
    current_done.Notify();
  });
  // Attempt 2 finishes meanwhile unless attempt 1's last step keeps it out until it is done.
  current_done.WaitForNotificationWithTimeout(absl::Seconds(2));
  RenameGate::Get().Release();
  newer.join();
  stale_upload.join();
  EXPECT_TRUE(current_status.ok()) << current_status.error_message();

  absl::StatusOr<std::unique_ptr<StoredFile>> on_disk =
      artifacts_->OpenArtifact(job.name().substr(5), "model.bin");
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  EXPECT_TRUE((*on_disk)->Read(0, 1 << 20).value() == current)
      << "attempt 1's upload replaced attempt 2's file";
  std::string received, sha;
  ASSERT_TRUE(ReadWholeArtifact(job.name() + "/artifacts/model.bin", &received, &sha).ok());
  EXPECT_TRUE(received == current);
  EXPECT_EQ(sha, Sha256Hex(current));
}

// UploadArtifact's header errors name the header's fields, as for header.job.
TEST_F(ServicesTest, UploadArtifactHeaderErrorsNameTheHeaderFields) {
  v1::Job job = CreateJob();
  v1::Lease lease = Lease();
  for (int which = 0; which < 2; ++which) {
    v1::Artifact out;
    auto context = Context();
    auto writer = workers_->UploadArtifact(context.get(), &out);
    v1::UploadArtifactRequest header;
    header.mutable_header()->set_worker_id(which == 0 ? "" : "w1");
    header.mutable_header()->set_job(lease.job());
    header.mutable_header()->set_attempt(which == 1 ? 0 : lease.attempt());
    header.mutable_header()->set_lease_id(lease.lease_id());
    header.mutable_header()->set_artifact_name("a.bin");
    writer->Write(header);
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(),
                ::testing::StartsWith(which == 0 ? "header.worker_id:" : "header.attempt:"));
  }
}

// UploadArtifact's header comes in the first message only: a second one is refused naming the
// message, and nothing is stored.
TEST_F(ServicesTest, UploadArtifactRefusesAHeaderAfterTheFirstMessage) {
  v1::Job job = CreateJob();
  v1::Lease lease = Lease();
  v1::Artifact out;
  auto context = Context();
  auto writer = workers_->UploadArtifact(context.get(), &out);
  v1::UploadArtifactRequest header;
  header.mutable_header()->set_worker_id("w1");
  header.mutable_header()->set_job(lease.job());
  header.mutable_header()->set_attempt(lease.attempt());
  header.mutable_header()->set_lease_id(lease.lease_id());
  header.mutable_header()->set_artifact_name("a.bin");
  v1::UploadArtifactRequest data;
  data.set_data("abc");
  v1::UploadArtifactRequest again = header;
  again.mutable_header()->set_sha256(Sha256Hex("abc"));
  for (const v1::UploadArtifactRequest* message : {&header, &data, &again}) {
    if (!writer->Write(*message)) break;
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "header: sent again in message 3 of the upload; only the first message carries the "
            "header, later ones carry data only");
  std::string received;
  std::string sha;
  EXPECT_EQ(ReadWholeArtifact(job.name() + "/artifacts/a.bin", &received, &sha).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// ---- The idle watch while other transfers end: it releases its lock for each TryCancel, and
// transfers found idle in the same sweep may be gone when it takes the lock again.

// Runs `g_on_cancel` (once) when a server context is cancelled on the server side: TryCancel runs
// server interceptors' PRE_SEND_CANCEL hook synchronously, on the idle watch's own thread.
std::function<void()> g_on_cancel;
std::atomic<bool> g_on_cancel_ran{false};

class CancelHookInterceptor : public grpc::experimental::Interceptor {
 public:
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_CANCEL) &&
        !g_on_cancel_ran.exchange(true) && g_on_cancel) {
      g_on_cancel();
    }
    methods->Proceed();
  }
};
class CancelHookFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo*) override {
    return new CancelHookInterceptor;
  }
};

class IdleCancelRaceTest : public FileStreamLimitTest {
 protected:
  IdleCancelRaceTest() {
    max_file_streams_ = 16;
    file_stream_idle_timeout_ = absl::Milliseconds(300);
    configure_server_ = [](grpc::ServerBuilder* builder) {
      std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> f;
      f.push_back(std::make_unique<CancelHookFactory>());
      builder->experimental().SetInterceptorCreators(std::move(f));
    };
  }
};

TEST_F(IdleCancelRaceTest, ATransferEndingWhileAnotherIsCancelledDoesNotCrashTheWatch) {
  v1::Job job = CreateJob();
  v1::Lease lease = Lease();
  std::string data(16 << 20, 'd');
  v1::Artifact artifact;
  ASSERT_TRUE(UploadArtifact(lease, "w1", "model.bin", data, Sha256Hex(data), &artifact).ok());
  ASSERT_TRUE(AwaitNoTransfers());
  // Four reads that take one chunk and stall: they go idle within a few ms of each other, so the
  // watch finds them idle in one sweep.
  constexpr int kReads = 4;
  std::unique_ptr<grpc::ClientContext> contexts[kReads];
  std::unique_ptr<grpc::ClientReader<v1::ReadArtifactResponse>> readers[kReads];
  for (int i = 0; i < kReads; ++i) {
    v1::ReadArtifactRequest request;
    request.set_name(job.name() + "/artifacts/model.bin");
    request.set_chunk_size(64 << 10);
    contexts[i] = Context(60);
    readers[i] = api_->ReadArtifact(contexts[i].get(), request);
    v1::ReadArtifactResponse chunk;
    ASSERT_TRUE(readers[i]->Read(&chunk));
  }
  // While the watch cancels the first, the other clients give up (a deadline, a closed
  // connection): their calls end and give their slots back, erasing them from transfers_.
  g_on_cancel = [&] {
    for (int i = 1; i < kReads; ++i) contexts[i]->TryCancel();
    // Their ends may also wait for this thread (gRPC may run the connection's work inside
    // TryCancel): wait a little, not for the whole time AwaitNoTransfers gives.
    Await([this] { return file_streams_->in_use() <= 1; }, absl::Seconds(1));
  };
  // The watch must not look up the transfers that ended meanwhile (compressd aborted on a
  // map::at of one).
  EXPECT_TRUE(AwaitNoTransfers());
  for (int i = 0; i < kReads; ++i) {
    v1::ReadArtifactResponse chunk;
    while (readers[i]->Read(&chunk)) {
    }
    readers[i]->Finish();
  }
  g_on_cancel = nullptr;
}

}  // namespace
}  // namespace compress::server

// The C library's rename, through RenameGate.
extern "C" int rename(const char* from, const char* to) noexcept {
  compress::server::RenameGate::Get().Pass(to);
  return renameat(AT_FDCWD, from, AT_FDCWD, to);
}
