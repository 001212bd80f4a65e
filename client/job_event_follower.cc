#include "client/job_event_follower.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/output.h"
#include "client/retry_schedule.h"

namespace compress::client {
namespace {

// CANCELLED is not this client's doing (it never cancels a stream it reads): a server that stops
// cancels the calls still open after its grace period, like a dropped connection.
bool IsTransient(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::CANCELLED ||
         status.error_code() == grpc::StatusCode::INTERNAL ||
         status.error_code() == grpc::StatusCode::UNKNOWN ||
         status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

absl::Status ToAbsl(const grpc::Status& status, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

}  // namespace

JobEventFollower::JobEventFollower(const CommandEnv& env, std::string job_name)
    : env_(env), job_name_(std::move(job_name)) {}

absl::StatusOr<std::optional<compress::v1::Job>> JobEventFollower::Follow(int64_t after_sequence,
                                                                          const Handler& handler) {
  last_sequence_ = after_sequence;
  RetrySchedule retry(env_.retry_for);
  while (true) {
    std::unique_ptr<grpc::ClientContext> context = env_.NewContext();
    compress::v1::WatchJobRequest request;
    request.set_name(job_name_);
    request.set_after_sequence(last_sequence_);
    std::unique_ptr<grpc::ClientReaderInterface<compress::v1::JobEvent>> reader =
        env_.stub->WatchJob(context.get(), request);
    compress::v1::JobEvent event;
    bool progressed = false;
    while (reader->Read(&event)) {
      if (event.sequence() <= last_sequence_) continue;
      last_sequence_ = event.sequence();
      progressed = true;
      if (!handler(event)) {
        context->TryCancel();
        reader->Finish();
        return std::optional<compress::v1::Job>();
      }
    }
    grpc::Status status = reader->Finish();
    // --retry_for counts from the start of an outage: every answer of the server (an event, a
    // stream that ended OK, a GetJob below) ends the one before. A job that stays quiet longer
    // than --retry_for must not leave the next outage with no time at all.
    if (progressed || status.ok()) retry.Progressed();

    if (status.ok() || status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      // A stream that ended is not proof that the job did: ask.
      std::unique_ptr<grpc::ClientContext> get_context = env_.NewContext();
      compress::v1::GetJobRequest get;
      get.set_name(job_name_);
      compress::v1::Job job;
      grpc::Status got = env_.stub->GetJob(get_context.get(), get, &job);
      if (got.ok()) {
        retry.Progressed();
        if (IsFinished(job.state()) &&
            (job.last_event_sequence() <= last_sequence_ || (status.ok() && !progressed))) {
          return std::optional<compress::v1::Job>(std::move(job));
        }
        // A server that ends streams at once must not make this loop spin.
        if (status.ok() && !progressed) absl::SleepFor(absl::Milliseconds(500));
        ++reopened_;
        continue;
      }
      if (!IsTransient(got) && got.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        return ToAbsl(got, absl::StrCat("GetJob ", job_name_));
      }
      status = got;
    } else if (!IsTransient(status)) {
      return ToAbsl(status, absl::StrCat("WatchJob ", job_name_));
    }

    if (!retry.WaitForNextTry()) {
      return ToAbsl(status, absl::StrCat("WatchJob ", job_name_, ": gave up after ",
                                         absl::FormatDuration(env_.retry_for)));
    }
    ++reopened_;
  }
}

}  // namespace compress::client
