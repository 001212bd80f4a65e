// fault_exec: runs a program under the conditions a fault test needs, set up between fork and
// exec where the tests' own process (which starts children with posix_spawn) cannot.
//
//   fault_exec [--ignore_sigxfsz] [--file_size_limit=BYTES] [--user=UID:GID] -- PROGRAM [ARGS...]
//
// --ignore_sigxfsz  SIGXFSZ is ignored (and stays ignored across exec), so that a write past
//                   RLIMIT_FSIZE fails with EFBIG, as a full disk fails with ENOSPC, instead of
//                   killing the process. The tests then lower the limit with prlimit(2).
// --file_size_limit=BYTES  sets the soft RLIMIT_FSIZE (the hard limit stays), so that the
//                   program is out of room from its start (0: every write that grows a file
//                   fails); the tests raise it again with prlimit(2).
// --user=UID:GID    drops to this user and group (no supplementary groups) before exec, so that
//                   file permissions apply even when the tests run as root.
#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

int main(int argc, char** argv) {
  int i = 1;
  for (; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "--ignore_sigxfsz") {
      signal(SIGXFSZ, SIG_IGN);
    } else if (absl::ConsumePrefix(&arg, "--file_size_limit=")) {
      uint64_t bytes = 0;
      struct rlimit limit;
      if (!absl::SimpleAtoi(arg, &bytes)) {
        std::fprintf(stderr, "fault_exec: --file_size_limit: expected BYTES, got '%s'\n",
                     argv[i] + 18);
        return 2;
      }
      if (getrlimit(RLIMIT_FSIZE, &limit) != 0) {
        std::fprintf(stderr, "fault_exec: getrlimit: %s\n", std::strerror(errno));
        return 2;
      }
      limit.rlim_cur = static_cast<rlim_t>(bytes);
      if (setrlimit(RLIMIT_FSIZE, &limit) != 0) {
        std::fprintf(stderr, "fault_exec: --file_size_limit=%s: %s\n", argv[i] + 18,
                     std::strerror(errno));
        return 2;
      }
    } else if (absl::ConsumePrefix(&arg, "--user=")) {
      std::vector<absl::string_view> ids = absl::StrSplit(arg, ':');
      unsigned uid = 0;
      unsigned gid = 0;
      if (ids.size() != 2 || !absl::SimpleAtoi(ids[0], &uid) || !absl::SimpleAtoi(ids[1], &gid)) {
        std::fprintf(stderr, "fault_exec: --user: expected UID:GID, got '%s'\n", argv[i] + 7);
        return 2;
      }
      if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        std::fprintf(stderr, "fault_exec: --user=%u:%u: %s\n", uid, gid, std::strerror(errno));
        return 2;
      }
    } else {
      std::fprintf(stderr, "fault_exec: unknown flag '%s'\n", argv[i]);
      return 2;
    }
  }
  if (i >= argc) {
    std::fprintf(
        stderr,
        "usage: fault_exec [--ignore_sigxfsz] [--file_size_limit=BYTES] [--user=UID:GID] -- "
        "PROGRAM ...\n");
    return 2;
  }
  execv(argv[i], argv + i);
  std::fprintf(stderr, "fault_exec: cannot run %s: %s\n", argv[i], std::strerror(errno));
  return 127;
}
