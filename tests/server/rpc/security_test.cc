// compressd's security through real gRPC on loopback: bearer tokens and roles, tenants, limits,
// deadlines, data roots and token reload (TLS is in tls_test.cc).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/dial.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "compress/v1/worker_service.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/artifact_store.h"
#include "server/core/data_roots.h"
#include "server/core/job_store.h"
#include "server/core/scheduler.h"
#include "server/core/token_table.h"
#include "server/rpc/authenticator.h"
#include "server/rpc/compression_service.h"
#include "server/rpc/security_config.h"
#include "server/rpc/thread_pool.h"
#include "server/rpc/worker_service.h"
#include "tests/common/test_dir.h"
#include "tests/server/rpc/secure_server.h"
#include "worker/events/sha256.h"

namespace compress::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(dir_.File("tokens")) << TokenFileText();
    options_.token_file = dir_.File("tokens");
  }

  void Start() {
    server_ = std::make_unique<SecureServer>(dir_, options_);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    api_ = v1::CompressionService::NewStub(channel_);
    workers_ = v1::WorkerService::NewStub(channel_);
  }

  grpc::Status Create(const std::string& token, const v1::CreateJobRequest& request, v1::Job* job) {
    return api_->CreateJob(Context(token).get(), request, job);
  }

  v1::Job MustCreate(const std::string& token,
                     const v1::CreateJobRequest& request = SyntheticJob()) {
    v1::Job job;
    grpc::Status status = Create(token, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  grpc::Status Get(const std::string& token, const std::string& name, v1::Job* job = nullptr) {
    v1::Job ignored;
    v1::GetJobRequest request;
    request.set_name(name);
    return api_->GetJob(Context(token).get(), request, job != nullptr ? job : &ignored);
  }

  std::vector<std::string> List(const std::string& token) {
    v1::ListJobsRequest request;
    v1::ListJobsResponse response;
    grpc::Status status = api_->ListJobs(Context(token).get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<std::string> names;
    for (const v1::Job& job : response.jobs()) names.push_back(job.name());
    return names;
  }

  grpc::Status UploadBlob(const std::string& token, const std::string& data, v1::Blob* blob) {
    auto context = Context(token);
    auto writer = api_->UploadBlob(context.get(), blob);
    for (size_t offset = 0; offset < data.size(); offset += 1000) {
      v1::UploadBlobRequest chunk;
      chunk.set_data(data.substr(offset, 1000));
      if (!writer->Write(chunk)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  TestDir dir_;
  SecureServer::Options options_;
  std::unique_ptr<SecureServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::CompressionService::Stub> api_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
};

TEST_F(AuthTest, NoOrUnknownTokenIsUnauthenticated) {
  Start();
  v1::Job job;
  EXPECT_EQ(Create("", SyntheticJob(), &job).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Create("not-a-known-token-000000", SyntheticJob(), &job).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  auto context = Context();
  context->AddMetadata("authorization", kAlphaSubmitter);  // no "Bearer "
  EXPECT_EQ(api_->CreateJob(context.get(), SyntheticJob(), &job).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  v1::LeaseJobRequest lease;
  lease.set_worker_id("w1");
  lease.mutable_device()->set_name("cpu");
  v1::LeaseJobResponse response;
  EXPECT_EQ(workers_->LeaseJob(Context().get(), lease, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Streams too.
  v1::WatchJobRequest watch;
  watch.set_name("jobs/0000000000000000");
  auto watch_context = Context();
  auto reader = api_->WatchJob(watch_context.get(), watch);
  v1::JobEvent event;
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  v1::Blob blob;
  EXPECT_EQ(UploadBlob("", "data", &blob).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(AuthTest, RolesArePermissionDeniedOutsideTheirMethods) {
  Start();
  v1::Job job;
  grpc::Status viewer_create = Create(kAlphaViewer, SyntheticJob(), &job);
  EXPECT_EQ(viewer_create.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(viewer_create.error_message(), HasSubstr("role viewer"));
  EXPECT_EQ(Create(kWorker, SyntheticJob(), &job).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::Job created = MustCreate(kAlphaSubmitter);
  EXPECT_TRUE(Get(kAlphaViewer, created.name()).ok());
  v1::CancelJobRequest cancel;
  cancel.set_name(created.name());
  EXPECT_EQ(api_->CancelJob(Context(kAlphaViewer).get(), cancel, &job).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Get(kWorker, created.name()).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  v1::Blob blob;
  EXPECT_EQ(UploadBlob(kAlphaViewer, "data", &blob).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  v1::LeaseJobRequest lease;
  lease.set_worker_id("w1");
  lease.mutable_device()->set_name("cpu");
  lease.set_wait_seconds(0);
  v1::LeaseJobResponse response;
  EXPECT_EQ(workers_->LeaseJob(Context(kAlphaSubmitter).get(), lease, &response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  grpc::Status worker_lease = workers_->LeaseJob(Context(kWorker).get(), lease, &response);
  EXPECT_TRUE(worker_lease.ok()) << worker_lease.error_message();
  EXPECT_TRUE(response.has_lease());
}

TEST_F(AuthTest, TenantsSeeOnlyTheirJobs) {
  Start();
  v1::Job alpha = MustCreate(kAlphaSubmitter);
  v1::Job beta = MustCreate(kBetaSubmitter);

  grpc::Status foreign = Get(kBetaSubmitter, alpha.name());
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::NOT_FOUND);
  // The same answer as for a job that does not exist.
  EXPECT_EQ(foreign.error_message(), absl::StrCat("job '", alpha.name().substr(5), "' not found"));
  EXPECT_EQ(Get(kBetaSubmitter, "jobs/0000000000000000").error_message(),
            "job '0000000000000000' not found");
  EXPECT_EQ(List(kBetaSubmitter), std::vector<std::string>{beta.name()});
  EXPECT_EQ(List(kAlphaViewer), std::vector<std::string>{alpha.name()});
  EXPECT_EQ(List(kAdmin), (std::vector<std::string>{alpha.name(), beta.name()}));

  v1::Job job;
  v1::CancelJobRequest cancel;
  cancel.set_name(alpha.name());
  EXPECT_EQ(api_->CancelJob(Context(kBetaSubmitter).get(), cancel, &job).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(Get(kAlphaViewer, alpha.name(), &job).ok());
  EXPECT_EQ(job.state(), v1::QUEUED) << "beta's cancel must not have touched it";

  v1::WatchJobRequest watch;
  watch.set_name(alpha.name());
  auto watch_context = Context(kBetaSubmitter);
  auto reader = api_->WatchJob(watch_context.get(), watch);
  v1::JobEvent event;
  int events = 0;
  while (reader->Read(&event)) ++events;
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(events, 0);

  v1::ReadArtifactRequest read;
  read.set_name(absl::StrCat(alpha.name(), "/artifacts/model.safetensors"));
  auto read_context = Context(kBetaSubmitter);
  auto chunks = api_->ReadArtifact(read_context.get(), read);
  v1::ReadArtifactResponse chunk;
  while (chunks->Read(&chunk)) {
  }
  grpc::Status read_status = chunks->Finish();
  EXPECT_EQ(read_status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(read_status.error_message(), HasSubstr("job '"));

  v1::DeleteJobRequest remove;
  remove.set_name(alpha.name());
  google::protobuf::Empty empty;
  EXPECT_EQ(api_->DeleteJob(Context(kBetaSubmitter).get(), remove, &empty).error_code(),
            grpc::StatusCode::NOT_FOUND);

  // The admin sees and cancels any tenant's job.
  EXPECT_TRUE(Get(kAdmin, alpha.name()).ok());
  grpc::Status admin_cancel = api_->CancelJob(Context(kAdmin).get(), cancel, &job);
  EXPECT_TRUE(admin_cancel.ok()) << admin_cancel.error_message();
  EXPECT_EQ(job.state(), v1::CANCELLED);
  EXPECT_EQ(server_->store().GetJob(alpha.name().substr(5))->tenant, "alpha");
}

TEST_F(AuthTest, RequestIdsOfTenantsDoNotCollide) {
  Start();
  v1::CreateJobRequest request = SyntheticJob();
  request.set_request_id("nightly-1");
  v1::Job alpha = MustCreate(kAlphaSubmitter, request);
  v1::Job beta = MustCreate(kBetaSubmitter, request);
  EXPECT_NE(alpha.name(), beta.name());
  EXPECT_EQ(MustCreate(kAlphaSubmitter, request).name(), alpha.name());
}

TEST_F(AuthTest, BlobsBelongToTheirUploader) {
  Start();
  v1::Blob blob;
  grpc::Status uploaded = UploadBlob(kAlphaSubmitter, std::string(2500, 'w'), &blob);
  ASSERT_TRUE(uploaded.ok()) << uploaded.error_message();
  v1::CreateJobRequest request = SyntheticJob();
  request.mutable_spec()->mutable_teacher()->set_blob_sha256(blob.sha256());
  v1::Job job;
  grpc::Status beta = Create(kBetaSubmitter, request, &job);
  EXPECT_EQ(beta.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(beta.error_message(), HasSubstr("spec.teacher.blob_sha256"));
  grpc::Status alpha = Create(kAlphaSubmitter, request, &job);
  EXPECT_TRUE(alpha.ok()) << alpha.error_message();
  EXPECT_TRUE(Create(kAdmin, request, &job).ok());
}

TEST_F(AuthTest, QueuedJobsPerTenantAreLimited) {
  options_.max_queued_jobs_per_tenant = 2;
  Start();
  MustCreate(kAlphaSubmitter);
  MustCreate(kAlphaSubmitter);
  v1::Job job;
  grpc::Status third = Create(kAlphaSubmitter, SyntheticJob(), &job);
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(third.error_message(), HasSubstr("tenant 'alpha' has 2 queued jobs"));
  MustCreate(kBetaSubmitter);
}

TEST_F(AuthTest, BlobsOverTheLimitAreResourceExhausted) {
  options_.max_blob_bytes = 3000;
  Start();
  v1::Blob blob;
  EXPECT_TRUE(UploadBlob(kAlphaSubmitter, std::string(3000, 'a'), &blob).ok());
  grpc::Status big = UploadBlob(kAlphaSubmitter, std::string(3001, 'b'), &blob);
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(big.error_message(), HasSubstr("--max_blob_bytes"));
  // A stated size over the limit is refused before any data is stored.
  auto context = Context(kAlphaSubmitter);
  auto writer = api_->UploadBlob(context.get(), &blob);
  v1::UploadBlobRequest first;
  first.set_size_bytes(1 << 30);
  first.set_data("x");
  writer->Write(first);
  writer->WritesDone();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

// A call whose deadline passes while it waits for a pool thread is not served afterwards.
TEST_F(AuthTest, CallsPastTheirDeadlineDoNotRun) {
  Start();
  absl::Notification release;
  absl::BlockingCounter blocked(4);
  for (int i = 0; i < 4; ++i) {
    server_->pool()->Schedule([&] {
      blocked.DecrementCount();
      release.WaitForNotification();
    });
  }
  blocked.Wait();
  auto context = Context(kAlphaSubmitter);
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  v1::Job job;
  grpc::Status late = api_->CreateJob(context.get(), SyntheticJob(), &job);
  EXPECT_EQ(late.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server's deadline is the client's plus the call's transit time: let it pass too before
  // the queued work may run.
  absl::SleepFor(absl::Milliseconds(150));
  release.Notify();
  // The queued work had its chance to run; it must not have created the job.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_TRUE(List(kAdmin).empty());
  EXPECT_EQ(MustCreate(kAlphaSubmitter).state(), v1::QUEUED);
}

TEST_F(AuthTest, HealthChecksNeedNoToken) {
  Start();
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  auto context = Context();
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  auto call = stub.PrepareUnaryCall(context.get(), "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(AuthTest, ReloadReplacesTokensAndKeepsThemWhenTheFileIsBad) {
  Start();
  const std::string fresh = "fresh-token-0000000000001";
  std::ofstream(dir_.File("tokens")) << fresh << " gamma submitter\n";
  ASSERT_TRUE(server_->authenticator()->Reload().ok());
  v1::Job job;
  EXPECT_TRUE(Create(fresh, SyntheticJob(), &job).ok());
  EXPECT_EQ(Create(kAlphaSubmitter, SyntheticJob(), &job).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  std::ofstream(dir_.File("tokens")) << "broken line\n";
  absl::Status bad = server_->authenticator()->Reload();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr(":1:"));
  EXPECT_TRUE(Create(fresh, SyntheticJob(), &job).ok()) << "the previous table stays";
  fs::remove(dir_.File("tokens"));
  EXPECT_EQ(server_->authenticator()->Reload().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Create(fresh, SyntheticJob(), &job).ok());
}

TEST_F(AuthTest, WithoutAuthenticationEveryCallerSeesEverything) {
  options_.token_file.clear();
  Start();
  v1::Job created = MustCreate("");
  EXPECT_TRUE(Get("", created.name()).ok());
  EXPECT_EQ(List(""), std::vector<std::string>{created.name()});
}

class DataRootTest : public AuthTest {
 protected:
  void SetUp() override {
    AuthTest::SetUp();
    fs::create_directories(dir_.File("data/fashion"));
    fs::create_directories(dir_.File("private"));
    fs::create_directory_symlink(dir_.File("private"), dir_.File("data/link-out"));
    options_.data_roots = {dir_.File("data")};
    Start();
  }

  grpc::Status CreateWithDataset(const std::string& path) {
    v1::CreateJobRequest request = SyntheticJob();
    request.mutable_spec()->mutable_dataset()->set_format("fashion_mnist");
    request.mutable_spec()->mutable_dataset()->set_path(path);
    v1::Job job;
    return Create(kAlphaSubmitter, request, &job);
  }
};

TEST_F(DataRootTest, PathsUnderARootAreAccepted) {
  grpc::Status status = CreateWithDataset(dir_.File("data/fashion"));
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(DataRootTest, EscapesAreInvalidArgumentNamingTheField) {
  for (const std::string& path : {dir_.File("data/../private"), dir_.File("data/link-out/x"),
                                  std::string("/etc"), std::string("fashion")}) {
    grpc::Status status = CreateWithDataset(path);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << path;
    EXPECT_THAT(status.error_message(), HasSubstr("spec.dataset.path")) << path;
  }
  v1::CreateJobRequest request = SyntheticJob();
  request.mutable_spec()->mutable_teacher()->set_checkpoint_path(dir_.File("private/t.st"));
  v1::Job job;
  grpc::Status teacher = Create(kAlphaSubmitter, request, &job);
  EXPECT_EQ(teacher.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(teacher.error_message(), HasSubstr("spec.teacher.checkpoint_path"));
}

}  // namespace
}  // namespace compress::server
