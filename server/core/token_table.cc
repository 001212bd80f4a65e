#include "server/core/token_table.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "worker/events/sha256.h"

namespace compress::server {
namespace {

constexpr size_t kMinTokenLength = 16;
constexpr size_t kMaxTokenLength = 512;
constexpr size_t kMaxTenantLength = 63;

bool ValidTenant(absl::string_view tenant) {
  if (tenant.empty() || tenant.size() > kMaxTenantLength) return false;
  for (char c : tenant) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

bool ValidToken(absl::string_view token) {
  if (token.size() < kMinTokenLength || token.size() > kMaxTokenLength) return false;
  for (char c : token) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kViewer:
      return "viewer";
    case Role::kSubmitter:
      return "submitter";
    case Role::kAdmin:
      return "admin";
    case Role::kWorker:
      return "worker";
  }
  return "viewer";
}

std::optional<Role> RoleFromName(absl::string_view name) {
  for (Role role : {Role::kViewer, Role::kSubmitter, Role::kAdmin, Role::kWorker}) {
    if (name == RoleName(role)) return role;
  }
  return std::nullopt;
}

absl::StatusOr<TokenTable> TokenTable::Parse(absl::string_view text, absl::string_view source) {
  TokenTable table;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_number, ": ", what));
    };
    if (fields.size() != 3) {
      return error(absl::StrCat("expected 'TOKEN TENANT ROLE', got ", fields.size(), " fields"));
    }
    if (!ValidToken(fields[0])) {
      return error(absl::StrCat("the token must be ", kMinTokenLength, "-", kMaxTokenLength,
                                " printable characters without spaces"));
    }
    if (!ValidTenant(fields[1])) {
      return error(absl::StrCat("tenant '", fields[1], "' must be 1-", kMaxTenantLength,
                                " characters of [a-z0-9_-]"));
    }
    std::optional<Role> role = RoleFromName(fields[2]);
    if (!role.has_value()) {
      return error(
          absl::StrCat("role '", fields[2], "' must be one of viewer, submitter, admin, worker"));
    }
    std::string digest = Sha256Hex(fields[0]);
    if (!table.by_digest_.emplace(digest, Identity{std::string(fields[1]), *role}).second) {
      return error("this token appears on an earlier line too");
    }
  }
  return table;
}

absl::StatusOr<TokenTable> TokenTable::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int error = errno;
    std::string message = absl::StrCat("token file ", path, ": ", std::strerror(error));
    if (error == EACCES) return absl::PermissionDeniedError(message);
    return absl::NotFoundError(message);
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("token file ", path, ": read failed"));
  return Parse(text.str(), path);
}

const Identity* TokenTable::Find(absl::string_view token) const {
  auto it = by_digest_.find(Sha256Hex(token));
  return it == by_digest_.end() ? nullptr : &it->second;
}

}  // namespace compress::server
