#include "worker/agent/attempt_runner.h"

#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpcpp/client_context.h"
#include "nlohmann/json.hpp"
#include "worker/agent/blob_fetcher.h"
#include "worker/agent/devices.h"
#include "worker/agent/job_dir_lock.h"
#include "worker/agent/log.h"
#include "worker/events/event.h"
#include "worker/spec/job_spec.h"

namespace compress::worker {
namespace {

namespace fs = std::filesystem;
using compress::v1::AttemptOutcome;

// Failures of the executor that another attempt would repeat (the executor contract,
// docs/executor-contract.md); every other failure is worth a retry.
bool IsFinalCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kCancelled:
      return true;
    default:
      return false;
  }
}

bool IsUnder(const fs::path& path, const fs::path& dir) {
  std::error_code ec;
  fs::path canonical = fs::weakly_canonical(path, ec);
  if (ec) return false;
  fs::path root = fs::weakly_canonical(dir, ec);
  if (ec) return false;
  auto mismatch = std::mismatch(root.begin(), root.end(), canonical.begin(), canonical.end());
  return mismatch.first == root.end();
}

}  // namespace

AttemptRunner::AttemptRunner(compress::v1::WorkerService::StubInterface* stub,
                             std::string worker_id, compress::v1::Device device,
                             compress::v1::Lease lease, const Options& options)
    : stub_(stub),
      device_(std::move(device)),
      lease_(std::move(lease)),
      options_(options),
      key_{std::move(worker_id), lease_.job(), lease_.attempt(), lease_.lease_id()} {}

AttemptRunner::~AttemptRunner() {
  // The relay's thread calls back into this runner (RequestStop locks mu_ and signals the
  // executor), also while a ReportEvents call it had in flight returns: it must end before the
  // members it uses are destroyed, so the relay goes first.
  relay_.reset();
  absl::MutexLock lock(&mu_);
  if (killer_.joinable()) killer_.join();
}

bool AttemptRunner::ShuttingDown() const {
  absl::MutexLock lock(&mu_);
  return shutdown_;
}

bool AttemptRunner::StopRequested() const {
  absl::MutexLock lock(&mu_);
  return stop_reason_ != StopReason::kNone;
}

AttemptRunner::StopReason AttemptRunner::CurrentStop(absl::Status* why) const {
  absl::MutexLock lock(&mu_);
  *why = stop_status_;
  return stop_reason_;
}

void AttemptRunner::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
  }
  if (relay_ready_.HasBeenNotified()) {
    relay_->GiveUpAt(absl::Now() + options_.shutdown_retry_for);
  }
  RequestStop(StopReason::kShutdown, absl::UnavailableError("the worker is shutting down"));
}

void AttemptRunner::RequestStop(StopReason reason, const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  if (stop_reason_ != StopReason::kNone) return;
  stop_reason_ = reason;
  stop_status_ = why;
  AgentLog(key_.job, " attempt ", key_.attempt, ": stopping the executor: ", why.message());
  if (executor_ != nullptr) StartKillLocked();
}

void AttemptRunner::StartKillLocked() {
  // Once the executor was waited for, there is nothing left to stop (and no thread to join).
  if (executor_exited_.HasBeenNotified() || killer_.joinable()) return;
  executor_->Signal(SIGTERM);
  Subprocess* executor = executor_.get();
  killer_ = std::thread([this, executor] {
    if (!executor_exited_.WaitForNotificationWithTimeout(options_.kill_grace)) {
      AgentLog(key_.job, " attempt ", key_.attempt, ": executor still running ",
               absl::FormatDuration(options_.kill_grace), " after SIGTERM; sending SIGKILL");
      executor->Signal(SIGKILL);
    }
  });
}

absl::Status AttemptRunner::PrepareWorkDir() {
  absl::string_view id = lease_.job();
  if (!absl::ConsumePrefix(&id, "jobs/") || !IsJobDirName(id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("lease names job \"", lease_.job(), "\", expected jobs/{id}"));
  }
  job_dir_ = (fs::path(options_.work_root) / std::string(id)).string();
  work_dir_ = (fs::path(job_dir_) / "work").string();
  spec_path_ = (fs::path(job_dir_) / "spec.json").string();
  // Held until the attempt has ended: the retention sweep leaves a held directory alone.
  absl::StatusOr<JobDirLock> lock =
      JobDirLock::Acquire(job_dir_, options_.job_dir_lock_wait, [this] { return StopRequested(); });
  if (!lock.ok()) return lock.status();
  job_dir_lock_ = *std::move(lock);
  std::error_code ec;
  fs::create_directories(work_dir_, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create ", work_dir_, ": ", ec.message()));
  }
  std::string tmp = spec_path_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << lease_.spec_json();
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  fs::rename(tmp, spec_path_, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot write ", spec_path_, ": ", ec.message()));
  }
  // A teacher uploaded as a blob is fetched to where the executor looks for it.
  absl::StatusOr<spec::JobSpec> spec = spec::ParseJobSpec(lease_.spec_json());
  if (spec.ok() && !spec->teacher.blob_sha256.empty()) {
    AgentLog(key_.job, " attempt ", key_.attempt, ": fetching teacher blob ",
             spec->teacher.blob_sha256);
    BlobFetchOptions fetch;
    // A cancellation, a lost lease or a shutdown ends the fetch (heartbeats run meanwhile).
    fetch.should_stop = [this] { return StopRequested(); };
    return FetchBlob(stub_, key_.worker_id, spec->teacher.blob_sha256, work_dir_, fetch);
  }
  return absl::OkStatus();
}

AttemptResult AttemptRunner::Run() {
  AgentLog("running ", key_.job, " attempt ", key_.attempt, " on ", device_.name());
  // Heartbeats keep the lease from now on: fetching the teacher blob may outlast it.
  std::thread heartbeats([this] { HeartbeatLoop(); });
  auto end = [this, &heartbeats](AttemptResult result) {
    finished_.Notify();
    heartbeats.join();
    RemoveOrKeepWorkDir(result);
    return result;
  };
  // A stop before the executor started (the agent stopped as the lease arrived, or a stop ended
  // the blob fetch) is reported as a stopped executor is: a shutdown hands the lease back.
  auto stopped_before_start = [this, &end] {
    ExitInfo not_started;
    not_started.exit_code = 0;
    return end(Finish(not_started, ""));
  };
  if (StopRequested()) return stopped_before_start();
  compress::v1::CompleteAttemptRequest failure;
  failure.set_outcome(compress::v1::ATTEMPT_FAILED);
  if (absl::Status prepared = PrepareWorkDir(); !prepared.ok()) {
    if (StopRequested()) return stopped_before_start();
    failure.set_error_code(absl::StatusCodeToString(prepared.code()));
    failure.set_error_message(std::string(prepared.message()));
    failure.set_retryable(!IsFinalCode(prepared.code()));
    return end(Complete(failure));
  }

  std::optional<absl::Time> time_limit;
  if (absl::StatusOr<spec::JobSpec> spec = spec::ParseJobSpec(lease_.spec_json()); spec.ok()) {
    if (spec->resources.time_limit_seconds > 0) {
      // The executor stops itself at the limit (DEADLINE_EXCEEDED); this is the backstop for
      // one that hangs.
      time_limit = absl::Now() + absl::Seconds(spec->resources.time_limit_seconds) +
                   options_.kill_grace + absl::Minutes(1);
      time_limit_seconds_ = spec->resources.time_limit_seconds;
    }
  }

  if (StopRequested()) return stopped_before_start();

  Subprocess::Options process;
  ExecutorDevice executor_device = ExecutorDeviceFor(device_.name());
  process.argv = {options_.executor_path, "--spec", spec_path_, "--workdir", work_dir_, "--device",
                  executor_device.flag};
  process.environment = std::move(executor_device.environment);
  if (options_.executor_threads > 0) {
    process.argv.push_back("--threads");
    process.argv.push_back(std::to_string(options_.executor_threads));
  }
  process.working_dir = job_dir_;
  if (options_.echo_executor_stderr) {
    process.stderr_echo_prefix = absl::StrCat("[", key_.job, " attempt ", key_.attempt, "] ");
  }
  absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(process);
  if (!started.ok()) {
    // Nothing of the job is at fault (the agent chose the program and its arguments): the lease
    // is handed back as on shutdown, so that the job waits for a worker that can run it instead
    // of using up its attempts here, and the agent takes no work until its executor is usable.
    AgentLog(key_.job, " attempt ", key_.attempt, ": ", started.status().message(),
             "; handing the lease back");
    failure.set_error_code(absl::StatusCodeToString(absl::StatusCode::kUnavailable));
    failure.set_error_message(absl::StrCat("this worker cannot start its executor (",
                                           absl::StatusCodeToString(started.status().code()), ": ",
                                           started.status().message(), ")"));
    failure.set_retryable(true);
    failure.set_stopping(true);
    AttemptResult result = Complete(failure);
    result.executor_start_error = started.status();
    return end(result);
  }

  relay_ = std::make_unique<EventRelay>(
      stub_, key_, options_.relay,
      [this] {
        RequestStop(StopReason::kCancelled, absl::CancelledError("cancellation requested"));
      },
      [this](const absl::Status& status) {
        bool gone = status.code() == absl::StatusCode::kAborted ||
                    status.code() == absl::StatusCode::kNotFound ||
                    status.code() == absl::StatusCode::kFailedPrecondition;
        RequestStop(gone ? StopReason::kLeaseLost : StopReason::kRelayFailed, status);
      });
  relay_ready_.Notify();
  if (ShuttingDown()) relay_->GiveUpAt(absl::Now() + options_.shutdown_retry_for);

  Subprocess* executor = started->get();
  {
    absl::MutexLock lock(&mu_);
    executor_ = std::move(*started);
    time_limit_ = time_limit;
    if (stop_reason_ != StopReason::kNone) StartKillLocked();
  }

  while (std::optional<std::string> line = executor->ReadLine()) HandleLine(std::move(*line));
  ExitInfo exit_info = executor->Wait();
  executor_exited_.Notify();
  {
    absl::MutexLock lock(&mu_);
    if (killer_.joinable()) killer_.join();
  }
  AgentLog(key_.job, " attempt ", key_.attempt, ": executor ended with ", exit_info.ToString());

  AttemptResult result = Finish(exit_info, executor->StderrTail());
  result.executor_started = true;
  return end(result);
}

void AttemptRunner::HandleLine(std::string line) {
  // Only the executor's last stdout line decides a failed run (the executor contract): an error
  // line followed by any other line was not its final word.
  if (last_error_code_.has_value()) {
    earlier_error_ = absl::StrCat(*last_error_code_, ": ", last_error_message_);
    last_error_code_.reset();
    last_error_message_.clear();
  }
  absl::StatusOr<events::Event> event = events::Parse(line);
  if (!event.ok()) {
    // Never drop a line: text that is not an event travels as a log line.
    relay_->Add(events::Serialize(events::Log("info", line)));
    return;
  }
  switch (event->type) {
    case events::EventType::kArtifact:
      artifacts_[event->name] = {event->name, event->path, event->sha256, event->size_bytes};
      break;
    case events::EventType::kReport:
      report_json_ = event->report.dump();
      break;
    case events::EventType::kError:
      last_error_code_ = event->code;
      last_error_message_ = event->message;
      break;
    default:
      break;
  }
  relay_->Add(std::move(line));
}

void AttemptRunner::HeartbeatLoop() {
  absl::Duration interval =
      lease_.lease_seconds() > 0 ? absl::Seconds(lease_.lease_seconds()) / 3 : absl::Seconds(10);
  interval = std::clamp(interval, absl::Seconds(1),
                        std::max(options_.max_heartbeat_interval, absl::Seconds(1)));
  absl::Time next = absl::Now() + interval;
  bool time_limit_checked = false;
  while (true) {
    // Set once the executor started (fetching the teacher blob does not count against it).
    std::optional<absl::Time> time_limit;
    if (!time_limit_checked) {
      absl::MutexLock lock(&mu_);
      time_limit = time_limit_;
    }
    absl::Time wake = next;
    if (time_limit.has_value() && !executor_exited_.HasBeenNotified()) {
      wake = std::min(wake, *time_limit);
    }
    if (finished_.WaitForNotificationWithDeadline(wake)) return;
    if (time_limit.has_value() && absl::Now() >= *time_limit &&
        !executor_exited_.HasBeenNotified()) {
      RequestStop(StopReason::kTimeLimit, absl::DeadlineExceededError(absl::StrCat(
                                              "the executor ran past the job's time limit of ",
                                              time_limit_seconds_, " s")));
      time_limit_checked = true;
    }
    if (absl::Now() < next) continue;
    next = absl::Now() + interval;

    compress::v1::HeartbeatRequest request;
    key_.SetOn(request);
    compress::v1::HeartbeatResponse response;
    grpc::ClientContext context;
    context.set_deadline(
        absl::ToChronoTime(absl::Now() + std::min(options_.rpc_timeout, interval)));
    grpc::Status status = stub_->Heartbeat(&context, request, &response);
    if (status.ok()) {
      if (response.cancel_requested()) {
        RequestStop(StopReason::kCancelled, absl::CancelledError("cancellation requested"));
      }
    } else if (IsAttemptGone(status)) {
      absl::Status gone =
          absl::AbortedError(absl::StrCat("heartbeat refused: ", status.error_message()));
      RequestStop(StopReason::kLeaseLost, gone);
      // The queued lines can no longer be delivered; dropping them also frees the Run() thread
      // if it waits on a full relay queue, so that it drains the stopped executor's output.
      if (relay_ready_.HasBeenNotified()) relay_->Abandon(gone);
    } else {
      AgentLog(key_.job, " attempt ", key_.attempt, ": heartbeat failed (", status.error_message(),
               "); retrying in ", absl::FormatDuration(interval));
    }
  }
}

AttemptResult AttemptRunner::Finish(const ExitInfo& exit_info, const std::string& stderr_tail) {
  absl::Status stop_status;
  StopReason reason = CurrentStop(&stop_status);
  AttemptResult dropped;
  if (reason == StopReason::kLeaseLost) {
    AgentLog(key_.job, " attempt ", key_.attempt, ": dropped: ", stop_status.message());
    return dropped;
  }
  // Every line reaches the server before the outcome does (there is no relay when the attempt
  // was stopped before its executor started).
  if (absl::Status flushed = relay_ != nullptr ? relay_->Flush() : absl::OkStatus();
      !flushed.ok()) {
    if (flushed.code() == absl::StatusCode::kAborted ||
        flushed.code() == absl::StatusCode::kNotFound ||
        flushed.code() == absl::StatusCode::kFailedPrecondition) {
      AgentLog(key_.job, " attempt ", key_.attempt, ": dropped: ", flushed.message());
      return dropped;
    }
    if (reason == StopReason::kNone) {
      reason = StopReason::kRelayFailed;
      stop_status = flushed;
    }
  }

  compress::v1::CompleteAttemptRequest request;
  request.set_exit_status(exit_info.ShellStatus());
  request.set_stderr_tail(stderr_tail);
  auto fail = [&request](const absl::Status& status, bool retryable) {
    request.set_outcome(compress::v1::ATTEMPT_FAILED);
    request.set_error_code(absl::StatusCodeToString(status.code()));
    request.set_error_message(std::string(status.message()));
    request.set_retryable(retryable);
  };

  if (reason != StopReason::kNone) return CompleteStopped(reason, stop_status, request);

  if (!exit_info.Succeeded()) {
    if (last_error_code_.has_value()) {
      absl::StatusCode code = events::StatusCodeFromName(*last_error_code_);
      request.set_outcome(compress::v1::ATTEMPT_FAILED);
      request.set_error_code(*last_error_code_);
      request.set_error_message(last_error_message_);
      request.set_retryable(!IsFinalCode(code));
    } else {
      // A death without an error line as the last line is retryable, whatever an earlier error
      // line said.
      std::string earlier;
      if (earlier_error_.has_value()) {
        earlier = absl::StrCat(" (an earlier line, not the last, was an error line: ",
                               CutText(*earlier_error_, 4096), ")");
      }
      if (exit_info.signal != 0) {
        fail(absl::InternalError(
                 absl::StrCat("executor killed by signal ", exit_info.signal, earlier)),
             /*retryable=*/true);
      } else {
        fail(absl::UnknownError(absl::StrCat("executor exited with status ", exit_info.exit_code,
                                             " without an error line", earlier)),
             /*retryable=*/true);
      }
    }
    return Complete(request);
  }

  std::string report = ReadReportJson();
  if (report.empty()) {
    fail(absl::InternalError("executor exited 0 without a report (no report event and no "
                             "report.json in its work dir)"),
         /*retryable=*/true);
    return Complete(request);
  }
  if (!nlohmann::json::parse(report, nullptr, /*allow_exceptions=*/false).is_object()) {
    fail(absl::InternalError(absl::StrCat("executor exited 0 with a report.json (", report.size(),
                                          " bytes) that is not a JSON object")),
         /*retryable=*/true);
    return Complete(request);
  }
  if (report.size() > options_.max_report_bytes) {
    AgentLog(key_.job, " attempt ", key_.attempt, ": report.json of ", report.size(),
             " bytes is over ", options_.max_report_bytes, "; the job's record gets a note");
    nlohmann::json note = {{"bytes", report.size()},
                           {"limit_bytes", options_.max_report_bytes},
                           {"reason", "larger than a job's record keeps"}};
    if (artifacts_.count("report.json") > 0) note["artifact"] = "report.json";
    report = nlohmann::json{{"report_omitted", note}}.dump();
  }
  // A stop while the artifacts are uploaded (a cancellation, a lost lease, a shutdown) ends the
  // upload within moments, and the attempt is reported as stopped.
  ArtifactUploader uploader(stub_, key_, options_.upload, [this] { return StopRequested(); });
  auto complete_stopped = [this, &request] {
    absl::Status why;
    StopReason stopped = CurrentStop(&why);
    AgentLog(key_.job, " attempt ", key_.attempt, ": artifact upload stopped: ", why.message());
    return CompleteStopped(stopped, why, request);
  };
  for (const auto& [name, artifact] : artifacts_) {
    if (StopRequested()) return complete_stopped();
    if (!IsUnder(artifact.path, work_dir_)) {
      fail(absl::InternalError(absl::StrCat("artifact ", name, " at ", artifact.path,
                                            " lies outside the work dir ", work_dir_)),
           /*retryable=*/true);
      return Complete(request);
    }
    absl::Status uploaded = uploader.Upload(artifact);
    if (uploaded.ok()) continue;
    if (StopRequested()) return complete_stopped();
    if (uploaded.code() == absl::StatusCode::kAborted ||
        uploaded.code() == absl::StatusCode::kFailedPrecondition) {
      AgentLog(key_.job, " attempt ", key_.attempt, ": dropped: ", uploaded.message());
      return dropped;
    }
    bool final_failure = uploaded.code() == absl::StatusCode::kDataLoss ||
                         uploaded.code() == absl::StatusCode::kNotFound ||
                         uploaded.code() == absl::StatusCode::kInvalidArgument;
    fail(uploaded, /*retryable=*/!final_failure);
    return Complete(request);
  }
  request.set_outcome(compress::v1::ATTEMPT_SUCCEEDED);
  request.set_report_json(report);
  return Complete(request);
}

AttemptResult AttemptRunner::CompleteStopped(StopReason reason, const absl::Status& why,
                                             compress::v1::CompleteAttemptRequest request) {
  auto fail = [&request, &why] {
    request.set_outcome(compress::v1::ATTEMPT_FAILED);
    request.set_error_code(absl::StatusCodeToString(why.code()));
    request.set_error_message(std::string(why.message()));
    request.set_retryable(true);
  };
  switch (reason) {
    case StopReason::kCancelled:
      request.set_outcome(compress::v1::ATTEMPT_CANCELLED);
      request.set_error_code("CANCELLED");
      request.set_error_message("cancelled on request");
      return Complete(request);
    case StopReason::kShutdown:
      // Handed back, not failed: compressd requeues the job without counting the attempt.
      fail();
      request.set_stopping(true);
      return Complete(request);
    case StopReason::kRelayFailed:
    case StopReason::kTimeLimit:  // the contract makes DEADLINE_EXCEEDED retryable
    case StopReason::kNone:
      fail();
      return Complete(request);
    case StopReason::kLeaseLost:
      break;
  }
  AgentLog(key_.job, " attempt ", key_.attempt, ": dropped: ", why.message());
  return AttemptResult();
}

std::string AttemptRunner::ReadReportJson() const {
  std::ifstream in(fs::path(work_dir_) / "report.json", std::ios::binary);
  if (in) {
    std::stringstream contents;
    contents << in.rdbuf();
    if (!contents.str().empty()) return contents.str();
  }
  return report_json_.value_or("");
}

AttemptResult AttemptRunner::Complete(compress::v1::CompleteAttemptRequest request) {
  key_.SetOn(request);
  // Whatever the executor wrote, the request stays well below the server's message limit.
  if (request.error_message().size() > options_.max_error_message_bytes) {
    request.set_error_message(CutText(request.error_message(), options_.max_error_message_bytes));
  }
  AttemptResult result;
  result.outcome = request.outcome();
  result.error_code = request.error_code();
  result.error_message = request.error_message();
  result.retryable = request.retryable();

  Backoff backoff(options_.relay.initial_backoff, options_.relay.max_backoff);
  absl::Time give_up = absl::Now() + options_.complete_retry_for;
  while (true) {
    if (ShuttingDown()) give_up = std::min(give_up, absl::Now() + options_.shutdown_retry_for);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
    compress::v1::CompleteAttemptResponse response;
    grpc::Status status = stub_->CompleteAttempt(&context, request, &response);
    if (status.ok()) {
      result.completed = true;
      AgentLog(key_.job, " attempt ", key_.attempt, ": reported ",
               compress::v1::AttemptOutcome_Name(request.outcome()),
               request.error_code().empty()
                   ? ""
                   : absl::StrCat(" ", request.error_code(), ": ", request.error_message()));
      return result;
    }
    absl::Duration delay = backoff.Next();
    if (!IsTransient(status) || absl::Now() + delay > give_up) {
      AgentLog(key_.job, " attempt ", key_.attempt,
               ": CompleteAttempt failed: ", status.error_message());
      result.outcome = compress::v1::ATTEMPT_OUTCOME_UNSPECIFIED;
      return result;
    }
    absl::SleepFor(delay);
  }
}

void AttemptRunner::RemoveOrKeepWorkDir(const AttemptResult& result) {
  if (job_dir_.empty()) return;
  bool job_over = result.outcome == compress::v1::ATTEMPT_SUCCEEDED ||
                  result.outcome == compress::v1::ATTEMPT_CANCELLED ||
                  (result.outcome == compress::v1::ATTEMPT_FAILED && !result.retryable);
  if (options_.remove_finished_work_dirs && result.completed && job_over) {
    std::error_code ec;
    fs::remove_all(job_dir_, ec);
    if (ec) AgentLog("cannot remove ", job_dir_, ": ", ec.message());
  } else {
    // Kept: the retention sweep counts its age from now.
    job_dir_lock_.Touch();
  }
  job_dir_lock_.Release();
}

}  // namespace compress::worker
