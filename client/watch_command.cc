// compressctl watch and logs: following a job's event stream.
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/command_env.h"
#include "client/commands.h"
#include "client/job_event_follower.h"
#include "client/job_names.h"
#include "client/output.h"
#include "client/progress_view.h"

namespace compress::client {
namespace {

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::StatusOr<compress::v1::Job> FetchJob(const CommandEnv& env, const std::string& name) {
  compress::v1::GetJobRequest request;
  request.set_name(name);
  compress::v1::Job job;
  auto context = env.NewContext();
  grpc::Status status = env.stub->GetJob(context.get(), request, &job);
  if (!status.ok()) return FromGrpc(status);
  return job;
}

}  // namespace

int Watch(const CommandEnv& env, const std::string& job) {
  absl::StatusOr<std::string> name = JobName(job);
  if (!name.ok()) return ReportError(env, "watch", name.status());
  ProgressView view(env.out, env.tty);
  JobEventFollower follower(env, *name);
  absl::StatusOr<std::optional<compress::v1::Job>> finished =
      follower.Follow(0, [&env, &view](const compress::v1::JobEvent& event) {
        if (env.output == OutputFormat::kJson) {
          *env.out << ToJson(event) << "\n";
          env.out->flush();
        } else {
          view.Show(event);
        }
        return true;
      });
  view.Close();
  if (!finished.ok()) return ReportError(env, absl::StrCat("watch ", *name), finished.status());
  const compress::v1::Job& final_job = **finished;
  if (env.output == OutputFormat::kJson) {
    *env.out << ToJson(final_job) << "\n";
  } else {
    *env.out << final_job.name() << " " << StateName(final_job.state());
    if (final_job.state() != compress::v1::SUCCEEDED && !final_job.error_code().empty()) {
      *env.out << ": " << final_job.error_code() << ": " << final_job.error_message();
    }
    *env.out << "\n";
  }
  return final_job.state() == compress::v1::SUCCEEDED ? kExitOk : kExitJobNotSucceeded;
}

int Logs(const CommandEnv& env, const std::string& job, bool follow) {
  absl::StatusOr<std::string> name = JobName(job);
  if (!name.ok()) return ReportError(env, "logs", name.status());
  absl::StatusOr<compress::v1::Job> current = FetchJob(env, *name);
  if (!current.ok()) return ReportError(env, absl::StrCat("logs ", *name), current.status());
  // Without --follow, the events the job has now and no more.
  const int64_t until = current->last_event_sequence();
  if (!follow && until == 0) return kExitOk;
  JobEventFollower follower(env, *name);
  absl::StatusOr<std::optional<compress::v1::Job>> finished =
      follower.Follow(0, [&](const compress::v1::JobEvent& event) {
        if (event.has_log()) {
          if (env.output == OutputFormat::kJson) {
            *env.out << ToJson(event) << "\n";
          } else {
            *env.out << FormatTimestamp(event.time()) << " [" << event.log().level() << "] "
                     << event.log().message() << "\n";
          }
          env.out->flush();
        }
        return follow || event.sequence() < until;
      });
  if (!finished.ok()) return ReportError(env, absl::StrCat("logs ", *name), finished.status());
  return kExitOk;
}

}  // namespace compress::client
