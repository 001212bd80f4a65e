#include "server/core/data_roots.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace compress::server {
namespace {

namespace fs = std::filesystem;

// True when `path` is `root` or below it; both are canonical.
bool IsUnder(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    // A trailing separator of the root gives an empty last element.
    if (r->empty()) continue;
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> DataRoots::SplitFlagValues(
    const std::vector<std::string>& values) {
  std::vector<std::string> roots;
  for (const std::string& value : values) {
    if (value.empty()) {
      return absl::InvalidArgumentError(
          "--data_root: empty value; give a directory (several separated by commas), or leave "
          "the flag out to allow any path");
    }
    for (absl::string_view root : absl::StrSplit(value, ',')) {
      if (root.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--data_root: empty entry in '", value,
                         "'; separate directories by single commas, with none at either end"));
      }
      roots.emplace_back(root);
    }
  }
  return roots;
}

absl::StatusOr<DataRoots> DataRoots::Create(const std::vector<std::string>& roots) {
  DataRoots result;
  for (const std::string& root : roots) {
    std::error_code ec;
    fs::path canonical = fs::canonical(root, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat("--data_root: ", root, ": ", ec.message()));
    }
    if (!fs::is_directory(canonical, ec)) {
      return absl::InvalidArgumentError(absl::StrCat("--data_root: ", root, ": not a directory"));
    }
    result.roots_.push_back(canonical.string());
  }
  return result;
}

absl::Status DataRoots::Check(absl::string_view field, const std::string& path) const {
  if (roots_.empty() || path.empty()) return absl::OkStatus();
  fs::path given(path);
  if (!given.is_absolute()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", path,
                                                   "' must be an absolute path under a data root (",
                                                   absl::StrJoin(roots_, ", "), ")"));
  }
  std::error_code ec;
  fs::path resolved = fs::weakly_canonical(given, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": '", path, "' cannot be resolved: ", ec.message()));
  }
  for (const std::string& root : roots_) {
    if (IsUnder(resolved, fs::path(root))) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(field, ": '", path, "' resolves to '",
                                                 resolved.string(), "', outside every data root (",
                                                 absl::StrJoin(roots_, ", "), ")"));
}

}  // namespace compress::server
