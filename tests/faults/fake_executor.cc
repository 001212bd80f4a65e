// fake_executor: a stand-in for compress-run that obeys docs/executor-contract.md without
// LibTorch, for the fault tests.
//
//   fake_executor --spec SPEC.json --workdir DIR [--device D] [--threads N]
//
// It "trains" for `teacher.train.max_steps` steps (default 5) of FAULTS_STEP_MS milliseconds
// each (environment, default 100), printing a `metric` line per step, and keeps the step reached
// in DIR/state.json, so that a run on the same work dir resumes there. At the end it writes
// DIR/result/model.bin (content unique to this run), announces it with an `artifact` line,
// writes DIR/report.json and a `report` line, and exits 0. A run on a work dir whose state says
// "done" only announces the results again. SIGTERM or SIGINT stop it between two steps: the
// state is saved, an `error` line with code CANCELLED is written and it exits 1.
//
// When FAULTS_EXECUTOR_LOG names a file, one line per run is appended to it (one write(2) each,
// O_APPEND), where the tests read what executors did:
//   start JOB PID WORKDIR STEP          a run began (at STEP, 0 unless resumed)
//   complete JOB PID WORKDIR SHA256     this run finished the work (never for a resumed "done")
//   overlap JOB PID WORKDIR             another executor held the work dir's lock
// JOB is the name of the work dir's parent (the agent's <work_root>/<job_id>/work).
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "worker/events/event.h"
#include "worker/events/sha256.h"

namespace {

namespace fs = std::filesystem;
namespace events = compress::events;

std::atomic<bool> stop_requested{false};

void OnStopSignal(int) { stop_requested = true; }

void Emit(const events::Event& event) {
  std::string line = events::Serialize(event);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void AppendToLog(const std::string& line) {
  const char* path = std::getenv("FAULTS_EXECUTOR_LOG");
  if (path == nullptr || *path == '\0') return;
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  std::string text = line + "\n";
  ssize_t written = write(fd, text.data(), text.size());
  (void)written;
  close(fd);
}

int Fail(const absl::Status& status, int exit_code = 1) {
  Emit(events::Error(status));
  std::fprintf(stderr, "fake_executor: %s\n", status.ToString().c_str());
  return exit_code;
}

// Writes `contents` to `path` through a temporary file and a rename.
bool WriteAtomically(const fs::path& path, const std::string& contents) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << contents;
    out.close();
    if (!out) return false;
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  return !ec;
}

}  // namespace

int main(int argc, char** argv) {
  std::string spec_path;
  std::string work_dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--spec") {
      spec_path = argv[i + 1];
    } else if (flag == "--workdir") {
      work_dir = argv[i + 1];
    } else if (flag != "--device" && flag != "--threads") {
      return Fail(absl::InvalidArgumentError(absl::StrCat("unknown flag ", flag)), 2);
    }
  }
  if (spec_path.empty() || work_dir.empty()) {
    return Fail(absl::InvalidArgumentError("--spec and --workdir are required"), 2);
  }
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  std::ifstream spec_in(spec_path);
  nlohmann::json spec = nlohmann::json::parse(spec_in, nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("spec: cannot parse ", spec_path)));
  }
  int64_t steps = 5;
  if (auto train = spec.find("teacher"); train != spec.end() && train->contains("train")) {
    const nlohmann::json& max_steps = (*train)["train"].value("max_steps", nlohmann::json(5));
    // protobuf's JSON may print integers as strings.
    if (max_steps.is_number()) steps = max_steps.get<int64_t>();
  }
  int64_t step_ms = 100;
  if (const char* env = std::getenv("FAULTS_STEP_MS"); env != nullptr) {
    absl::SimpleAtoi(env, &step_ms);
  }

  std::error_code ec;
  fs::create_directories(fs::path(work_dir) / "result", ec);
  if (ec) return Fail(absl::InternalError(absl::StrCat("cannot create ", work_dir)));
  const std::string job = fs::path(work_dir).lexically_normal().parent_path().filename().string();
  const std::string pid = std::to_string(getpid());

  // Two executors on one work dir would corrupt each other's state: record it if it happens,
  // then wait for the other one to end.
  int lock_fd = open((fs::path(work_dir) / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd >= 0 && flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    AppendToLog(absl::StrCat("overlap ", job, " ", pid, " ", work_dir));
    flock(lock_fd, LOCK_EX);
  }

  const fs::path state_path = fs::path(work_dir) / "state.json";
  nlohmann::json state = {{"step", 0}, {"done", false}};
  if (std::ifstream state_in(state_path); state_in) {
    nlohmann::json stored = nlohmann::json::parse(state_in, nullptr, false);
    if (stored.is_object()) state = stored;
  }
  int64_t step = state.value("step", int64_t{0});
  const bool was_done = state.value("done", false);
  AppendToLog(absl::StrCat("start ", job, " ", pid, " ", work_dir, " ", step));

  const fs::path model_path = fs::path(work_dir) / "result" / "model.bin";
  if (!was_done) {
    Emit(events::PhaseStarted("teacher"));
    if (step > 0) Emit(events::Log("info", absl::StrCat("resuming at step ", step)));
    while (step < steps) {
      if (stop_requested) {
        state["step"] = step;
        WriteAtomically(state_path, state.dump());
        return Fail(absl::CancelledError(absl::StrCat("stopped by a signal at step ", step)));
      }
      absl::SleepFor(absl::Milliseconds(step_ms));
      ++step;
      Emit(events::Metric("teacher", step, 0, static_cast<double>(step) / steps,
                          {{"loss", 1.0 / static_cast<double>(step)}}));
      state["step"] = step;
      if (!WriteAtomically(state_path, state.dump())) {
        return Fail(absl::InternalError(absl::StrCat("cannot write ", state_path.string())));
      }
    }
    // The work is done: the model, then the log line, then the state. No output line comes in
    // between, so an agent that dies (SIGPIPE on the next line) cannot split them.
    std::random_device random;
    const std::string model =
        absl::StrCat("model of ", job, " made by pid ", pid, " nonce ", random(), random(), "\n");
    if (!WriteAtomically(model_path, model)) {
      return Fail(absl::InternalError(absl::StrCat("cannot write ", model_path.string())));
    }
    AppendToLog(
        absl::StrCat("complete ", job, " ", pid, " ", work_dir, " ", compress::Sha256Hex(model)));
    state["done"] = true;
    if (!WriteAtomically(state_path, state.dump())) {
      return Fail(absl::InternalError(absl::StrCat("cannot write ", state_path.string())));
    }
  }
  absl::StatusOr<compress::FileDigest> digest = compress::Sha256File(model_path.string());
  if (!digest.ok()) return Fail(digest.status());
  nlohmann::json report = {{"job", job}, {"steps", steps}, {"model_sha256", digest->sha256}};
  if (!WriteAtomically(fs::path(work_dir) / "report.json", report.dump())) {
    return Fail(absl::InternalError("cannot write report.json"));
  }
  if (!was_done) {
    Emit(events::PhaseFinished("teacher", 0, {{"steps", static_cast<double>(steps)}}));
  }
  Emit(events::ArtifactReady("model.bin", model_path.string(), digest->sha256, digest->size_bytes));
  Emit(events::Report(report));
  return 0;
}
