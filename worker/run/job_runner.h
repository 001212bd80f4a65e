// JobRunner: runs one compression job's phases in a work directory and reports what they did.
// The executor's main() wires it to flags, signals and the event stream on stdout.
#ifndef COMPRESS_WORKER_RUN_JOB_RUNNER_H_
#define COMPRESS_WORKER_RUN_JOB_RUNNER_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/events/event.h"
#include "worker/spec/job_spec.h"

namespace compress::run {

struct RunnerOptions {
  // The validated job spec.
  spec::JobSpec spec;
  // The work directory (see docs/executor-contract.md).
  std::string workdir;
  // "auto", "cpu", "cuda" or "cuda:N"; "auto" takes CUDA when available.
  std::string device = "auto";
  // LibTorch intra-op threads; 0 = all cores.
  int threads = 0;
  // Directory of the decoded data set cache; empty = DIR/cache.
  std::string cache_dir;
  // Set from another thread (a signal watcher) to stop between training steps. Not owned.
  const std::atomic<bool>* cancel = nullptr;
  // Where events go. Not owned; must outlive the runner.
  events::EventWriter* events = nullptr;
};

// Not thread-safe: Run is called once, on one thread.
class JobRunner {
 public:
  // INVALID_ARGUMENT for options that cannot run (no event writer, an unknown device);
  // UNIMPLEMENTED when the spec enables a stage this build does not provide.
  static absl::StatusOr<std::unique_ptr<JobRunner>> Create(RunnerOptions options);
  ~JobRunner();

  // Runs every phase not completed in an earlier run, writes the result checkpoint and
  // report.json, announces them as artifacts and returns the report. On failure returns the
  // status of the phase that failed (CANCELLED when cancelled).
  absl::StatusOr<nlohmann::json> Run();

 private:
  struct State;
  explicit JobRunner(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace compress::run

#endif  // COMPRESS_WORKER_RUN_JOB_RUNNER_H_
