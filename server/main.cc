// compressd: the compression job server. Wiring only: flags, the core, the gRPC services, the
// metrics endpoint, local workers, security (TLS, tokens reloaded on SIGHUP), and a graceful stop
// on SIGTERM/SIGINT. See docs/server.md.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/internal/parse.h"  // WasPresentOnCommandLine
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/exposer.h"
#include "server/core/artifact_store.h"
#include "server/core/data_roots.h"
#include "server/core/job_store.h"
#include "server/core/local_workers.h"
#include "server/core/metrics.h"
#include "server/core/scheduler.h"
#include "server/rpc/authenticator.h"
#include "server/rpc/compression_service.h"
#include "server/rpc/file_stream_limit.h"
#include "server/rpc/keepalive.h"
#include "server/rpc/metrics_interceptor.h"
#include "server/rpc/security_config.h"
#include "server/rpc/thread_pool.h"
#include "server/rpc/worker_service.h"
#include "worker/events/grpc_address.h"
#include "worker/events/program_usage.h"
#include "worker/events/stream_memory.h"

ABSL_FLAG(std::string, grpc_address, "127.0.0.1:50051",
          "host:port of the gRPC services; port 0 picks a free port (the line 'compressd "
          "listening on HOST:PORT' on stdout gives it)");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "host:port serving Prometheus metrics at /metrics; empty disables");
ABSL_FLAG(std::string, data_dir, "./compressd-data",
          "Directory of the job database, artifacts, blobs and local workers' work dirs");
ABSL_FLAG(int, local_workers, 0,
          "compress-worker processes to start and keep running; with more than one, each gets "
          "--device_share=I/N and so its own share of the GPUs");
ABSL_FLAG(std::string, worker_binary, "",
          "The compress-worker executable (default: next to compressd, else on $PATH)");
ABSL_FLAG(std::vector<std::string>, local_worker_flags, {},
          "Extra flags for local workers, comma-separated (e.g. --devices=cpu)");
ABSL_FLAG(absl::Duration, local_worker_stop_grace, absl::Seconds(60),
          "On SIGTERM/SIGINT: time local workers get to stop their executors and hand their "
          "attempts back before SIGKILL; more than their --kill_grace (30s) plus about 20s");
ABSL_FLAG(int, lease_seconds, 30, "Seconds a worker's lease lasts without a heartbeat");
ABSL_FLAG(int, max_attempts, 3, "Attempts of a job whose request gives none");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(5),
          "On SIGTERM/SIGINT: time in-flight calls get before they are cancelled");
ABSL_FLAG(bool, sync_full, true,
          "SQLite synchronous=FULL (durable across power loss); false = NORMAL");
ABSL_FLAG(int, rpc_threads, 4, "Threads doing the RPCs' store and file work");
ABSL_FLAG(bool, insecure, false,
          "Serve without authentication (no token file): every caller may do everything. Only "
          "on a loopback address unless --insecure_allow_remote is given");
ABSL_FLAG(bool, insecure_allow_remote, false,
          "Allow a non-loopback --grpc_address without authentication (--insecure) or without "
          "TLS");
ABSL_FLAG(std::string, token_file, "",
          "Bearer tokens: lines 'TOKEN TENANT ROLE' (roles viewer, submitter, admin, worker; # "
          "comments). Reloaded on SIGHUP; a bad file keeps the old tokens. See docs/server.md");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain of the gRPC port (TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates; set = mutual TLS: clients and workers must present a "
          "certificate signed by one of them");
ABSL_FLAG(std::vector<std::string>, data_root, {},
          "Directory under which dataset and teacher checkpoint paths of job specs must lie; "
          "repeat the flag (or separate with commas) for several. None = any path");
ABSL_FLAG(int64_t, max_message_bytes, 4 << 20, "Largest gRPC message the server accepts");
ABSL_FLAG(int64_t, max_blob_bytes, int64_t{2} << 30,
          "Largest blob UploadBlob accepts (RESOURCE_EXHAUSTED beyond); 0 = no limit");
ABSL_FLAG(int64_t, max_queued_jobs_per_tenant, 1000,
          "CreateJob is RESOURCE_EXHAUSTED while the caller's tenant has this many QUEUED jobs; "
          "0 = no limit");
ABSL_FLAG(int, max_file_streams, 0,
          "Reads and uploads of artifacts and blobs served at once (each holds a file open); "
          "more are RESOURCE_EXHAUSTED. 0 = (open-file limit - 128) / 2, in [16, 4096]");
ABSL_FLAG(absl::Duration, file_stream_idle_timeout, absl::Minutes(5),
          "A file transfer that moves no chunk for this long is cancelled, giving its place "
          "back; 0 = never");
ABSL_FLAG(absl::Duration, keepalive_time, absl::Seconds(60),
          "Ping a connection after this long without a frame from its peer");
ABSL_FLAG(absl::Duration, keepalive_timeout, absl::Seconds(20),
          "Close a connection whose ping has no answer within this long (a peer that vanished)");
ABSL_FLAG(int, max_concurrent_streams, 256,
          "Concurrent calls per client connection (HTTP/2 MAX_CONCURRENT_STREAMS); 0 = gRPC's "
          "default");

namespace {

namespace fs = std::filesystem;
using compress::server::ArtifactStore;
using compress::server::JobStore;
using compress::server::LocalWorkers;
using compress::server::Metrics;
using compress::server::Scheduler;

// Upper bounds of --local_workers and --rpc_threads (processes and threads started at once).
constexpr int kMaxLocalWorkers = 1024;
constexpr int kMaxRpcThreads = 1024;

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
std::string HostOf(const std::string& address) { return compress::server::HostOfAddress(address); }

// Every value of --data_root on the command line, as given: absl keeps only the last of a
// repeated flag, so argv is read here (each value may also hold several roots separated by
// commas; DataRoots::SplitFlagValues splits them).
std::vector<std::string> DataRootFlags(int argc, char** argv) {
  std::vector<std::string> values;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    std::string value;
    if ((arg == "--data_root" || arg == "-data_root") && i + 1 < argc) {
      value = argv[++i];
    } else if (absl::ConsumePrefix(&arg, "--data_root=") ||
               absl::ConsumePrefix(&arg, "-data_root=")) {
      value = std::string(arg);
    } else {
      continue;
    }
    values.push_back(std::move(value));
  }
  return values;
}

// "--flag: must be in [low, high], got VALUE" unless `value` lies in the range.
absl::Status CheckInRange(absl::string_view flag, int64_t value, int64_t low, int64_t high) {
  if (value >= low && value <= high) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(flag, ": must be in [", low, ", ", high, "], got ", value));
}

// "--flag: must be positive, got VALUE" unless `value` is.
absl::Status CheckPositive(absl::string_view flag, int64_t value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(flag, ": must be positive, got ", value));
}

// "--flag: must not be negative, got VALUE" for a flag whose 0 has a meaning of its own.
absl::Status CheckNotNegative(absl::string_view flag, int64_t value) {
  if (value >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(flag, ": must not be negative, got ", value));
}

// The bounds of compressd's flags that docs/server.md states, checked before anything is
// created; the security flags, --data_root and --local_worker_flags are checked by their own
// code. INVALID_ARGUMENT naming the first flag out of its range.
absl::Status CheckFlagRanges() {
  if (absl::Status s = compress::CheckGrpcAddress(
          "--grpc_address", absl::GetFlag(FLAGS_grpc_address), /*allow_unix_socket=*/true);
      !s.ok()) {
    return s;
  }
  if (const std::string metrics = absl::GetFlag(FLAGS_metrics_address); !metrics.empty()) {
    if (absl::Status s = compress::CheckGrpcAddress("--metrics_address", metrics,
                                                    /*allow_unix_socket=*/false);
        !s.ok()) {
      return s;
    }
  }
  if (absl::GetFlag(FLAGS_data_dir).empty()) {
    return absl::InvalidArgumentError("--data_dir: must not be empty");
  }
  const absl::Status checks[] = {
      CheckInRange("--local_workers", absl::GetFlag(FLAGS_local_workers), 0, kMaxLocalWorkers),
      CheckPositive("--lease_seconds", absl::GetFlag(FLAGS_lease_seconds)),
      CheckInRange("--max_attempts", absl::GetFlag(FLAGS_max_attempts), 1,
                   Scheduler::kMaxAttemptsLimit),
      CheckInRange("--rpc_threads", absl::GetFlag(FLAGS_rpc_threads), 1, kMaxRpcThreads),
      CheckInRange("--max_message_bytes", absl::GetFlag(FLAGS_max_message_bytes), 1 << 16, INT_MAX),
      CheckNotNegative("--max_blob_bytes", absl::GetFlag(FLAGS_max_blob_bytes)),
      CheckNotNegative("--max_queued_jobs_per_tenant",
                       absl::GetFlag(FLAGS_max_queued_jobs_per_tenant)),
      CheckNotNegative("--max_file_streams", absl::GetFlag(FLAGS_max_file_streams)),
      CheckNotNegative("--max_concurrent_streams", absl::GetFlag(FLAGS_max_concurrent_streams)),
  };
  for (const absl::Status& status : checks) {
    if (!status.ok()) return status;
  }
  // Durations: the shutdown's deadline is a wall-clock time point, which an unbounded grace
  // would overflow; keepalive settings become gRPC's channel arguments in milliseconds (an int).
  const std::tuple<const char*, absl::Duration, absl::Duration> durations[] = {
      {"--shutdown_grace", absl::GetFlag(FLAGS_shutdown_grace), absl::ZeroDuration()},
      {"--keepalive_time", absl::GetFlag(FLAGS_keepalive_time), absl::Seconds(1)},
      {"--keepalive_timeout", absl::GetFlag(FLAGS_keepalive_timeout), absl::Seconds(1)}};
  for (const auto& [flag, duration, low] : durations) {
    if (duration < low || duration > absl::Hours(24)) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": must be in [",
                                                     absl::FormatDuration(low), ", 24h], got ",
                                                     absl::FormatDuration(duration)));
    }
  }
  if (absl::Duration grace = absl::GetFlag(FLAGS_local_worker_stop_grace);
      grace <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--local_worker_stop_grace: must be positive, got ", absl::FormatDuration(grace)));
  }
  if (absl::Duration idle = absl::GetFlag(FLAGS_file_stream_idle_timeout);
      idle < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--file_stream_idle_timeout: must not be negative, got ", absl::FormatDuration(idle)));
  }
  return absl::OkStatus();
}

// Raises the soft open-file limit to the hard one (each transfer, connection and worker holds
// descriptors; the usual soft limit is 1024) and returns the limit now in force.
long long RaiseOpenFileLimit() {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
  if (limit.rlim_cur != limit.rlim_max) {
    struct rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  if (limit.rlim_cur == RLIM_INFINITY) return 1 << 20;
  return static_cast<long long>(limit.rlim_cur);
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
  compress::SetProgramUsage(
      "compressd",
      "compressd [--grpc_address=HOST:PORT] [--metrics_address=HOST:PORT] [--data_dir=DIR] "
      "[--local_workers=N] (--token_file=FILE [--tls_cert=PEM --tls_key=PEM [--tls_client_ca=PEM]]"
      " | --insecure) [--data_root=DIR]...");
  const std::vector<std::string> data_root_values = DataRootFlags(argc, argv);
  const std::vector<char*> positional = compress::ParseProgramFlags(argc, argv);
  if (absl::Status arguments = compress::CheckNoArguments(positional); !arguments.ok()) {
    return Fail(std::string(arguments.message()));
  }
  if (absl::Status s = CheckFlagRanges(); !s.ok()) return Fail(std::string(s.message()));
  compress::ConfigureMallocForStreaming();
  // Debian's Abseil checks lock order on every Mutex acquisition (a lookup in a global graph:
  // about 5% of compressd's CPU under CreateJob load). The tests keep the check.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Block the stop and reload signals in every thread; the main thread waits for them with
  // sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // A write past a file size limit fails with EFBIG (RESOURCE_EXHAUSTED, as a full disk) instead
  // of killing compressd.
  signal(SIGXFSZ, SIG_IGN);

  compress::server::SecurityConfig security;
  security.address = absl::GetFlag(FLAGS_grpc_address);
  security.insecure = absl::GetFlag(FLAGS_insecure);
  security.allow_remote = absl::GetFlag(FLAGS_insecure_allow_remote);
  security.token_file = absl::GetFlag(FLAGS_token_file);
  security.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  security.tls_key = absl::GetFlag(FLAGS_tls_key);
  security.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (absl::Status s = compress::server::CheckSecurityConfig(security); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      compress::server::MakeServerCredentials(security);
  if (!credentials.ok()) return Fail(std::string(credentials.status().message()));
  std::unique_ptr<compress::server::Authenticator> authenticator;
  if (!security.token_file.empty()) {
    absl::StatusOr<std::unique_ptr<compress::server::Authenticator>> created =
        compress::server::Authenticator::Create(security.token_file);
    if (!created.ok()) {
      return Fail(absl::StrCat("--token_file: ", created.status().message()));
    }
    authenticator = *std::move(created);
  }
  // --data_root from a --flagfile or the environment is not in argv; absl holds its last value,
  // split at the commas.
  std::vector<std::string> data_root_entries = data_root_values;
  // An empty value there reads as no flag; Abseil's parser knows it was given, and
  // SplitFlagValues refuses the empty entry as on the command line.
  if (std::vector<std::string> parsed = absl::GetFlag(FLAGS_data_root);
      data_root_entries.empty() &&
      (!parsed.empty() || absl::flags_internal::WasPresentOnCommandLine("data_root"))) {
    data_root_entries.push_back(absl::StrJoin(parsed, ","));
  }
  absl::StatusOr<std::vector<std::string>> root_paths =
      compress::server::DataRoots::SplitFlagValues(data_root_entries);
  if (!root_paths.ok()) return Fail(std::string(root_paths.status().message()));
  absl::StatusOr<compress::server::DataRoots> data_roots =
      compress::server::DataRoots::Create(*root_paths);
  if (!data_roots.ok()) return Fail(std::string(data_roots.status().message()));
  const int64_t max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  const long long open_files = RaiseOpenFileLimit();
  int max_file_streams = absl::GetFlag(FLAGS_max_file_streams);
  if (max_file_streams == 0) {
    max_file_streams = compress::server::FileStreamLimit::DefaultMax(open_files);
  }
  if (absl::Status s = LocalWorkers::CheckArgs(absl::GetFlag(FLAGS_local_worker_flags),
                                               absl::GetFlag(FLAGS_local_workers));
      !s.ok()) {
    return Fail(std::string(s.message()));
  }

  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  std::error_code ec;
  fs::create_directories(data_dir, ec);
  if (ec) return Fail(absl::StrCat("--data_dir: cannot create ", data_dir, ": ", ec.message()));

  absl::StatusOr<std::unique_ptr<JobStore>> store =
      JobStore::Open({(fs::path(data_dir) / "jobs.db").string(), absl::GetFlag(FLAGS_sync_full)});
  if (!store.ok()) return Fail(store.status().ToString());
  absl::StatusOr<std::unique_ptr<ArtifactStore>> artifacts = ArtifactStore::Open({data_dir});
  if (!artifacts.ok()) return Fail(artifacts.status().ToString());
  // Files of jobs deleted while removing them failed, or with a crash between the job's record
  // and its files. Harmless where they cannot be removed now: compressd starts anyway.
  std::vector<std::string> orphans_removed;
  absl::Status swept = (*artifacts)
                           ->RemoveJobsWithout(
                               [&store](const std::string& job_id) -> absl::StatusOr<bool> {
                                 absl::StatusOr<compress::server::Job> job =
                                     (*store)->GetJob(job_id);
                                 if (job.ok()) return true;
                                 if (absl::IsNotFound(job.status())) return false;
                                 return job.status();
                               },
                               &orphans_removed);
  for (const std::string& job_id : orphans_removed) {
    std::fprintf(stderr, "compressd: removed %s/artifacts/%s/, files of a deleted job\n",
                 data_dir.c_str(), job_id.c_str());
  }
  if (!swept.ok()) {
    std::fprintf(stderr, "compressd: warning: files of deleted jobs kept: %s\n",
                 swept.ToString().c_str());
  }

  Metrics metrics;
  Scheduler::Options scheduler_options;
  scheduler_options.lease_duration = absl::Seconds(absl::GetFlag(FLAGS_lease_seconds));
  scheduler_options.default_max_attempts = absl::GetFlag(FLAGS_max_attempts);
  scheduler_options.observer = &metrics;
  scheduler_options.max_queued_jobs_per_tenant = absl::GetFlag(FLAGS_max_queued_jobs_per_tenant);
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
      Scheduler::Create(store->get(), scheduler_options);
  if (!scheduler.ok()) return Fail(scheduler.status().ToString());
  (*scheduler)->StartBackgroundThread();

  compress::server::FileStreamLimit::Options file_stream_options;
  file_stream_options.max = max_file_streams;
  file_stream_options.metrics = &metrics;
  if (absl::Duration idle = absl::GetFlag(FLAGS_file_stream_idle_timeout);
      idle > absl::ZeroDuration()) {
    file_stream_options.idle_timeout = idle;
  }
  compress::server::FileStreamLimit file_streams(file_stream_options);

  auto pool = std::make_unique<compress::server::ThreadPool>(absl::GetFlag(FLAGS_rpc_threads));
  compress::server::CompressionServiceImpl::Options compression_options;
  compression_options.metrics = &metrics;
  compression_options.authenticator = authenticator.get();
  compression_options.file_streams = &file_streams;
  compression_options.data_roots = &*data_roots;
  compression_options.max_blob_bytes = absl::GetFlag(FLAGS_max_blob_bytes);
  // Chunks of ReadArtifact stay under the message limit clients are likely to keep.
  compression_options.max_chunk_bytes =
      std::min<int64_t>(compression_options.max_chunk_bytes, max_message_bytes - 4096);
  compression_options.default_chunk_bytes = std::min<int64_t>(
      compression_options.default_chunk_bytes, compression_options.max_chunk_bytes);
  // ListJobs responses too: under gRPC's default limit and under --max_message_bytes.
  compression_options.max_list_response_bytes =
      std::min<int64_t>(compression_options.max_list_response_bytes, max_message_bytes - 4096);
  compress::server::CompressionServiceImpl compression_service(scheduler->get(), artifacts->get(),
                                                               pool.get(), compression_options);
  compress::server::WorkerServiceImpl::Options worker_options;
  worker_options.metrics = &metrics;
  worker_options.authenticator = authenticator.get();
  worker_options.file_streams = &file_streams;
  worker_options.chunk_bytes =
      std::min<int64_t>(worker_options.chunk_bytes, max_message_bytes - 4096);
  compress::server::WorkerServiceImpl worker_service(scheduler->get(), artifacts->get(), pool.get(),
                                                     worker_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<prometheus::Exposer> exposer;
  const std::string metrics_address = absl::GetFlag(FLAGS_metrics_address);
  // Bound before the gRPC server starts: a failure past that point would have to end calls that
  // clients opened meanwhile.
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

  grpc::ServerBuilder builder;
  const std::string grpc_address = absl::GetFlag(FLAGS_grpc_address);
  int port = 0;
  builder.AddListeningPort(grpc_address, *credentials, &port);
  // gRPC sets SO_REUSEPORT by default: a second compressd on the same address would start too and
  // the kernel would split the connections (and so the jobs) between the two.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
  compress::server::ApplyKeepalive(
      {absl::GetFlag(FLAGS_keepalive_time), absl::GetFlag(FLAGS_keepalive_timeout)}, &builder);
  if (int streams = absl::GetFlag(FLAGS_max_concurrent_streams); streams > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, streams);
  }
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
  // The whole server ("") and each service by its full name; SetServingStatus(false) at shutdown
  // turns them all.
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(true);
  for (const char* service : {compress::v1::CompressionService::service_full_name(),
                              compress::v1::WorkerService::service_full_name()}) {
    health->SetServingStatus(service, true);
  }

  const std::string host = HostOf(grpc_address);
  std::fprintf(stderr, "compressd: %s, %s%s%s\n", security.tls() ? "TLS" : "plaintext",
               authenticator != nullptr
                   ? absl::StrCat(authenticator->size(), " bearer tokens").c_str()
                   : "no authentication (--insecure)",
               security.tls_client_ca.empty() ? "" : ", client certificates required",
               data_roots->empty() ? ", job spec paths unrestricted (no --data_root)" : "");
  std::fprintf(stderr, "compressd: up to %d file transfers at once (open-file limit %lld)\n",
               file_streams.max(), open_files);
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
    options.stop_grace = absl::GetFlag(FLAGS_local_worker_stop_grace);
    absl::StatusOr<std::unique_ptr<LocalWorkers>> started = LocalWorkers::Start(options);
    if (!started.ok()) {
      // As at a shutdown without a grace period: calls opened meanwhile (a watch, a worker's
      // long poll) end now instead of holding the exit up.
      (*scheduler)->Shutdown();
      server->Shutdown(std::chrono::system_clock::now());
      server->Wait();
      return Fail(absl::StrCat("--local_workers: ", started.status().message()));
    }
    local_workers = *std::move(started);
  }

  int signal_number = 0;
  while (true) {
    sigwait(&stop_signals, &signal_number);
    if (signal_number != SIGHUP) break;
    if (authenticator == nullptr) {
      std::fprintf(stderr, "compressd: SIGHUP received; no --token_file to reload\n");
      continue;
    }
    if (absl::Status s = authenticator->Reload(); !s.ok()) {
      std::fprintf(stderr, "compressd: SIGHUP: keeping the previous %d tokens: %s\n",
                   authenticator->size(), std::string(s.message()).c_str());
    } else {
      std::fprintf(stderr, "compressd: SIGHUP: reloaded %s: %d tokens\n",
                   security.token_file.c_str(), authenticator->size());
    }
  }
  std::fprintf(stderr, "compressd: %s received; shutting down\n",
               signal_number == SIGINT ? "SIGINT" : "SIGTERM");

  // New jobs and leases are refused (UNAVAILABLE), waiting workers get an empty lease and open
  // watches end UNAVAILABLE once they have sent what is stored; then health checks see
  // NOT_SERVING (so a client that saw it is refused too); local workers stop while the server
  // still answers them, so they hand their attempts back (requeued, resumed after a restart);
  // calls still running after the grace period are cancelled.
  (*scheduler)->Shutdown();
  health->SetServingStatus(false);
  if (local_workers != nullptr) local_workers->Stop();
  server->Shutdown(std::chrono::system_clock::now() +
                   absl::ToChronoSeconds(absl::GetFlag(FLAGS_shutdown_grace)));
  server->Wait();
  server.reset();
  pool.reset();
  std::fprintf(stderr, "compressd: stopped\n");
  return 0;
}
