// Durable file writes: a file that is replaced whole or not at all, also across a crash or a
// power loss. Used by the executor (work dir state, checkpoints, reports) and compressd's
// artifact store.
#ifndef COMPRESS_WORKER_EVENTS_DURABLE_FILE_H_
#define COMPRESS_WORKER_EVENTS_DURABLE_FILE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace compress {

// The status for a failed system call: NOT_FOUND for ENOENT and ENOTDIR, PERMISSION_DENIED for
// EACCES, EPERM and EROFS, RESOURCE_EXHAUSTED for ENOSPC, EDQUOT and EFBIG, INTERNAL otherwise. The
// message is "`what`: " followed by strerror(error).
absl::Status ErrnoStatus(int error, absl::string_view what);

// Flushes `path`, a file or a directory, to the disk (fsync). A directory is flushed to make the
// renames and new names in it durable.
absl::Status SyncPath(const std::string& path);

// Flushes the directory that holds `path` (the current directory for a bare name).
absl::Status SyncParentDirectory(const std::string& path);

// Replaces `path` with `contents`: writes them to a temporary file next to it (unique to this
// process and call), flushes it, renames it over `path` and flushes the directory. Readers see
// the old file or the new one, whole; after a crash the file is one or the other. On failure the
// temporary is removed and `path` is left as it was, unless only the final directory flush
// failed (the new file is in place, its name maybe not yet on the disk).
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// Receives the bytes of a file being written, in order.
using ByteSink = std::function<void(const void* data, size_t size)>;

// As above, with the contents streamed: `produce` hands every byte of the file to the sink it is
// given, in order. A write that fails makes the call fail (the sink drops the rest quietly, so
// that the producer runs to its end), the temporary removed.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::function<void(const ByteSink&)>& produce);

// The name of WriteFileAtomically's temporary for `path`: PATH.tmp.PID.N (N counts the calls of
// this process).
std::string AtomicWriteTemporary(const std::string& path, int pid, uint64_t n);

// Whether `file_name` (a name without its directory) is such a temporary: NAME.tmp.PID.N. One
// left behind was being written when its process died.
bool IsAtomicWriteTemporary(absl::string_view file_name);

}  // namespace compress

#endif  // COMPRESS_WORKER_EVENTS_DURABLE_FILE_H_
