#include "worker/agent/event_relay.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"

namespace compress::worker {

EventRelay::EventRelay(compress::v1::WorkerService::StubInterface* stub, AttemptKey key,
                       const Options& options, CancelCallback on_cancel, FailureCallback on_failure)
    : stub_(stub),
      key_(std::move(key)),
      options_(options),
      on_cancel_(std::move(on_cancel)),
      on_failure_(std::move(on_failure)) {
  thread_ = std::thread([this] { Loop(); });
}

EventRelay::~EventRelay() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void EventRelay::Add(std::string event_json) {
  absl::MutexLock lock(&mu_);
  pending_.push_back(std::move(event_json));
}

absl::Status EventRelay::Flush() {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_.empty() || !failure_.ok() || stopping_;
  };
  mu_.Await(absl::Condition(&done));
  if (!failure_.ok()) return failure_;
  if (!pending_.empty()) return absl::CancelledError("event relay stopped with lines unsent");
  return absl::OkStatus();
}

void EventRelay::GiveUpAt(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  give_up_at_ = deadline;
}

int64_t EventRelay::sent() const {
  absl::MutexLock lock(&mu_);
  return sent_;
}

void EventRelay::Loop() {
  Backoff backoff(options_.initial_backoff, options_.max_backoff);
  while (true) {
    compress::v1::ReportEventsRequest request;
    request.set_worker_id(key_.worker_id);
    request.set_job(key_.job);
    request.set_attempt(key_.attempt);
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !pending_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      size_t bytes = 0;
      for (const std::string& line : pending_) {
        if (request.event_json_size() >= options_.max_batch_lines) break;
        if (request.event_json_size() > 0 && bytes + line.size() > options_.max_batch_bytes) break;
        bytes += line.size();
        request.add_event_json(line);
      }
    }

    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
    compress::v1::ReportEventsResponse response;
    grpc::Status status = stub_->ReportEvents(&context, request, &response);
    if (status.ok()) {
      backoff.Reset();
      {
        absl::MutexLock lock(&mu_);
        for (int i = 0; i < request.event_json_size(); ++i) pending_.pop_front();
        sent_ += request.event_json_size();
      }
      if (response.cancel_requested()) on_cancel_();
      continue;
    }

    absl::Status failure;
    if (IsTransient(status)) {
      absl::Duration delay = backoff.Next();
      absl::MutexLock lock(&mu_);
      if (absl::Now() + delay < give_up_at_) {
        auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
        mu_.AwaitWithTimeout(absl::Condition(&stopping), delay);
        continue;
      }
      failure = absl::UnavailableError(
          absl::StrCat("ReportEvents for ", key_.job, ": gave up: ", status.error_message()));
    } else {
      failure = ToAbslStatus(status);
      failure =
          absl::Status(failure.code(), absl::StrCat("ReportEvents for ", key_.job, " attempt ",
                                                    key_.attempt, ": ", status.error_message()));
    }
    {
      absl::MutexLock lock(&mu_);
      failure_ = failure;
    }
    on_failure_(failure);
    return;
  }
}

}  // namespace compress::worker
