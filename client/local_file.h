// ReadLocalFile: the whole of a local file the user named (a spec, a token, a certificate), with
// errors that say why it could not be read.
#ifndef COMPRESS_CLIENT_LOCAL_FILE_H_
#define COMPRESS_CLIENT_LOCAL_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace compress::client {

// The contents of `path`. An error has the code its errno maps to (absl::ErrnoToStatus:
// NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION for a directory, ...) and the message
// "cannot read WHAT PATH: REASON", e.g. "cannot read spec file jobs/: Is a directory"; `what`
// may be empty.
absl::StatusOr<std::string> ReadLocalFile(const std::string& path, absl::string_view what = "");

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_LOCAL_FILE_H_
