// SecureServer: compressd's services on a loopback port with a test's security settings, and
// the tokens and helpers the security tests share.
#ifndef COMPRESS_TESTS_SERVER_RPC_SECURE_SERVER_H_
#define COMPRESS_TESTS_SERVER_RPC_SECURE_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "compress/v1/worker_service.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/core/artifact_store.h"
#include "server/core/data_roots.h"
#include "server/core/job_store.h"
#include "server/core/scheduler.h"
#include "server/rpc/authenticator.h"
#include "server/rpc/compression_service.h"
#include "server/rpc/thread_pool.h"
#include "server/rpc/worker_service.h"
#include "tests/common/test_dir.h"

namespace compress::server {

inline constexpr char kAlphaSubmitter[] = "alpha-submitter-token-0001";
inline constexpr char kAlphaViewer[] = "alpha-viewer-token-000001";
inline constexpr char kBetaSubmitter[] = "beta-submitter-token-00001";
inline constexpr char kAdmin[] = "ops-admin-token-0000000001";
inline constexpr char kWorker[] = "ops-worker-token-000000001";

inline std::string TokenFileText() {
  return absl::StrCat("# test tokens\n", kAlphaSubmitter, " alpha submitter\n", kAlphaViewer,
                      " alpha viewer\n", kBetaSubmitter, " beta submitter\n", kAdmin,
                      " ops admin\n", kWorker, " ops worker\n");
}

// compressd's services on a loopback port, with what a test configures.
class SecureServer {
 public:
  struct Options {
    std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
    // Empty = no authentication.
    std::string token_file;
    int64_t max_queued_jobs_per_tenant = 0;
    int64_t max_blob_bytes = 0;
    std::vector<std::string> data_roots;
  };

  explicit SecureServer(const TestDir& dir, const Options& options) {
    store_ = *JobStore::Open({dir.File("jobs.db")});
    artifacts_ = *ArtifactStore::Open({dir.path()});
    Scheduler::Options scheduler_options;
    scheduler_options.max_queued_jobs_per_tenant = options.max_queued_jobs_per_tenant;
    scheduler_ = *Scheduler::Create(store_.get(), scheduler_options);
    scheduler_->StartBackgroundThread();
    pool_ = std::make_unique<ThreadPool>(4);
    if (!options.token_file.empty()) {
      absl::StatusOr<std::unique_ptr<Authenticator>> auth =
          Authenticator::Create(options.token_file);
      EXPECT_TRUE(auth.ok()) << auth.status();
      if (auth.ok()) authenticator_ = *std::move(auth);
    }
    absl::StatusOr<DataRoots> roots = DataRoots::Create(options.data_roots);
    EXPECT_TRUE(roots.ok()) << roots.status();
    if (roots.ok()) roots_ = *std::move(roots);
    CompressionServiceImpl::Options compression_options;
    compression_options.authenticator = authenticator_.get();
    compression_options.data_roots = &roots_;
    compression_options.max_blob_bytes = options.max_blob_bytes;
    compression_ = std::make_unique<CompressionServiceImpl>(scheduler_.get(), artifacts_.get(),
                                                            pool_.get(), compression_options);
    WorkerServiceImpl::Options worker_options;
    worker_options.authenticator = authenticator_.get();
    worker_ = std::make_unique<WorkerServiceImpl>(scheduler_.get(), artifacts_.get(), pool_.get(),
                                                  worker_options);
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", options.credentials, &port_);
    builder.RegisterService(compression_.get());
    builder.RegisterService(worker_.get());
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_GT(port_, 0);
  }

  ~SecureServer() {
    scheduler_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
    pool_.reset();
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  Authenticator* authenticator() { return authenticator_.get(); }
  ThreadPool* pool() { return pool_.get(); }
  JobStore& store() { return *store_; }

 private:
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Authenticator> authenticator_;
  DataRoots roots_;
  std::unique_ptr<CompressionServiceImpl> compression_;
  std::unique_ptr<WorkerServiceImpl> worker_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

inline std::unique_ptr<grpc::ClientContext> Context(const std::string& token = "") {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  return context;
}

inline v1::CreateJobRequest SyntheticJob() {
  v1::CreateJobRequest request;
  request.mutable_spec()->mutable_dataset()->set_format("synthetic");
  request.mutable_spec()->mutable_teacher()->mutable_train()->set_epochs(1);
  return request;
}

}  // namespace compress::server

#endif  // COMPRESS_TESTS_SERVER_RPC_SECURE_SERVER_H_
