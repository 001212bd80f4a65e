// compressd: the compression job server. Wiring only: flags, the core, the gRPC services, the
// metrics endpoint, local workers, and a graceful stop on SIGTERM/SIGINT. See docs/server.md.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "prometheus/exposer.h"
#include "server/core/artifact_store.h"
#include "server/core/job_store.h"
#include "server/core/local_workers.h"
#include "server/core/metrics.h"
#include "server/core/scheduler.h"
#include "server/rpc/compression_service.h"
#include "server/rpc/metrics_interceptor.h"
#include "server/rpc/thread_pool.h"
#include "server/rpc/worker_service.h"

ABSL_FLAG(std::string, grpc_address, "127.0.0.1:50051",
          "host:port of the gRPC services; port 0 picks a free port (the line 'compressd "
          "listening on HOST:PORT' on stdout gives it)");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "host:port serving Prometheus metrics at /metrics; empty disables");
ABSL_FLAG(std::string, data_dir, "./compressd-data",
          "Directory of the job database, artifacts, blobs and local workers' work dirs");
ABSL_FLAG(int, local_workers, 0, "compress-worker processes to start and keep running");
ABSL_FLAG(std::string, worker_binary, "",
          "The compress-worker executable (default: next to compressd, else on $PATH)");
ABSL_FLAG(std::vector<std::string>, local_worker_flags, {},
          "Extra flags for local workers, comma-separated (e.g. --devices=cpu)");
ABSL_FLAG(int, lease_seconds, 30, "Seconds a worker's lease lasts without a heartbeat");
ABSL_FLAG(int, max_attempts, 3, "Attempts of a job whose request gives none");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(5),
          "On SIGTERM/SIGINT: time in-flight calls get before they are cancelled");
ABSL_FLAG(bool, sync_full, true,
          "SQLite synchronous=FULL (durable across power loss); false = NORMAL");
ABSL_FLAG(int, rpc_threads, 4, "Threads doing the RPCs' store and file work");

namespace {

namespace fs = std::filesystem;
using compress::server::ArtifactStore;
using compress::server::JobStore;
using compress::server::LocalWorkers;
using compress::server::Metrics;
using compress::server::Scheduler;

int Fail(const std::string& what) {
  std::fprintf(stderr, "compressd: %s\n", what.c_str());
  return 1;
}

std::string SelfDirectory() {
  char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return ".";
  path[n] = '\0';
  return fs::path(path).parent_path().string();
}

// compress-worker next to this binary (an install), else the first on $PATH, else the path next
// to this binary (for the error message).
std::string DefaultWorkerBinary() {
  const std::string beside = (fs::path(SelfDirectory()) / "compress-worker").string();
  if (access(beside.c_str(), X_OK) == 0) return beside;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
      std::string candidate = absl::StrCat(dir, "/compress-worker");
      if (access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  return beside;
}

// The host part of "host:port" or "[v6]:port".
std::string HostOf(const std::string& address) {
  size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

// The address local workers dial: a wildcard host becomes loopback.
std::string DialAddress(const std::string& host, int port) {
  if (host == "0.0.0.0" || host.empty()) return absl::StrCat("127.0.0.1:", port);
  if (host == "[::]") return absl::StrCat("[::1]:", port);
  return absl::StrCat(host, ":", port);
}

// Every method the server serves: the two services, health checks and reflection.
std::vector<compress::server::GrpcMethodInfo> ServedMethods() {
  std::vector<compress::server::GrpcMethodInfo> methods = {
      {"grpc.health.v1.Health", "Check", "unary"},
      {"grpc.health.v1.Health", "Watch", "server_stream"}};
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const char* name : {"compress.v1.CompressionService", "compress.v1.WorkerService",
                           "grpc.reflection.v1alpha.ServerReflection"}) {
    if (const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(name)) {
      for (auto& method : compress::server::MethodsOf(*service)) methods.push_back(method);
    }
  }
  return methods;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "compressd [--grpc_address=HOST:PORT] [--metrics_address=HOST:PORT] [--data_dir=DIR] "
      "[--local_workers=N]");
  absl::ParseCommandLine(argc, argv);

  // Block the stop signals in every thread; the main thread waits for them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  std::error_code ec;
  fs::create_directories(data_dir, ec);
  if (ec) return Fail(absl::StrCat("--data_dir: cannot create ", data_dir, ": ", ec.message()));

  absl::StatusOr<std::unique_ptr<JobStore>> store =
      JobStore::Open({(fs::path(data_dir) / "jobs.db").string(), absl::GetFlag(FLAGS_sync_full)});
  if (!store.ok()) return Fail(store.status().ToString());
  absl::StatusOr<std::unique_ptr<ArtifactStore>> artifacts = ArtifactStore::Open({data_dir});
  if (!artifacts.ok()) return Fail(artifacts.status().ToString());

  Metrics metrics;
  Scheduler::Options scheduler_options;
  scheduler_options.lease_duration = absl::Seconds(absl::GetFlag(FLAGS_lease_seconds));
  scheduler_options.default_max_attempts = absl::GetFlag(FLAGS_max_attempts);
  scheduler_options.observer = &metrics;
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
      Scheduler::Create(store->get(), scheduler_options);
  if (!scheduler.ok()) return Fail(scheduler.status().ToString());
  (*scheduler)->StartBackgroundThread();

  auto pool =
      std::make_unique<compress::server::ThreadPool>(std::max(1, absl::GetFlag(FLAGS_rpc_threads)));
  compress::server::CompressionServiceImpl::Options compression_options;
  compression_options.metrics = &metrics;
  compress::server::CompressionServiceImpl compression_service(scheduler->get(), artifacts->get(),
                                                               pool.get(), compression_options);
  compress::server::WorkerServiceImpl::Options worker_options;
  worker_options.metrics = &metrics;
  compress::server::WorkerServiceImpl worker_service(scheduler->get(), artifacts->get(), pool.get(),
                                                     worker_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string grpc_address = absl::GetFlag(FLAGS_grpc_address);
  int port = 0;
  builder.AddListeningPort(grpc_address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&compression_service);
  builder.RegisterService(&worker_service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(
      std::make_unique<compress::server::MetricsInterceptorFactory>(&metrics, ServedMethods()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail(absl::StrCat("--grpc_address: cannot listen on ", grpc_address));
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(true);

  std::unique_ptr<prometheus::Exposer> exposer;
  const std::string metrics_address = absl::GetFlag(FLAGS_metrics_address);
  if (!metrics_address.empty()) {
    // prometheus-cpp reports a failed bind by throwing; this is the edge where it is caught.
    try {
      exposer = std::make_unique<prometheus::Exposer>(metrics_address);
    } catch (const std::exception& e) {
      return Fail(
          absl::StrCat("--metrics_address: cannot listen on ", metrics_address, ": ", e.what()));
    }
    exposer->RegisterCollectable(metrics.registry());
    std::vector<int> ports = exposer->GetListeningPorts();
    std::fprintf(stderr, "compressd: metrics on http://%s:%d/metrics\n",
                 HostOf(metrics_address).c_str(), ports.empty() ? 0 : ports[0]);
  }

  const std::string host = HostOf(grpc_address);
  std::printf("compressd listening on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);

  std::unique_ptr<LocalWorkers> local_workers;
  if (int count = absl::GetFlag(FLAGS_local_workers); count > 0) {
    LocalWorkers::Options options;
    options.binary = absl::GetFlag(FLAGS_worker_binary);
    if (options.binary.empty()) options.binary = DefaultWorkerBinary();
    options.args = {absl::StrCat("--server=", DialAddress(host, port)),
                    absl::StrCat("--work_root=", (fs::path(data_dir) / "work").string())};
    for (const std::string& flag : absl::GetFlag(FLAGS_local_worker_flags)) {
      options.args.push_back(flag);
    }
    options.count = count;
    absl::StatusOr<std::unique_ptr<LocalWorkers>> started = LocalWorkers::Start(options);
    if (!started.ok()) {
      server->Shutdown();
      return Fail(absl::StrCat("--local_workers: ", started.status().message()));
    }
    local_workers = *std::move(started);
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::fprintf(stderr, "compressd: %s received; shutting down\n",
               signal_number == SIGINT ? "SIGINT" : "SIGTERM");

  // Load balancers and health checks see NOT_SERVING first; local workers stop while the
  // server still answers them (they may end their attempts); waiting workers get an empty
  // lease; calls still running after the grace period are cancelled.
  health->SetServingStatus(false);
  if (local_workers != nullptr) local_workers->Stop();
  (*scheduler)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() +
                   absl::ToChronoSeconds(absl::GetFlag(FLAGS_shutdown_grace)));
  server->Wait();
  server.reset();
  pool.reset();
  std::fprintf(stderr, "compressd: stopped\n");
  return 0;
}
