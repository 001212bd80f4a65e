#include "server/rpc/authenticator.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace compress::server {
namespace {

constexpr char kAuthorizationKey[] = "authorization";
constexpr absl::string_view kBearerPrefix = "bearer ";

const char* PermissionName(Permission permission) {
  switch (permission) {
    case Permission::kReadJobs:
      return "reading jobs (role viewer, submitter or admin)";
    case Permission::kWriteJobs:
      return "creating, cancelling and deleting jobs and uploading blobs (role submitter or "
             "admin)";
    case Permission::kWorker:
      return "the worker service (role worker or admin)";
  }
  return "this method";
}

}  // namespace

bool RoleAllows(Role role, Permission permission) {
  switch (role) {
    case Role::kAdmin:
      return true;
    case Role::kSubmitter:
      return permission == Permission::kReadJobs || permission == Permission::kWriteJobs;
    case Role::kViewer:
      return permission == Permission::kReadJobs;
    case Role::kWorker:
      return permission == Permission::kWorker;
  }
  return false;
}

std::optional<std::string> Caller::Scope() const {
  if (all_tenants) return std::nullopt;
  return tenant;
}

absl::Status Caller::CheckVisible(const Job& job) const {
  if (all_tenants || job.tenant == tenant) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("job '", job.id, "' not found"));
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(
    const std::string& token_file) {
  absl::StatusOr<TokenTable> table = TokenTable::Load(token_file);
  if (!table.ok()) return table.status();
  return std::unique_ptr<Authenticator>(new Authenticator(token_file, *std::move(table)));
}

Authenticator::Authenticator(TokenTable table)
    : table_(std::make_shared<const TokenTable>(std::move(table))) {}

Authenticator::Authenticator(std::string token_file, TokenTable table)
    : token_file_(std::move(token_file)),
      table_(std::make_shared<const TokenTable>(std::move(table))) {}

absl::Status Authenticator::Reload() {
  if (token_file_.empty()) {
    return absl::FailedPreconditionError("the token table was not read from a file");
  }
  absl::StatusOr<TokenTable> table = TokenTable::Load(token_file_);
  if (!table.ok()) return table.status();
  auto fresh = std::make_shared<const TokenTable>(*std::move(table));
  absl::MutexLock lock(&mu_);
  table_ = std::move(fresh);
  return absl::OkStatus();
}

int Authenticator::size() const {
  absl::MutexLock lock(&mu_);
  return table_->size();
}

absl::StatusOr<Caller> Authenticator::Authorize(const grpc::ServerContextBase& context,
                                                Permission permission) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kAuthorizationKey);
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "no bearer token: send metadata 'authorization: Bearer TOKEN' (compressctl --token, "
        "--token_file or $COMPRESS_TOKEN)");
  }
  absl::string_view value(it->second.data(), it->second.size());
  if (value.size() <= kBearerPrefix.size() || !absl::StartsWithIgnoreCase(value, kBearerPrefix)) {
    return absl::UnauthenticatedError("authorization: expected 'Bearer TOKEN'");
  }
  absl::string_view token = absl::StripAsciiWhitespace(value.substr(kBearerPrefix.size()));
  std::shared_ptr<const TokenTable> table;
  {
    absl::MutexLock lock(&mu_);
    table = table_;
  }
  const Identity* identity = table->Find(token);
  if (identity == nullptr) return absl::UnauthenticatedError("unknown bearer token");
  if (!RoleAllows(identity->role, permission)) {
    return absl::PermissionDeniedError(
        absl::StrCat("role ", RoleName(identity->role), " of tenant '", identity->tenant,
                     "' does not allow ", PermissionName(permission)));
  }
  Caller caller;
  caller.tenant = identity->tenant;
  caller.all_tenants = identity->role == Role::kAdmin;
  return caller;
}

absl::StatusOr<Caller> AuthorizeCall(const Authenticator* authenticator,
                                     const grpc::ServerContextBase& context,
                                     Permission permission) {
  if (authenticator == nullptr) {
    Caller caller;
    caller.all_tenants = true;
    return caller;
  }
  return authenticator->Authorize(context, permission);
}

}  // namespace compress::server
