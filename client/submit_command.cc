// compressctl submit.
#include <string>

#include "absl/strings/str_cat.h"
#include "client/command_env.h"
#include "client/commands.h"
#include "client/output.h"
#include "client/spec_file.h"

namespace compress::client {

int Submit(const CommandEnv& env, const SubmitArgs& args) {
  absl::StatusOr<compress::v1::JobSpec> spec = LoadJobSpecFile(args.spec_file);
  if (!spec.ok()) return ReportError(env, "submit", spec.status());
  compress::v1::CreateJobRequest request;
  *request.mutable_spec() = *spec;
  for (const auto& [key, value] : args.labels) (*request.mutable_labels())[key] = value;
  request.set_priority(args.priority);
  request.set_request_id(args.request_id);
  request.set_max_attempts(args.max_attempts);
  compress::v1::Job job;
  auto context = env.NewContext();
  grpc::Status status = env.stub->CreateJob(context.get(), request, &job);
  if (!status.ok()) {
    return ReportError(
        env, absl::StrCat("submit ", args.spec_file),
        absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message()));
  }
  if (env.output == OutputFormat::kJson) {
    *env.out << ToJson(job) << "\n";
  } else {
    *env.out << "submitted " << job.name() << " (" << StateName(job.state()) << ")\n";
  }
  env.out->flush();
  if (!args.wait) return kExitOk;
  return Watch(env, job.name());
}

}  // namespace compress::client
