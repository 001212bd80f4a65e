// Authenticator: bearer-token authentication and role checks of compressd's RPCs, and Caller,
// the identity a service method acts for.
//
// Every CompressionService and WorkerService method starts with AuthorizeCall: the call's
// `authorization: Bearer TOKEN` metadata is looked up in the token table (server/core/
// token_table.h); no or an unknown token is UNAUTHENTICATED, a role without the method's
// permission is PERMISSION_DENIED. Health checks and reflection are not behind it. The table is
// replaced by Reload (compressd calls it on SIGHUP); a bad file keeps the old table.
#ifndef COMPRESS_SERVER_RPC_AUTHENTICATOR_H_
#define COMPRESS_SERVER_RPC_AUTHENTICATOR_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/core/job.h"
#include "server/core/token_table.h"

namespace compress::server {

// What a method needs (docs/server.md, "Permissions").
enum class Permission {
  // GetJob, ListJobs, WatchJob, ReadArtifact: viewer, submitter, admin.
  kReadJobs,
  // CreateJob, CancelJob, DeleteJob, UploadBlob: submitter, admin.
  kWriteJobs,
  // Every WorkerService method: worker, admin.
  kWorker,
};

bool RoleAllows(Role role, Permission permission);

// The identity a call acts for.
struct Caller {
  // The tenant whose jobs and blobs the call may touch, and which new jobs belong to.
  std::string tenant;
  // True for admins and when the server runs without authentication: every tenant's jobs.
  bool all_tenants = false;

  // The tenant to restrict reads to; nullopt when the caller sees every tenant.
  std::optional<std::string> Scope() const;
  // OK when the caller may see `job`; otherwise NOT_FOUND with the message the store gives for
  // a job that does not exist, so another tenant's job ids are not revealed.
  absl::Status CheckVisible(const Job& job) const;
};

// Thread-safe.
class Authenticator {
 public:
  // Loads the token table from `token_file`.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(const std::string& token_file);
  // For tests: a fixed table, no file (Reload is then FAILED_PRECONDITION).
  explicit Authenticator(TokenTable table);

  // Reads the token file again. On success the new table takes effect for calls that start
  // afterwards; on failure the old table stays and the error says why.
  absl::Status Reload();
  // Tokens in the current table.
  int size() const;

  // The caller of a call that needs `permission`.
  absl::StatusOr<Caller> Authorize(const grpc::ServerContextBase& context,
                                   Permission permission) const;

 private:
  Authenticator(std::string token_file, TokenTable table);

  // Constant after construction; empty for a fixed table.
  const std::string token_file_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const TokenTable> table_ ABSL_GUARDED_BY(mu_);
};

// The caller of a call: `authenticator`->Authorize, or, when `authenticator` is nullptr (the
// server runs without authentication, --insecure), a caller that sees every tenant.
absl::StatusOr<Caller> AuthorizeCall(const Authenticator* authenticator,
                                     const grpc::ServerContextBase& context, Permission permission);

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_AUTHENTICATOR_H_
