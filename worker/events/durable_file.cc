#include "worker/events/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace compress {

absl::Status ErrnoStatus(int error, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(error));
  switch (error) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
    case EFBIG:  // past a file size limit: no room, as a full disk
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status SyncPath(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot open ", path, " to flush it"));
  const int error = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  if (error != 0) return ErrnoStatus(error, absl::StrCat("cannot flush ", path));
  return absl::OkStatus();
}

absl::Status SyncParentDirectory(const std::string& path) {
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return SyncPath(parent.empty() ? "." : parent);
}

std::string AtomicWriteTemporary(const std::string& path, int pid, uint64_t n) {
  return absl::StrCat(path, ".tmp.", pid, ".", n);
}

bool IsAtomicWriteTemporary(absl::string_view file_name) {
  auto all_digits = [](absl::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const size_t tmp = file_name.rfind(".tmp.");
  if (tmp == absl::string_view::npos || tmp == 0) return false;
  const absl::string_view pid_and_n = file_name.substr(tmp + 5);
  const size_t dot = pid_and_n.find('.');
  return dot != absl::string_view::npos && all_digits(pid_and_n.substr(0, dot)) &&
         all_digits(pid_and_n.substr(dot + 1));
}

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::function<void(const ByteSink&)>& produce) {
  static std::atomic<uint64_t> counter{0};
  const std::string temp = AtomicWriteTemporary(path, ::getpid(), counter++);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot create ", temp));
  auto fail = [&temp](int error, absl::string_view what) {
    ::unlink(temp.c_str());
    return ErrnoStatus(error, absl::StrCat(what, temp));
  };
  // The first failed write is remembered and the bytes after it are dropped: the producer runs
  // to its end either way (LibTorch's archive writer cannot stop half way without aborting).
  int write_error = 0;
  produce([fd, &write_error](const void* bytes, size_t size) {
    const char* data = static_cast<const char*>(bytes);
    while (size > 0 && write_error == 0) {
      const ssize_t n = ::write(fd, data, size);
      if (n < 0) {
        if (errno != EINTR) write_error = errno;
        continue;
      }
      data += n;
      size -= static_cast<size_t>(n);
    }
  });
  if (write_error != 0) {
    ::close(fd);
    return fail(write_error, "cannot write ");
  }
  int error = ::fsync(fd) == 0 ? 0 : errno;
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error != 0) return fail(error, "cannot flush ");
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int rename_error = errno;
    ::unlink(temp.c_str());
    return ErrnoStatus(rename_error, absl::StrCat("cannot rename ", temp, " to ", path));
  }
  return SyncParentDirectory(path);
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  return WriteFileAtomically(
      path, [contents](const ByteSink& write) { write(contents.data(), contents.size()); });
}

}  // namespace compress
