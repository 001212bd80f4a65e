// The agent's operator log: one timestamped line per message on stderr.
#ifndef COMPRESS_WORKER_AGENT_LOG_H_
#define COMPRESS_WORKER_AGENT_LOG_H_

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace compress::worker {

template <typename... Args>
void AgentLog(const Args&... args) {
  std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
                   " compress-worker: ", args..., "\n");
  std::fputs(line.c_str(), stderr);
}

}  // namespace compress::worker

#endif  // COMPRESS_WORKER_AGENT_LOG_H_
