// server_bench: compressd's service figures, measured against real processes on loopback.
//
//   server_bench [--sections=create,watch,download,schedule,memory] [sizes, see the flags]
//
// Every section starts its own compressd (--insecure, a data dir under /tmp on the machine's
// disk) and prints one Markdown table on stdout; progress goes to stderr. Sections:
//
//   create    CreateJob at a fixed number of calls in flight (a closed loop over several
//             connections): throughput, p50/p90/p99/max latency, with synchronous=FULL (the
//             default) and NORMAL.
//   watch     N concurrent WatchJob streams of one job while a worker reports M metric events
//             at a fixed rate: events delivered and the lag from ReportEvents to each watcher.
//   download  ReadArtifact of a large artifact (and `compressctl download` of it) against the
//             loopback TCP limit measured by iperf3 in the same run, alternating.
//   schedule  Time from CreateJob to the start of the executor process, with a compress-worker
//             idle in its LeaseJob long-poll (a wrapper executor stamps its start).
//   sha256    SHA-256 throughput, portable code against the processor's SHA extensions.
//   memory    compressd's resident memory with N finished jobs in its store: filled through the
//             API, then a fresh compressd on that store serving ListJobs, GetJob and WatchJob.
//
// Exits 1 when a check fails (a call failed, an event was lost or came out of order, an
// artifact came back different, a job did not finish), so the smoke test in CI catches a broken
// benchmark or a broken server. Missing a target is reported, not an error.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "compress/v1/compression_service.grpc.pb.h"
#include "compress/v1/worker_service.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "tests/faults/fault_processes.h"
#include "worker/events/event.h"
#include "worker/events/sha256.h"
#include "worker/events/stream_memory.h"

ABSL_FLAG(std::string, sections, "create,watch,download,schedule,memory,sha256",
          "Comma-separated sections to run, in this order");
ABSL_FLAG(std::string, compressd, "",
          "The compressd to measure (default: the one built with this benchmark), e.g. an older "
          "build to compare with");
ABSL_FLAG(int, create_jobs, 5000, "create: timed CreateJob calls per sync mode");
ABSL_FLAG(std::string, create_in_flight, "1,8,50,200",
          "create: comma-separated numbers of calls kept in flight, one row each");
ABSL_FLAG(int, create_connections, 4, "create: client connections the calls are spread over");
ABSL_FLAG(int, watchers, 1000, "watch: concurrent WatchJob streams of one job");
ABSL_FLAG(int, watch_events, 100, "watch: metric events the worker reports");
ABSL_FLAG(double, watch_rate, 20, "watch: events reported per second");
ABSL_FLAG(int, download_mib, 1024, "download: artifact size in MiB");
ABSL_FLAG(int, download_repeats, 3, "download: alternating iperf3 / ReadArtifact rounds");
ABSL_FLAG(int, schedule_runs, 30, "schedule: jobs timed from CreateJob to executor start");
ABSL_FLAG(int, memory_jobs, 100000, "memory: finished jobs put in the store");

namespace {

namespace fs = std::filesystem;
namespace v1 = compress::v1;
namespace faults = compress::faults;
namespace events = compress::events;

// ---- reporting ------------------------------------------------------------------------------

int failures = 0;

void Fail(const std::string& what) {
  std::fprintf(stderr, "server_bench: FAILED: %s\n", what.c_str());
  ++failures;
}

void Progress(const std::string& what) { std::fprintf(stderr, "server_bench: %s\n", what.c_str()); }

struct Stats {
  size_t count = 0;
  double p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
};

// Nearest-rank percentiles.
Stats Summarize(std::vector<double> values) {
  Stats stats;
  stats.count = values.size();
  if (values.empty()) return stats;
  std::sort(values.begin(), values.end());
  auto rank = [&](double q) {
    size_t index = static_cast<size_t>(std::ceil(q * values.size()));
    return values[std::min(values.size(), std::max<size_t>(index, 1)) - 1];
  };
  stats.p50 = rank(0.50);
  stats.p90 = rank(0.90);
  stats.p99 = rank(0.99);
  stats.max = values.back();
  double sum = 0;
  for (double v : values) sum += v;
  stats.mean = sum / values.size();
  return stats;
}

std::string Ms(double seconds) { return absl::StrFormat("%.2f ms", seconds * 1e3); }

std::string Mib(int64_t kib) { return absl::StrFormat("%.1f MiB", kib / 1024.0); }

std::string Verdict(bool met) { return met ? "met" : "**not met**"; }

// ---- processes ------------------------------------------------------------------------------

struct ProcMemory {
  int64_t rss_kib = 0;
  int64_t hwm_kib = 0;
};

ProcMemory ReadMemory(pid_t pid) {
  ProcMemory memory;
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() < 2) continue;
    if (fields[0] == "VmRSS:") absl::SimpleAtoi(fields[1], &memory.rss_kib);
    if (fields[0] == "VmHWM:") absl::SimpleAtoi(fields[1], &memory.hwm_kib);
  }
  return memory;
}

// User + system CPU seconds of `pid` so far.
double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<std::string> fields = absl::StrSplit(stat.substr(paren + 2), ' ');
  // After the command come state (field 3) ... utime (14) and stime (15).
  int64_t utime = 0, stime = 0;
  if (fields.size() < 13) return 0;
  absl::SimpleAtoi(fields[11], &utime);
  absl::SimpleAtoi(fields[12], &stime);
  return static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
}

absl::StatusOr<std::unique_ptr<faults::ServerProcess>> StartServer(const std::string& data_dir,
                                                                   std::vector<std::string> flags) {
  faults::ServerOptions options;
  options.binary = absl::GetFlag(FLAGS_compressd);
  options.data_dir = data_dir;
  options.flags = std::move(flags);
  return faults::ServerProcess::Start(options);
}

std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  grpc::ChannelArguments args;
  // A connection of its own: channels with equal arguments would otherwise share one.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

std::chrono::system_clock::time_point Deadline(absl::Duration timeout) {
  return absl::ToChronoTime(absl::Now() + timeout);
}

std::string FindProgram(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// ---- a bench "worker": WorkerService calls made directly ------------------------------------

class BenchWorker {
 public:
  BenchWorker(const std::string& address, std::string worker_id)
      : stub_(v1::WorkerService::NewStub(Connect(address))), worker_id_(std::move(worker_id)) {}

  // The next queued job (waiting at most `wait_seconds`), or nullopt.
  std::optional<v1::Lease> Lease(int wait_seconds) {
    v1::LeaseJobRequest request;
    request.set_worker_id(worker_id_);
    request.mutable_device()->set_name("cpu");
    request.set_wait_seconds(wait_seconds);
    v1::LeaseJobResponse response;
    grpc::ClientContext context;
    context.set_deadline(Deadline(absl::Seconds(wait_seconds + 30)));
    grpc::Status status = stub_->LeaseJob(&context, request, &response);
    if (!status.ok()) {
      Fail(absl::StrCat("LeaseJob: ", status.error_message()));
      return std::nullopt;
    }
    if (!response.has_lease()) return std::nullopt;
    return response.lease();
  }

  // Numbered as compress-worker numbers them (first_line, from 1 within each attempt).
  grpc::Status ReportEvents(const v1::Lease& lease, const std::vector<std::string>& lines) {
    const std::string attempt = absl::StrCat(lease.job(), "/", lease.attempt());
    if (attempt != numbered_attempt_) {
      numbered_attempt_ = attempt;
      lines_sent_ = 0;
    }
    v1::ReportEventsRequest request;
    request.set_worker_id(worker_id_);
    request.set_job(lease.job());
    request.set_attempt(lease.attempt());
    request.set_lease_id(lease.lease_id());
    request.set_first_line(lines_sent_ + 1);
    for (const std::string& line : lines) request.add_event_json(line);
    v1::ReportEventsResponse response;
    grpc::ClientContext context;
    context.set_deadline(Deadline(absl::Seconds(30)));
    grpc::Status status = stub_->ReportEvents(&context, request, &response);
    if (status.ok()) lines_sent_ += static_cast<int64_t>(lines.size());
    return status;
  }

  grpc::Status Succeed(const v1::Lease& lease, const std::string& report_json = "") {
    v1::CompleteAttemptRequest request;
    request.set_worker_id(worker_id_);
    request.set_job(lease.job());
    request.set_attempt(lease.attempt());
    request.set_lease_id(lease.lease_id());
    request.set_outcome(v1::ATTEMPT_SUCCEEDED);
    request.set_report_json(report_json);
    v1::CompleteAttemptResponse response;
    grpc::ClientContext context;
    context.set_deadline(Deadline(absl::Seconds(30)));
    return stub_->CompleteAttempt(&context, request, &response);
  }

  v1::WorkerService::Stub& stub() { return *stub_; }
  const std::string& worker_id() const { return worker_id_; }

 private:
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::string worker_id_;
  std::string numbered_attempt_;  // "jobs/ID/ATTEMPT" whose lines lines_sent_ counts
  int64_t lines_sent_ = 0;
};

// ---- CreateJob load: a closed loop keeping `in_flight` calls running -------------------------

class CreateLoad {
 public:
  struct Result {
    std::vector<double> latencies;  // seconds, successful calls
    std::vector<std::string> names;
    double seconds = 0;
    int errors = 0;
    std::string first_error;
  };

  CreateLoad(const std::vector<std::unique_ptr<v1::CompressionService::Stub>>& stubs,
             v1::CreateJobRequest request)
      : stubs_(stubs), request_(std::move(request)) {}

  Result Run(int total, int in_flight) {
    const int first = std::min(total, in_flight);
    {
      absl::MutexLock lock(&mu_);
      total_ = total;
      started_ = first;
      finished_ = 0;
      result_ = Result();
    }
    const absl::Time start = absl::Now();
    for (int i = 0; i < first; ++i) Launch(i);
    absl::MutexLock lock(&mu_);
    // Also until every call's context is gone: gRPC drops the completion (and the last reference
    // to its Call) after it ran, and a context must not outlive the channel the caller destroys
    // next.
    mu_.Await(absl::Condition(
        +[](CreateLoad* self) { return self->finished_ == self->total_ && self->live_ == 0; },
        this));
    result_.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    return std::move(result_);
  }

 private:
  // Counts a Call from its construction to the end of its destruction (declared first in Call,
  // so destroyed after the context).
  struct LiveCall {
    explicit LiveCall(CreateLoad* load) : owner(load) {
      absl::MutexLock lock(&owner->mu_);
      ++owner->live_;
    }
    ~LiveCall() {
      absl::MutexLock lock(&owner->mu_);
      --owner->live_;
    }
    LiveCall(const LiveCall&) = delete;
    LiveCall& operator=(const LiveCall&) = delete;
    CreateLoad* const owner;
  };
  struct Call {
    explicit Call(CreateLoad* load) : live(load) {}
    LiveCall live;
    grpc::ClientContext context;
    v1::Job job;
    absl::Time start;
  };

  // Starts call number `index`; its completion records the result and starts the next call
  // (decided under the same lock, so nothing touches this object after the last completion).
  void Launch(int index) {
    auto call = std::make_shared<Call>(this);
    call->context.set_deadline(Deadline(absl::Seconds(120)));
    call->start = absl::Now();
    v1::CompressionService::Stub* stub = stubs_[index % stubs_.size()].get();
    stub->async()->CreateJob(
        &call->context, &request_, &call->job, [this, call](grpc::Status status) {
          const double seconds = absl::ToDoubleSeconds(absl::Now() - call->start);
          int next = -1;
          {
            absl::MutexLock lock(&mu_);
            if (status.ok()) {
              result_.latencies.push_back(seconds);
              result_.names.push_back(call->job.name());
            } else if (result_.errors++ == 0) {
              result_.first_error = absl::StrCat(status.error_code(), " ", status.error_message());
            }
            if (started_ < total_) next = started_++;
            ++finished_;
          }
          if (next >= 0) Launch(next);
        });
  }

  const std::vector<std::unique_ptr<v1::CompressionService::Stub>>& stubs_;
  const v1::CreateJobRequest request_;
  absl::Mutex mu_;
  int total_ ABSL_GUARDED_BY(mu_) = 0;
  int started_ ABSL_GUARDED_BY(mu_) = 0;
  int finished_ ABSL_GUARDED_BY(mu_) = 0;
  int live_ ABSL_GUARDED_BY(mu_) = 0;  // Call objects not yet destroyed
  Result result_ ABSL_GUARDED_BY(mu_);
};

std::vector<std::unique_ptr<v1::CompressionService::Stub>> Stubs(const std::string& address,
                                                                 int connections) {
  std::vector<std::unique_ptr<v1::CompressionService::Stub>> stubs;
  for (int i = 0; i < connections; ++i) {
    stubs.push_back(v1::CompressionService::NewStub(Connect(address)));
  }
  return stubs;
}

// ---- create ---------------------------------------------------------------------------------

void CreateSection() {
  const int total = absl::GetFlag(FLAGS_create_jobs);
  const int connections = absl::GetFlag(FLAGS_create_connections);
  std::vector<int> levels;
  for (absl::string_view level : absl::StrSplit(absl::GetFlag(FLAGS_create_in_flight), ',')) {
    int value = 0;
    if (!absl::SimpleAtoi(level, &value) || value < 1) {
      return Fail(absl::StrCat("--create_in_flight: '", level, "' is not a positive integer"));
    }
    levels.push_back(value);
  }
  std::printf("\n### CreateJob: %d calls per row, closed loop over %d connections\n\n", total,
              connections);
  std::printf(
      "| SQLite synchronous | in flight | calls/s | p50 | p90 | p99 | max | "
      "compressd CPU per call | p99 < 10 ms |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (bool full : {true, false}) {
    faults::TempDir dir;
    auto server = StartServer(dir.path(), {"--max_queued_jobs_per_tenant=0",
                                           absl::StrCat("--sync_full=", full ? "true" : "false")});
    if (!server.ok()) return Fail(std::string(server.status().message()));
    auto stubs = Stubs((*server)->address(), connections);
    CreateLoad load(stubs, faults::Client::JobRequest(1));
    for (int in_flight : levels) {
      load.Run(in_flight, in_flight);  // warm-up: connections, prepared statements
      const double cpu_before = CpuSeconds((*server)->pid());
      CreateLoad::Result result = load.Run(total, in_flight);
      const double cpu = CpuSeconds((*server)->pid()) - cpu_before;
      if (result.errors > 0) {
        Fail(absl::StrCat("create: ", result.errors,
                          " CreateJob calls failed, first: ", result.first_error));
      }
      Stats stats = Summarize(result.latencies);
      std::printf("| %s | %d | %.0f | %s | %s | %s | %s | %s | %s |\n", full ? "FULL" : "NORMAL",
                  in_flight, result.latencies.size() / result.seconds, Ms(stats.p50).c_str(),
                  Ms(stats.p90).c_str(), Ms(stats.p99).c_str(), Ms(stats.max).c_str(),
                  Ms(cpu / std::max<size_t>(result.latencies.size(), 1)).c_str(),
                  Verdict(stats.p99 < 0.010).c_str());
      std::fflush(stdout);
    }
  }
}

// ---- watch ----------------------------------------------------------------------------------

class WatchGroup;

class Watcher : public grpc::ClientReadReactor<v1::JobEvent> {
 public:
  Watcher(WatchGroup* group, v1::CompressionService::Stub* stub, const std::string& job);
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

  // Valid once the stream ended.
  const std::vector<double>& lags() const { return lags_; }
  const grpc::Status& status() const { return status_; }
  int out_of_order() const { return out_of_order_; }
  void Cancel() { context_.TryCancel(); }

 private:
  WatchGroup* const group_;
  grpc::ClientContext context_;
  v1::WatchJobRequest request_;
  v1::JobEvent event_;
  int64_t last_sequence_ = 0;
  bool attached_ = false;
  int out_of_order_ = 0;
  std::vector<double> lags_;
  grpc::Status status_;
};

// Counts watchers that received their first event and those whose stream ended.
class WatchGroup {
 public:
  void Attached() {
    absl::MutexLock lock(&mu_);
    ++attached_;
  }
  void Done() {
    absl::MutexLock lock(&mu_);
    ++done_;
  }
  bool AwaitAttached(int n, absl::Duration timeout) { return Await(&attached_, n, timeout); }
  bool AwaitDone(int n, absl::Duration timeout) { return Await(&done_, n, timeout); }

 private:
  bool Await(int* counter, int n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    struct Arg {
      int* counter;
      int n;
    } arg{counter, n};
    return mu_.AwaitWithTimeout(absl::Condition(
                                    +[](Arg* a) { return *a->counter >= a->n; }, &arg),
                                timeout);
  }

  absl::Mutex mu_;
  int attached_ = 0;
  int done_ = 0;
};

Watcher::Watcher(WatchGroup* group, v1::CompressionService::Stub* stub, const std::string& job)
    : group_(group) {
  request_.set_name(job);
  context_.set_deadline(Deadline(absl::Minutes(10)));
  stub->async()->WatchJob(&context_, &request_, this);
  StartRead(&event_);
  StartCall();
}

void Watcher::OnReadDone(bool ok) {
  if (!ok) return;  // OnDone follows.
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  if (event_.sequence() != last_sequence_ + 1) ++out_of_order_;
  last_sequence_ = event_.sequence();
  if (!attached_) {
    attached_ = true;
    group_->Attached();
  }
  if (event_.has_metric()) {
    auto sent = event_.metric().values().find("bench_sent_unix");
    if (sent != event_.metric().values().end()) lags_.push_back(now - sent->second);
  }
  StartRead(&event_);
}

void Watcher::OnDone(const grpc::Status& status) {
  status_ = status;
  group_->Done();
}

void WatchSection() {
  const int watchers = absl::GetFlag(FLAGS_watchers);
  const int count = absl::GetFlag(FLAGS_watch_events);
  const double rate = absl::GetFlag(FLAGS_watch_rate);
  faults::TempDir dir;
  auto server = StartServer(dir.path(), {});
  if (!server.ok()) return Fail(std::string(server.status().message()));
  faults::Client client((*server)->address());
  v1::Job job;
  grpc::Status status = client.CreateJob(faults::Client::JobRequest(1), &job);
  if (!status.ok()) return Fail(absl::StrCat("watch: CreateJob: ", status.error_message()));
  BenchWorker worker((*server)->address(), "bench-worker");
  std::optional<v1::Lease> lease = worker.Lease(5);
  if (!lease) return Fail("watch: no lease for the job");

  // At most 200 streams per connection (compressd allows 256 by default).
  const int connections = (watchers + 199) / 200;
  auto stubs = Stubs((*server)->address(), connections);
  WatchGroup group;
  std::vector<std::unique_ptr<Watcher>> all;
  const absl::Time open_start = absl::Now();
  for (int i = 0; i < watchers; ++i) {
    all.push_back(std::make_unique<Watcher>(&group, stubs[i % connections].get(), job.name()));
  }
  // On a failure the streams are cancelled and awaited: a reactor must outlive its call.
  auto abandon = [&](const std::string& why) {
    Fail(why);
    for (const auto& watcher : all) watcher->Cancel();
    if (!group.AwaitDone(watchers, absl::Seconds(60))) std::abort();
  };
  if (!group.AwaitAttached(watchers, absl::Seconds(120))) {
    return abandon("watch: not every watcher received the stored events within 120 s");
  }
  const double open_seconds = absl::ToDoubleSeconds(absl::Now() - open_start);
  Progress(absl::StrCat("watch: ", watchers, " watchers attached in ", Ms(open_seconds)));

  const double cpu_before = CpuSeconds((*server)->pid());
  std::vector<double> report_latencies;
  const absl::Time start = absl::Now();
  for (int i = 0; i < count; ++i) {
    absl::SleepFor(start + absl::Seconds(i / rate) - absl::Now());
    const double sent = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
    events::Event event = events::Metric("teacher", i + 1, 0, -1, {{"bench_sent_unix", sent}});
    const absl::Time call_start = absl::Now();
    status = worker.ReportEvents(*lease, {events::Serialize(event)});
    report_latencies.push_back(absl::ToDoubleSeconds(absl::Now() - call_start));
    if (!status.ok()) return abandon(absl::StrCat("watch: ReportEvents: ", status.error_message()));
  }
  const absl::Time complete_start = absl::Now();
  status = worker.Succeed(*lease);
  if (!status.ok()) {
    return abandon(absl::StrCat("watch: CompleteAttempt: ", status.error_message()));
  }
  if (!group.AwaitDone(watchers, absl::Seconds(120))) {
    return abandon("watch: not every stream ended within 120 s of the job's end");
  }
  const double close_seconds = absl::ToDoubleSeconds(absl::Now() - complete_start);
  const double cpu = CpuSeconds((*server)->pid()) - cpu_before;

  std::vector<double> lags;
  int64_t delivered = 0;
  int bad_streams = 0;
  for (const auto& watcher : all) {
    delivered += watcher->lags().size();
    lags.insert(lags.end(), watcher->lags().begin(), watcher->lags().end());
    if (!watcher->status().ok() || watcher->out_of_order() > 0 ||
        static_cast<int>(watcher->lags().size()) != count) {
      if (bad_streams++ == 0) {
        Fail(absl::StrCat("watch: a stream ended ", watcher->status().error_code(), " '",
                          watcher->status().error_message(), "' with ", watcher->lags().size(),
                          " of ", count, " metric events and ", watcher->out_of_order(),
                          " out of order"));
      }
    }
  }
  if (bad_streams > 1) Fail(absl::StrCat("watch: ", bad_streams, " streams in all"));
  Stats lag = Summarize(lags);
  Stats report = Summarize(report_latencies);
  std::printf("\n### WatchJob fan-out: %d watchers of one job, %d metric events at %.0f/s\n\n",
              watchers, count, rate);
  std::printf(
      "| delivered | lag p50 | lag p99 | lag max | ReportEvents p50 | all streams ended "
      "after CompleteAttempt | compressd CPU s |\n"
      "| --- | --- | --- | --- | --- | --- | --- |\n");
  std::printf("| %lld of %lld | %s | %s | %s | %s | %s | %.1f |\n",
              static_cast<long long>(delivered), static_cast<long long>(watchers) * count,
              Ms(lag.p50).c_str(), Ms(lag.p99).c_str(), Ms(lag.max).c_str(), Ms(report.p50).c_str(),
              Ms(close_seconds).c_str(), cpu);
  std::fflush(stdout);
}

// ---- download -------------------------------------------------------------------------------

// The artifact's content: a random MiB, each copy stamped with its index.
class ArtifactContent {
 public:
  explicit ArtifactContent(int mib) : mib_(mib), block_(1 << 20, '\0') {
    std::mt19937_64 random(7);
    for (size_t i = 0; i < block_.size(); i += 8) {
      uint64_t value = random();
      std::memcpy(&block_[i], &value, 8);
    }
  }
  int64_t size() const { return static_cast<int64_t>(mib_) << 20; }
  const std::string& Block(int index) {
    std::memcpy(&block_[0], &index, sizeof(index));
    return block_;
  }
  int blocks() const { return mib_; }

 private:
  int mib_;
  std::string block_;
};

// Single-stream loopback TCP throughput in bytes/s, from iperf3 (3 s).
absl::StatusOr<double> IperfBytesPerSecond(const std::string& iperf3) {
  int port = 0;
  {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      close(fd);
      return absl::InternalError("no free port for iperf3");
    }
    port = ntohs(address.sin_port);
    close(fd);
  }
  faults::CommandResult server_result;
  std::thread server([&] {
    server_result = faults::RunCommand(
        {iperf3, "-s", "-1", "-B", "127.0.0.1", "-p", absl::StrCat(port)}, absl::Seconds(60));
  });
  // The client retries until the server listens; a run that reports an error is retried too.
  std::string error = "iperf3 client did not run";
  double bits_per_second = 0;
  for (int attempt = 0; attempt < 100 && bits_per_second == 0; ++attempt) {
    faults::CommandResult client = faults::RunCommand(
        {iperf3, "-c", "127.0.0.1", "-p", absl::StrCat(port), "-t", "3", "-J"}, absl::Seconds(30));
    nlohmann::json report = nlohmann::json::parse(client.out, nullptr, false);
    const nlohmann::json* rate = nullptr;
    if (!report.is_discarded() && report.contains("end") &&
        report["end"].contains("sum_received")) {
      rate = &report["end"]["sum_received"]["bits_per_second"];
    }
    if (client.exit.Succeeded() && rate != nullptr && rate->is_number()) {
      bits_per_second = rate->get<double>();
    } else {
      error = absl::StrCat(
          "iperf3 client: ", client.exit.ToString(), ": ",
          !report.is_discarded() && report.contains("error") ? report["error"].dump() : client.err);
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  server.join();
  if (bits_per_second == 0) return absl::InternalError(error);
  return bits_per_second / 8;
}

void DownloadSection() {
  const std::string iperf3 = FindProgram("iperf3");
  if (iperf3.empty()) return Fail("download: iperf3 is not on PATH (scripts/setup.sh installs it)");
  const std::string compressctl = COMPRESSCTL_BIN;
  const int mib = absl::GetFlag(FLAGS_download_mib);
  const int repeats = absl::GetFlag(FLAGS_download_repeats);
  faults::TempDir dir;
  auto server = StartServer(dir.path(), {});
  if (!server.ok()) return Fail(std::string(server.status().message()));
  const std::string address = (*server)->address();
  faults::Client client(address);
  v1::Job job;
  grpc::Status status = client.CreateJob(faults::Client::JobRequest(1), &job);
  if (!status.ok()) return Fail(absl::StrCat("download: CreateJob: ", status.error_message()));
  BenchWorker worker(address, "bench-worker");
  std::optional<v1::Lease> lease = worker.Lease(5);
  if (!lease) return Fail("download: no lease for the job");

  ArtifactContent content(mib);
  compress::Sha256 hasher;
  for (int i = 0; i < content.blocks(); ++i) hasher.Update(content.Block(i));
  const std::string sha256 = hasher.HexDigest();
  {
    const absl::Time start = absl::Now();
    grpc::ClientContext context;
    context.set_deadline(Deadline(absl::Minutes(10)));
    v1::Artifact stored;
    auto writer = worker.stub().UploadArtifact(&context, &stored);
    v1::UploadArtifactRequest header;
    header.mutable_header()->set_worker_id(worker.worker_id());
    header.mutable_header()->set_job(lease->job());
    header.mutable_header()->set_attempt(lease->attempt());
    header.mutable_header()->set_lease_id(lease->lease_id());
    header.mutable_header()->set_artifact_name("model.bin");
    header.mutable_header()->set_size_bytes(content.size());
    header.mutable_header()->set_sha256(sha256);
    bool written = writer->Write(header);
    for (int i = 0; written && i < content.blocks(); ++i) {
      v1::UploadArtifactRequest chunk;
      chunk.set_data(content.Block(i));
      written = writer->Write(chunk);
    }
    writer->WritesDone();
    status = writer->Finish();
    if (!status.ok())
      return Fail(absl::StrCat("download: UploadArtifact: ", status.error_message()));
    Progress(absl::StrCat("download: uploaded ", mib, " MiB in ",
                          Ms(absl::ToDoubleSeconds(absl::Now() - start))));
  }
  status = worker.Succeed(*lease);
  if (!status.ok())
    return Fail(absl::StrCat("download: CompleteAttempt: ", status.error_message()));

  const std::string artifact = absl::StrCat(job.name(), "/artifacts/model.bin");
  auto stub = v1::CompressionService::NewStub(Connect(address));
  std::vector<double> iperf_rates, read_rates, ctl_rates;
  for (int round = 0; round < repeats; ++round) {
    absl::StatusOr<double> iperf = IperfBytesPerSecond(iperf3);
    if (!iperf.ok()) return Fail(absl::StrCat("download: ", iperf.status().message()));
    iperf_rates.push_back(*iperf);

    // ReadArtifact with the server's default chunk, bytes counted and offsets checked.
    const absl::Time start = absl::Now();
    grpc::ClientContext context;
    context.set_deadline(Deadline(absl::Minutes(10)));
    v1::ReadArtifactRequest request;
    request.set_name(artifact);
    auto reader = stub->ReadArtifact(&context, request);
    v1::ReadArtifactResponse chunk;
    int64_t received = 0;
    std::string final_sha;
    int64_t final_size = -1;
    bool contiguous = true;
    while (reader->Read(&chunk)) {
      if (chunk.offset() != received) contiguous = false;
      received += chunk.data().size();
      if (!chunk.sha256().empty()) {
        final_sha = chunk.sha256();
        final_size = chunk.size_bytes();
      }
    }
    status = reader->Finish();
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (!status.ok() || !contiguous || received != content.size() || final_sha != sha256 ||
        final_size != content.size()) {
      return Fail(absl::StrCat("download: ReadArtifact ended ", status.error_code(), " '",
                               status.error_message(), "' after ", received, " of ", content.size(),
                               " bytes (contiguous ", contiguous, ", sha256 ", final_sha, ")"));
    }
    read_rates.push_back(received / seconds);

    // compressctl download: written to disk and verified.
    const std::string out_dir = dir.File(absl::StrCat("download-", round));
    const absl::Time ctl_start = absl::Now();
    faults::CommandResult ctl =
        faults::RunCommand({compressctl, absl::StrCat("--server=", address), "download", job.name(),
                            "model.bin", "-o", out_dir},
                           absl::Minutes(10));
    const double ctl_seconds = absl::ToDoubleSeconds(absl::Now() - ctl_start);
    std::error_code ec;
    const auto size = fs::file_size(out_dir + "/model.bin", ec);
    if (!ctl.exit.Succeeded() || ec || static_cast<int64_t>(size) != content.size()) {
      return Fail(
          absl::StrCat("download: compressctl download: ", ctl.exit.ToString(), " ", ctl.err));
    }
    ctl_rates.push_back(content.size() / ctl_seconds);
    fs::remove_all(out_dir, ec);
    Progress(
        absl::StrFormat("download round %d: iperf3 %.0f MiB/s, ReadArtifact %.0f MiB/s, "
                        "compressctl %.0f MiB/s",
                        round + 1, *iperf / (1 << 20), read_rates.back() / (1 << 20),
                        ctl_rates.back() / (1 << 20)));
  }
  const double iperf = Summarize(iperf_rates).p50;
  const double read = Summarize(read_rates).p50;
  const double ctl = Summarize(ctl_rates).p50;
  std::printf("\n### Artifact download: %d MiB, median of %d alternating rounds\n\n", mib, repeats);
  std::printf(
      "| loopback TCP (iperf3, 1 stream) | ReadArtifact (1 MiB chunks) | ratio | "
      "compressctl download (to disk, sha256 checked) | ratio | ≥ 50%% |\n"
      "| --- | --- | --- | --- | --- | --- |\n");
  std::printf("| %.0f MiB/s | %.0f MiB/s | %.0f%% | %.0f MiB/s | %.0f%% | %s |\n",
              iperf / (1 << 20), read / (1 << 20), 100 * read / iperf, ctl / (1 << 20),
              100 * ctl / iperf, Verdict(read >= 0.5 * iperf).c_str());
  std::fflush(stdout);
}

// ---- schedule -------------------------------------------------------------------------------

std::vector<int64_t> ReadStamps(const std::string& path) {
  std::vector<int64_t> stamps;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    int64_t micros = 0;
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (!fields.empty() && absl::SimpleAtoi(fields[0], &micros)) stamps.push_back(micros);
  }
  return stamps;
}

void ScheduleSection() {
  const int runs = absl::GetFlag(FLAGS_schedule_runs);
  faults::TempDir dir;
  const std::string stamps = dir.File("stamps");
  setenv("COMPRESS_BENCH_STAMP_FILE", stamps.c_str(), 1);
  setenv("COMPRESS_BENCH_EXEC", FAKE_EXECUTOR_BIN, 1);
  setenv("FAULTS_STEP_MS", "1", 1);
  auto server = StartServer(dir.File("data"), {});
  if (!server.ok()) return Fail(std::string(server.status().message()));
  // The agent's default long-poll (20 s), so that it waits parked in LeaseJob between jobs.
  auto agent = faults::WorkerProcess::Start(
      (*server)->address(), "bench-worker", dir.File("work"),
      {absl::StrCat("--executor=", STAMP_EXEC_BIN), "--lease_wait_seconds=20"});
  if (!agent.ok()) return Fail(std::string(agent.status().message()));
  faults::Client client((*server)->address());

  std::vector<double> create_latencies, start_latencies;
  // Run 0 is a warm-up (the agent's first connection); it is not counted.
  for (int run = 0; run <= runs; ++run) {
    // The agent is back in its long-poll well within this pause after its last job ended.
    absl::SleepFor(absl::Milliseconds(300));
    const absl::Time start = absl::Now();
    v1::Job job;
    grpc::Status status = client.CreateJob(faults::Client::JobRequest(1), &job);
    const absl::Time created = absl::Now();
    if (!status.ok()) return Fail(absl::StrCat("schedule: CreateJob: ", status.error_message()));
    std::vector<int64_t> seen;
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while ((seen = ReadStamps(stamps)).size() < static_cast<size_t>(run + 1) &&
           absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    if (seen.size() < static_cast<size_t>(run + 1)) {
      return Fail(absl::StrCat("schedule: the executor of ", job.name(),
                               " did not start within 30 s; agent: ", (*agent)->StderrTail()));
    }
    v1::Job last;
    if (!client.WaitFor(
            job.name(), [](const v1::Job& j) { return j.state() == v1::SUCCEEDED; },
            absl::Seconds(30), &last)) {
      return Fail(absl::StrCat("schedule: ", job.name(), " did not succeed: state ",
                               v1::JobState_Name(last.state()), " ", last.error_message()));
    }
    if (run == 0) continue;
    create_latencies.push_back(absl::ToDoubleSeconds(created - start));
    start_latencies.push_back(absl::ToDoubleSeconds(absl::FromUnixMicros(seen.back()) - start));
  }
  Stats create = Summarize(create_latencies);
  Stats started = Summarize(start_latencies);
  std::printf("\n### Scheduling latency: CreateJob to executor start, idle worker, %d jobs\n\n",
              runs);
  std::printf(
      "| CreateJob p50 | to executor start p50 | p90 | max | < 100 ms |\n"
      "| --- | --- | --- | --- | --- |\n");
  std::printf("| %s | %s | %s | %s | %s |\n", Ms(create.p50).c_str(), Ms(started.p50).c_str(),
              Ms(started.p90).c_str(), Ms(started.max).c_str(),
              Verdict(started.p50 < 0.100).c_str());
  std::fflush(stdout);
}

// ---- sha256 ---------------------------------------------------------------------------------

// SHA-256 throughput of both implementations on the same buffer: every upload is hashed by
// compressd as it arrives, and every download by compressctl.
void Sha256Section() {
  std::string data(64 << 20, '\0');
  std::mt19937_64 random(5);
  for (size_t i = 0; i < data.size(); i += 8) {
    const uint64_t value = random();
    std::memcpy(&data[i], &value, 8);
  }
  auto rate = [&](compress::Sha256::Implementation implementation, std::string* digest) {
    std::vector<double> rates;
    for (int repeat = 0; repeat < 3; ++repeat) {
      const absl::Time start = absl::Now();
      compress::Sha256 hasher(implementation);
      hasher.Update(data);
      *digest = hasher.HexDigest();
      rates.push_back(data.size() / absl::ToDoubleSeconds(absl::Now() - start));
    }
    return Summarize(rates).p50;
  };
  std::string portable_digest, auto_digest;
  const double portable = rate(compress::Sha256::Implementation::kPortable, &portable_digest);
  const double automatic = rate(compress::Sha256::Implementation::kAuto, &auto_digest);
  if (portable_digest != auto_digest) Fail("sha256: the two implementations disagree");
  std::printf("\n### SHA-256 of 64 MiB in memory, median of 3\n\n");
  std::printf(
      "| portable | default (%s) | ratio |\n| --- | --- | --- |\n",
      compress::Sha256::HardwareAccelerated() ? "SHA extensions" : "portable: no SHA extensions");
  std::printf("| %.0f MiB/s | %.0f MiB/s | %.1fx |\n", portable / (1 << 20), automatic / (1 << 20),
              automatic / portable);
  std::fflush(stdout);
}

// ---- memory ---------------------------------------------------------------------------------

// A report shaped like compress-run's for a four-phase job (about 2 KiB).
std::string SampleReport() {
  nlohmann::json phase = {{"name", "distill"},     {"top1", 0.8873},
                          {"top5", 0.9971},        {"params", 380941},
                          {"macs", 8426496},       {"val_loss", 0.41},
                          {"wall_seconds", 296.1}, {"latency_ms_per_image", 1.02},
                          {"val_samples", 10000},  {"trained_epochs", 2}};
  phase["train_images_per_second"] = 123.16312301722367;
  phase["trained_steps"] = 938;
  phase["shared"] = true;
  phase["sharing"] = {{"attention_transform", true},
                      {"mlp_transform", true},
                      {"group_sizes", nlohmann::json::array({{2}, {2}})}};
  nlohmann::json report = {{"device", "cpu"}, {"threads", 2}, {"wall_seconds", 940.2}};
  report["dataset"] = {{"format", "fashion_mnist"},
                       {"num_classes", 10},
                       {"train_samples", 60000},
                       {"val_samples", 10000}};
  report["input"] = {{"mean", 0.5}, {"scale", 0.00392156862745098}, {"std", 0.5}};
  report["phases"] = nlohmann::json::array({phase, phase, phase, phase});
  report["final"] = phase;
  report["comparison"] = {
      {"macs_reduction", 0.322}, {"params_reduction", 0.286}, {"top1_delta", 0.0088}};
  return report.dump();  // compact, as compress-run's report line carries it
}

void MemorySection() {
  const int total = absl::GetFlag(FLAGS_memory_jobs);
  faults::TempDir dir;
  const std::string data_dir = dir.File("data");
  ProcMemory filled;
  {
    // Filling uses synchronous=NORMAL: the store's content is the same, it is only quicker.
    auto server = StartServer(data_dir, {"--max_queued_jobs_per_tenant=0", "--sync_full=false"});
    if (!server.ok()) return Fail(std::string(server.status().message()));
    auto stubs = Stubs((*server)->address(), 4);
    v1::CreateJobRequest request = faults::Client::JobRequest(1);
    (*request.mutable_labels())["team"] = "vision";
    (*request.mutable_labels())["bench"] = "memory";
    CreateLoad load(stubs, request);
    const absl::Time start = absl::Now();
    CreateLoad::Result created = load.Run(total, 200);
    if (created.errors > 0) {
      return Fail(absl::StrCat("memory: ", created.errors,
                               " CreateJob calls failed, first: ", created.first_error));
    }
    Progress(absl::StrCat("memory: ", total, " jobs created in ",
                          absl::FormatDuration(absl::Now() - start)));
    const std::string report = SampleReport();
    std::atomic<int> completed{0};
    std::atomic<bool> failed{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        BenchWorker worker((*server)->address(), absl::StrCat("bench-worker-", t));
        while (!failed) {
          std::optional<v1::Lease> lease = worker.Lease(0);
          if (!lease) return;
          grpc::Status status = worker.Succeed(*lease, report);
          if (!status.ok()) {
            failed = true;
            return Fail(absl::StrCat("memory: CompleteAttempt: ", status.error_message()));
          }
          if (++completed % 10000 == 0) {
            Progress(absl::StrCat("memory: ", completed.load(), " jobs finished"));
          }
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    if (completed != total) {
      return Fail(absl::StrCat("memory: ", completed.load(), " of ", total, " jobs finished"));
    }
    filled = ReadMemory((*server)->pid());
    Progress(absl::StrCat("memory: store filled in ", absl::FormatDuration(absl::Now() - start)));
  }

  auto server = StartServer(data_dir, {});
  if (!server.ok()) return Fail(std::string(server.status().message()));
  absl::SleepFor(absl::Seconds(1));
  const ProcMemory started = ReadMemory((*server)->pid());
  // Serve the store: every job listed (pages of 1,000), 1,000 GetJob, 100 WatchJob.
  auto stub = v1::CompressionService::NewStub(Connect((*server)->address()));
  std::vector<std::string> names;
  std::string token;
  do {
    grpc::ClientContext context;
    context.set_deadline(Deadline(absl::Seconds(60)));
    v1::ListJobsRequest request;
    request.set_page_size(1000);
    request.set_page_token(token);
    v1::ListJobsResponse response;
    grpc::Status status = stub->ListJobs(&context, request, &response);
    if (!status.ok()) return Fail(absl::StrCat("memory: ListJobs: ", status.error_message()));
    for (const v1::Job& job : response.jobs()) {
      if (job.state() != v1::SUCCEEDED) {
        return Fail(absl::StrCat("memory: ", job.name(), " is ", v1::JobState_Name(job.state())));
      }
      names.push_back(job.name());
    }
    token = response.next_page_token();
  } while (!token.empty());
  if (static_cast<int>(names.size()) != total) {
    return Fail(absl::StrCat("memory: ListJobs gave ", names.size(), " of ", total, " jobs"));
  }
  std::mt19937 random(3);
  for (int i = 0; i < 1000; ++i) {
    grpc::ClientContext context;
    context.set_deadline(Deadline(absl::Seconds(10)));
    v1::GetJobRequest request;
    request.set_name(names[random() % names.size()]);
    v1::Job job;
    grpc::Status status = stub->GetJob(&context, request, &job);
    if (!status.ok()) return Fail(absl::StrCat("memory: GetJob: ", status.error_message()));
  }
  faults::Client client((*server)->address());
  for (int i = 0; i < std::min(100, total); ++i) {
    std::vector<v1::JobEvent> events;
    grpc::Status status =
        client.Watch(names[random() % names.size()], 0, &events, absl::Seconds(10));
    if (!status.ok() || events.size() != 3) {
      return Fail(absl::StrCat("memory: WatchJob ended ", status.error_message(), " with ",
                               events.size(), " events (expected 3)"));
    }
  }
  const ProcMemory served = ReadMemory((*server)->pid());
  std::error_code ec;
  int64_t store_bytes = 0;
  for (const char* file : {"/jobs.db", "/jobs.db-wal"}) {
    auto size = fs::file_size(data_dir + file, ec);
    if (!ec) store_bytes += size;
  }
  std::printf("\n### Resident memory with %d finished jobs (store %.0f MiB on disk)\n\n", total,
              store_bytes / 1048576.0);
  std::printf("| compressd | VmRSS | VmHWM (peak) | < 200 MB |\n| --- | --- | --- | --- |\n");
  std::printf("| after filling the store through the API | %s | %s | %s |\n",
              Mib(filled.rss_kib).c_str(), Mib(filled.hwm_kib).c_str(),
              Verdict(filled.hwm_kib * 1024 < 200e6).c_str());
  std::printf("| restarted on the store, 1 s after start | %s | %s | %s |\n",
              Mib(started.rss_kib).c_str(), Mib(started.hwm_kib).c_str(),
              Verdict(started.hwm_kib * 1024 < 200e6).c_str());
  std::printf("| after listing every job, 1,000 GetJob, 100 WatchJob | %s | %s | %s |\n",
              Mib(served.rss_kib).c_str(), Mib(served.hwm_kib).c_str(),
              Verdict(served.hwm_kib * 1024 < 200e6).c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "server_bench [--sections=create,watch,download,schedule,memory] [sizes]");
  absl::ParseCommandLine(argc, argv);
  compress::ConfigureMallocForStreaming();
  std::printf("## server_bench, %d CPUs, %s\n",
              static_cast<int>(std::thread::hardware_concurrency()),
              absl::FormatTime("%Y-%m-%d %H:%M UTC", absl::Now(), absl::UTCTimeZone()).c_str());
  for (absl::string_view section : absl::StrSplit(absl::GetFlag(FLAGS_sections), ',')) {
    const int before = failures;
    const absl::Time start = absl::Now();
    if (section == "create") {
      CreateSection();
    } else if (section == "watch") {
      WatchSection();
    } else if (section == "download") {
      DownloadSection();
    } else if (section == "schedule") {
      ScheduleSection();
    } else if (section == "memory") {
      MemorySection();
    } else if (section == "sha256") {
      Sha256Section();
    } else {
      Fail(absl::StrCat("--sections: unknown section '", section,
                        "' (expected create, watch, download, schedule, memory, sha256)"));
      continue;
    }
    Progress(
        absl::StrCat(section, ": ", failures == before ? "done" : "FAILED", " in ",
                     absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Seconds(1)))));
  }
  return failures == 0 ? 0 : 1;
}
