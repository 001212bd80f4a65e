// TokenTable: the bearer tokens compressd accepts, each mapped to a tenant and a role, as read
// from a token file (--token_file; format in docs/server.md, "Token file").
//
// The file is text, one token per line: `TOKEN TENANT ROLE`, separated by spaces or tabs.
// Blank lines and lines starting with '#' are ignored. TOKEN is 16-512 printable ASCII
// characters without spaces; TENANT is 1-63 characters of [a-z0-9_-]; ROLE is one of viewer,
// submitter, admin, worker. A token may appear once.
#ifndef COMPRESS_SERVER_CORE_TOKEN_TABLE_H_
#define COMPRESS_SERVER_CORE_TOKEN_TABLE_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace compress::server {

// What a token may do (docs/server.md, "Permissions").
enum class Role {
  // Reads its tenant's jobs: GetJob, ListJobs, WatchJob, ReadArtifact.
  kViewer,
  // A viewer that also writes: CreateJob, CancelJob, DeleteJob, UploadBlob.
  kSubmitter,
  // Every CompressionService and WorkerService method, on every tenant's jobs.
  kAdmin,
  // WorkerService only.
  kWorker,
};

// "viewer", "submitter", "admin", "worker".
const char* RoleName(Role role);
std::optional<Role> RoleFromName(absl::string_view name);

// Who presented a token.
struct Identity {
  std::string tenant;
  Role role = Role::kViewer;
};

// Immutable once parsed; safe to read from many threads. Tokens are kept only as their SHA-256,
// so the table holds no secret in memory beyond the parse.
class TokenTable {
 public:
  TokenTable() = default;

  // Parses the text of a token file; `source` names it in errors. INVALID_ARGUMENT naming the
  // source and line of the first bad line.
  static absl::StatusOr<TokenTable> Parse(absl::string_view text, absl::string_view source);
  // Reads and parses the file at `path`: NOT_FOUND / PERMISSION_DENIED when it cannot be read.
  static absl::StatusOr<TokenTable> Load(const std::string& path);

  // The identity of `token`, or nullptr when the table has no such token.
  const Identity* Find(absl::string_view token) const;

  int size() const { return static_cast<int>(by_digest_.size()); }

 private:
  // SHA-256 (hex) of each token.
  std::map<std::string, Identity> by_digest_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_CORE_TOKEN_TABLE_H_
