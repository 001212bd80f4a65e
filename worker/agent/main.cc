// compress-worker: the worker agent. Dials compressd, leases jobs for its devices and runs each
// with the executor (compress-run). Stops gracefully on SIGTERM or SIGINT.
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "worker/agent/agent.h"
#include "worker/agent/devices.h"
#include "worker/events/program_usage.h"
#include "worker/events/stream_memory.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051",
          "compressd's address: HOST:PORT, [IPV6]:PORT (PORT in [0, 65535]) or unix:PATH");
ABSL_FLAG(std::string, devices, "auto",
          "Devices to offer: auto (every GPU nvidia-smi lists, or those CUDA_VISIBLE_DEVICES "
          "names when set, else cpu), or a comma-separated list of cpu and cuda:N (with "
          "CUDA_VISIBLE_DEVICES set, cuda:N is its Nth entry)");
ABSL_FLAG(std::string, device_share, "",
          "I/N: offer only this agent's share of the GPUs --devices=auto finds, those at "
          "positions I, I+N, I+2N, ... (cpu when none), so that N agents on one machine never "
          "offer the same GPU; compressd --local_workers=N sets it");
ABSL_FLAG(std::string, work_root, "",
          "Directory of the jobs' work dirs (default: $TMPDIR or /tmp, then compress-worker)");
ABSL_FLAG(std::string, executor, "",
          "The executor, an executable file (default: compress-run next to this binary)");
ABSL_FLAG(std::string, worker_id, "",
          "This worker's id, 1-128 printable ASCII characters without spaces (default: "
          "HOSTNAME-PID)");
ABSL_FLAG(int, threads, 0,
          "CPU threads per executor, passed as --threads; in [0, 1024] (0 = its default)");
ABSL_FLAG(int, lease_wait_seconds, 20, "LeaseJob long-poll wait in seconds, in [0, 30]");
ABSL_FLAG(absl::Duration, kill_grace, absl::Seconds(30),
          "Time between SIGTERM and SIGKILL when an executor is stopped, in [0s, 1h]");
ABSL_FLAG(bool, keep_work_dirs, false,
          "Keep work dirs of finished jobs (until --work_dir_retention removes them)");
ABSL_FLAG(absl::Duration, work_dir_retention, absl::Hours(72),
          "Remove work dirs under --work_root that no attempt or executor uses and that were not "
          "modified for this long (checked at start, then hourly, or every --work_dir_retention "
          "when shorter); 0 keeps them for ever");
ABSL_FLAG(std::string, token_file, "", "File holding the bearer token (a token of role worker)");
ABSL_FLAG(bool, tls, false, "Dial with TLS, verifying the server with the system's CAs");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA certificates that verify the server (implies --tls)");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, for mutual TLS (implies --tls)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name the server's certificate must carry, when it differs from --server's host");

namespace {

std::string SelfDirectory() {
  char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return ".";
  path[n] = '\0';
  return std::filesystem::path(path).parent_path().string();
}

std::string DefaultWorkerId() {
  char host[256] = "worker";
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, "-", getpid());
}

std::string DefaultWorkRoot() {
  const char* tmp = std::getenv("TMPDIR");
  std::string base = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  return (std::filesystem::path(base) / "compress-worker").string();
}

}  // namespace

int main(int argc, char** argv) {
  compress::SetProgramUsage(
      "compress-worker",
      "compress-worker [--server=HOST:PORT] [--devices=auto|cpu,cuda:N] [--work_root=DIR] "
      "[--executor=PATH] [--token_file=F] [--tls_ca=CA.pem [--tls_cert=C --tls_key=K]]");
  const std::vector<char*> positional = compress::ParseProgramFlags(argc, argv);
  if (absl::Status arguments = compress::CheckNoArguments(positional); !arguments.ok()) {
    std::fprintf(stderr, "compress-worker: %s\n", arguments.ToString().c_str());
    return 1;
  }
  compress::ConfigureMallocForStreaming();

  // Every thread inherits this mask; one thread waits for the signals (the executors get the
  // default mask back when they are started).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<compress::worker::DeviceShare> share =
      compress::worker::ParseDeviceShare(absl::GetFlag(FLAGS_device_share));
  if (!share.ok()) {
    std::fprintf(stderr, "compress-worker: %s\n", share.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::vector<compress::v1::Device>> devices =
      compress::worker::ParseDevices(absl::GetFlag(FLAGS_devices), *share);
  if (!devices.ok()) {
    std::fprintf(stderr, "compress-worker: %s\n", devices.status().ToString().c_str());
    return 1;
  }

  compress::worker::Agent::Options options;
  options.server = absl::GetFlag(FLAGS_server);
  options.security.tls = absl::GetFlag(FLAGS_tls);
  options.security.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  options.security.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.security.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.security.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    absl::StatusOr<std::string> token =
        compress::client::ReadTokenFile("--token_file", absl::GetFlag(FLAGS_token_file));
    if (!token.ok()) {
      std::fprintf(stderr, "compress-worker: %s\n", token.status().ToString().c_str());
      return 1;
    }
    options.security.token = *std::move(token);
  }
  options.worker_id = absl::GetFlag(FLAGS_worker_id);
  if (options.worker_id.empty()) options.worker_id = DefaultWorkerId();
  options.devices = *devices;
  options.lease_wait_seconds = absl::GetFlag(FLAGS_lease_wait_seconds);
  options.attempt.executor_path = absl::GetFlag(FLAGS_executor);
  if (options.attempt.executor_path.empty()) {
    options.attempt.executor_path = SelfDirectory() + "/compress-run";
  }
  options.attempt.work_root = absl::GetFlag(FLAGS_work_root);
  if (options.attempt.work_root.empty()) options.attempt.work_root = DefaultWorkRoot();
  options.attempt.executor_threads = absl::GetFlag(FLAGS_threads);
  options.attempt.kill_grace = absl::GetFlag(FLAGS_kill_grace);
  options.attempt.remove_finished_work_dirs = !absl::GetFlag(FLAGS_keep_work_dirs);
  options.work_dir_retention = absl::GetFlag(FLAGS_work_dir_retention);

  absl::StatusOr<std::unique_ptr<compress::worker::Agent>> agent =
      compress::worker::Agent::Create(options);
  if (!agent.ok()) {
    std::string hint;
    if (absl::GetFlag(FLAGS_executor).empty() &&
        absl::StartsWith(agent.status().message(), "--executor:")) {
      hint =
          " (the default, compress-run next to compress-worker: build compress-run or give "
          "--executor)";
    }
    std::fprintf(stderr, "compress-worker: %s%s\n", agent.status().ToString().c_str(),
                 hint.c_str());
    return 1;
  }

  std::thread signal_waiter([&stop_signals, &agent] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    (*agent)->Stop();
  });
  signal_waiter.detach();
  (*agent)->Run();
  return 0;
}
