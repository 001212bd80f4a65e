// --help and --version of the project's programs (compressd, compress-worker, compress-run,
// compressctl).
#ifndef COMPRESS_WORKER_EVENTS_PROGRAM_USAGE_H_
#define COMPRESS_WORKER_EVENTS_PROGRAM_USAGE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace compress {

// Sets the usage line that --help prints, and makes --help (and --helpshort) list the flags the
// program defines in its main.cc: Abseil lists by default only the flags of a file named after
// the program, and none of ours is. --version prints "PROGRAM VERSION" (the project's version).
// Call once, before absl::ParseCommandLine. `program` must outlive the program (a literal).
void SetProgramUsage(const char* program, const std::string& usage);

// Parses the command line as absl::ParseCommandLine does (an unknown or malformed flag ends the
// program with status 1 and Abseil's message) and returns the positional arguments, argv[0]
// first. The usage flags are answered here on stdout, ending the program with status 0 (Abseil
// ends it with 1 after help): --help and --helpshort list the program's own flags (its
// main.cc), --helpfull every flag, --helppackage those of main.cc's folder, --helpon=FILE those
// of files named FILE, --helpmatch=S those of files whose path contains S; --version prints
// "PROGRAM VERSION". Call after SetProgramUsage.
std::vector<char*> ParseProgramFlags(int argc, char** argv);

// Checks the flags written on the command line as Abseil's parser will, so that a program can
// report them its own way before ParseProgramFlags (which ends the program with status 1 and
// Abseil's message): INVALID_ARGUMENT "--NAME: unknown flag of PROGRAM (see --help)" for a flag
// the program does not define, "--NAME: missing value" and "--NAME: bad value 'V'" (with the
// type's reason when it gives one) for a value the flag cannot hold. A line with a usage flag
// passes (it is answered); --flagfile, --fromenv, --tryfromenv and --undefok are left to Abseil,
// and so are unknown flags when one of them is given. A valid value is stored in its flag as
// ParseProgramFlags would; call ParseProgramFlags next.
absl::Status CheckCommandLineFlags(int argc, char** argv);

// OK when ParseProgramFlags' `positional` holds only argv[0]; otherwise INVALID_ARGUMENT
// "unexpected argument 'X': PROGRAM takes flags only (--flag=VALUE); see --help" (no program of
// the project takes arguments).
absl::Status CheckNoArguments(const std::vector<char*>& positional);

// Whether the flag `name` was on the command line ParseProgramFlags parsed: as --name, -name,
// --name=V, --name V or, for a bool, --noname. A flag read from --flagfile or the environment
// counts as not given.
bool FlagGiven(absl::string_view name);

// The project's version, e.g. "0.1.0".
const char* ProjectVersion();

}  // namespace compress

#endif  // COMPRESS_WORKER_EVENTS_PROGRAM_USAGE_H_
