#include "client/local_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace compress::client {

absl::StatusOr<std::string> ReadLocalFile(const std::string& path, absl::string_view what) {
  const std::string described = what.empty() ? absl::StrCat("cannot read ", path)
                                             : absl::StrCat("cannot read ", what, " ", path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, described);
  std::string text;
  int error = 0;
  struct stat info;
  if (::fstat(fd, &info) != 0) {
    error = errno;
  } else if (S_ISDIR(info.st_mode)) {
    // open(2) takes a directory for reading; read(2) would then fail with EISDIR anyway.
    error = EISDIR;
  } else {
    char buffer[1 << 16];
    while (true) {
      const ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) error = errno;
      if (n <= 0) break;
      text.append(buffer, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  if (error != 0) return absl::ErrnoToStatus(error, described);
  return text;
}

}  // namespace compress::client
