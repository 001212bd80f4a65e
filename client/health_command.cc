// compressctl health: grpc.health.v1.Health/Check, for container health checks and scripts.
#include <string>

#include "absl/strings/str_cat.h"
#include "client/command_env.h"
#include "client/commands.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace compress::client {

int Health(const CommandEnv& env, const std::string& service) {
  if (env.health == nullptr) {
    return ReportError(env, "health", absl::FailedPreconditionError("no health stub"));
  }
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  std::unique_ptr<grpc::ClientContext> context = env.NewContext();
  grpc::Status status = env.health->Check(context.get(), request, &response);
  const std::string what = service.empty() ? "health" : absl::StrCat("health ", service);
  if (!status.ok()) {
    return ReportError(env, what,
                       absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                                    status.error_message()));
  }
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
      response.status());
  if (env.output == OutputFormat::kJson) {
    nlohmann::json line = {{"service", service}, {"status", name}};
    *env.out << line.dump() << "\n";
  } else {
    *env.out << name << "\n";
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk
                                                                              : kExitNotServing;
}

}  // namespace compress::client
