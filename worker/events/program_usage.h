// --help and --version of the project's programs (compressd, compress-worker, compress-run,
// compressctl).
#ifndef COMPRESS_WORKER_EVENTS_PROGRAM_USAGE_H_
#define COMPRESS_WORKER_EVENTS_PROGRAM_USAGE_H_

#include <string>

namespace compress {

// Sets the usage line that --help prints, and makes --help (and --helpshort) list the flags the
// program defines in its main.cc: Abseil lists by default only the flags of a file named after
// the program, and none of ours is. --version prints "PROGRAM VERSION" (the project's version).
// Call once, before absl::ParseCommandLine. `program` must outlive the program (a literal).
void SetProgramUsage(const char* program, const std::string& usage);

// The project's version, e.g. "0.1.0".
const char* ProjectVersion();

}  // namespace compress

#endif  // COMPRESS_WORKER_EVENTS_PROGRAM_USAGE_H_
