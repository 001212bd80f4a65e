// compressctl get, list, cancel, delete; and the shared error report.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/command_env.h"
#include "client/commands.h"
#include "client/job_names.h"
#include "client/output.h"
#include "nlohmann/json.hpp"

namespace compress::client {
namespace {

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

void PrintJob(const CommandEnv& env, const compress::v1::Job& job) {
  if (env.output == OutputFormat::kJson) {
    *env.out << ToJson(job) << "\n";
  } else {
    *env.out << FormatJob(job);
  }
}

}  // namespace

int ReportError(const CommandEnv& env, const std::string& what, const absl::Status& status) {
  *env.err << "compressctl: " << what << ": " << absl::StatusCodeToString(status.code()) << ": "
           << status.message() << "\n";
  return status.code() == absl::StatusCode::kDataLoss ? kExitDataLoss : kExitError;
}

int Get(const CommandEnv& env, const std::string& job) {
  absl::StatusOr<std::string> name = JobName(job);
  if (!name.ok()) return ReportError(env, "get", name.status());
  compress::v1::GetJobRequest request;
  request.set_name(*name);
  compress::v1::Job response;
  auto context = env.NewContext();
  grpc::Status status = env.stub->GetJob(context.get(), request, &response);
  if (!status.ok()) return ReportError(env, absl::StrCat("get ", *name), FromGrpc(status));
  PrintJob(env, response);
  return kExitOk;
}

int List(const CommandEnv& env, const ListArgs& args) {
  std::vector<compress::v1::Job> jobs;
  compress::v1::ListJobsRequest request;
  request.set_filter(args.filter);
  request.set_page_size(args.page_size);
  std::string next_page_token;
  do {
    compress::v1::ListJobsResponse response;
    auto context = env.NewContext();
    grpc::Status status = env.stub->ListJobs(context.get(), request, &response);
    if (!status.ok()) return ReportError(env, "list", FromGrpc(status));
    for (const compress::v1::Job& job : response.jobs()) jobs.push_back(job);
    next_page_token = response.next_page_token();
    request.set_page_token(next_page_token);
  } while (args.all && !next_page_token.empty());

  if (env.output == OutputFormat::kJson) {
    compress::v1::ListJobsResponse all;
    for (const compress::v1::Job& job : jobs) *all.add_jobs() = job;
    if (!args.all) all.set_next_page_token(next_page_token);
    *env.out << ToJson(all) << "\n";
  } else {
    *env.out << FormatJobTable(jobs);
    if (!args.all && !next_page_token.empty()) {
      *env.out << "(more jobs: --all, or --page_size)\n";
    }
  }
  return kExitOk;
}

int Cancel(const CommandEnv& env, const std::string& job) {
  absl::StatusOr<std::string> name = JobName(job);
  if (!name.ok()) return ReportError(env, "cancel", name.status());
  compress::v1::CancelJobRequest request;
  request.set_name(*name);
  compress::v1::Job response;
  auto context = env.NewContext();
  grpc::Status status = env.stub->CancelJob(context.get(), request, &response);
  if (!status.ok()) return ReportError(env, absl::StrCat("cancel ", *name), FromGrpc(status));
  PrintJob(env, response);
  return kExitOk;
}

int Delete(const CommandEnv& env, const std::string& job) {
  absl::StatusOr<std::string> name = JobName(job);
  if (!name.ok()) return ReportError(env, "delete", name.status());
  compress::v1::DeleteJobRequest request;
  request.set_name(*name);
  google::protobuf::Empty response;
  auto context = env.NewContext();
  grpc::Status status = env.stub->DeleteJob(context.get(), request, &response);
  if (!status.ok()) return ReportError(env, absl::StrCat("delete ", *name), FromGrpc(status));
  if (env.output == OutputFormat::kJson) {
    *env.out << nlohmann::json{{"deleted", *name}}.dump() << "\n";
  } else {
    *env.out << "deleted " << *name << "\n";
  }
  return kExitOk;
}

}  // namespace compress::client
